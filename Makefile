# Two commands for a fresh clone: `make serve` and `make test`.
# Each creates (once) and reuses a local virtualenv in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: serve test test-fast test-gpu bench clean

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

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q

test-gpu:
	scripts/test_gpu_tier.sh

bench: $(VENV)/.installed
	$(PY) tests/bench/bench_tts.py
	$(PY) tests/bench/bench_align.py

clean:
	rm -rf $(VENV) .pytest_cache
