#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the whole test suite (the web demo in headless Chromium
# included; screenshots in outputs/test-artifacts/), then the open_clip tests again under
# open_clip 2.23 (sequence-first transformer blocks, the layout gem-torch was written for).
# Two thread counts: the main pass uses torch's default (every core), the open_clip 2.23 pass one thread
# (OMP_NUM_THREADS=1), so results that depend on the thread count fail here, not on another machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lint-imports  # the import contracts of pyproject.toml: imports go down the layers, never in a loop
# a missing backend, gradio, playwright or chromium fails the tests instead of skipping them
export GEMSEG_REQUIRE_BACKENDS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
echo "== tests (open_clip $(.venv/bin/python -c 'import open_clip; print(open_clip.__version__)'), transformers $(.venv/bin/python -c 'import transformers; print(transformers.__version__)'))"
.venv/bin/python -m pytest -q "$@"
OC223=.ci-cache/open_clip_2.23
if [ ! -f "$OC223/open_clip/__init__.py" ]; then
  .venv/bin/python -m pip install --quiet --no-deps --target "$OC223" open_clip_torch==2.23.0
fi
echo "== open_clip tests again under open_clip 2.23.0 (sequence-first blocks), one thread"
OMP_NUM_THREADS=1 PYTHONPATH="$OC223" .venv/bin/python -m pytest -q -m openclip -p no:cacheprovider "$@"
