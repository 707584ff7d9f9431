#!/usr/bin/env bash
# The gpu-libs test tier: the real torch / qwen-tts / whisperx code paths on tiny
# offline models, in a virtualenv cached outside the checkout (scripts/gpu_venv.py).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(python3 scripts/gpu_venv.py)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -m gpu tests/gpu "$@"
