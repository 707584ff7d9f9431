# Two commands for a fresh clone: `make serve` and `make test`.
# Each creates (once) and reuses a local virtualenv in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The playground's browser test drives Debian's Chromium (never a downloaded one).
CHROMIUM ?= /usr/bin/chromium
# The front door's tests run Debian's nginx in front of real gunicorns.
NGINX ?= /usr/sbin/nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test lint test-fast test-gpu bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/gpu-audio serve

# Everything: the default tier (unit + integration with real gunicorn), then the
# gpu-libs tier (real qwen-tts/whisperx code on tiny offline models, own venv).
test: test-fast test-gpu

# ruff (lint and format) and mypy, configured in pyproject.toml, on the product code.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-fast: lint $(VENV)/.installed $(CHROMIUM) $(NGINX)
	CHROMIUM_PATH=$(CHROMIUM) $(PY) -m pytest -q

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the browser test needs Chromium: install it and set CHROMIUM=/path/to/chromium"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(NGINX):
	@command -v apt-get >/dev/null || { echo "the front door's tests need nginx: install it and set NGINX=/path/to/nginx"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx

test-gpu:
	scripts/test_gpu_tier.sh

bench: $(VENV)/.installed
	$(PY) tests/bench/bench_tts.py
	$(PY) tests/bench/bench_align.py
	$(PY) tests/bench/bench_pieces.py
	$(PY) tests/bench/bench_lane.py
	$(PY) tests/bench/bench_proxy.py
	$(PY) tests/bench/bench_metrics.py
	$(PY) tests/bench/bench_front.py

clean:
	rm -rf $(VENV) .pytest_cache
