#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), then run the main job: segment the example photo into outputs/demo/
# with GEM on ViT-B/16 (OpenAI weights). Where those weights are neither cached nor downloadable, the
# job runs with random weights instead and every output says so. When the Hugging Face hub cannot be
# reached (a 3-second connect probe), one line says so and only cached weights are tried: no minute
# of download retries. GEMSEG_PYTHON=/path/to/python skips the set-up and runs with that interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GEMSEG_PYTHON:-}
if [ -z "$PY" ]; then
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
offline=0
if [ "${HF_HUB_OFFLINE:-0}" = 1 ] || ! "$PY" src/gemseg/hub.py; then  # the probe prints its line
  export HF_HUB_OFFLINE=1
  offline=1
fi
err=$(mktemp)
trap 'rm -f "$err"' EXIT
job=("$PY" -m gemseg.cli segment examples/chelsea.png -c "cat,eye,nose" --grid --overwrite -o outputs/demo)
if [ "$offline" = 1 ]; then  # the weights error is expected: keep it for the case that it is another one
  "${job[@]}" --model ViT-B/16 --pretrained openai 2>"$err" || status=$?
else
  "${job[@]}" --model ViT-B/16 --pretrained openai 2> >(tee "$err" >&2) || status=$?
fi
if [ "${status:-0}" != 0 ]; then
  if grep -q "cannot load weights" "$err"; then
    echo "demo: ViT-B/16 openai weights are not available here; running with RANDOM WEIGHTS instead" >&2
    "${job[@]}" --model ViT-B/16 --random-weights
  else
    [ "$offline" = 1 ] && cat "$err" >&2
    exit 1
  fi
fi
echo "demo: results in outputs/demo/ (grid: outputs/demo/chelsea.png/grid.png)"
echo "demo: for the same in a browser, run: $PY -m gemseg.cli serve   (then open http://127.0.0.1:7860/)"
