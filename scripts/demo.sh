#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), then run the main job: segment the example photo into outputs/demo/
# with GEM on ViT-B/16 (OpenAI weights). Where those weights are neither cached nor downloadable, the
# job runs with random weights instead and every output says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
err=$(mktemp)
trap 'rm -f "$err"' EXIT
job=(.venv/bin/gemseg segment examples/chelsea.png -c "cat,eye,nose" --grid --overwrite -o outputs/demo)
if ! "${job[@]}" --model ViT-B/16 --pretrained openai 2> >(tee "$err" >&2); then
  if grep -q "cannot load weights" "$err"; then
    echo "demo: ViT-B/16 openai weights are not available here; running with RANDOM WEIGHTS instead" >&2
    "${job[@]}" --model ViT-B/16 --random-weights
  else
    exit 1
  fi
fi
echo "demo: results in outputs/demo/ (grid: outputs/demo/chelsea.png/grid.png)"
echo "demo: for the same in a browser, run: .venv/bin/gemseg serve   (then open http://127.0.0.1:7860/)"
