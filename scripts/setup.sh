#!/usr/bin/env bash
# Create .venv with gemseg and both backends (open_clip + Hugging Face transformers) and the test tools.
# Idempotent: re-running only installs what is missing. Usage: bash scripts/setup.sh [extra pip args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e ".[openclip,hf,siglip,test]" "$@"
