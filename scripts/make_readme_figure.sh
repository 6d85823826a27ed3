#!/usr/bin/env bash
# Regenerate docs/figure.png, the README picture, with the gemseg command line.
#
#   scripts/make_readme_figure.sh            real weights (ViT-B/16, openai): from the local cache, or
#                                            downloaded once when online
#   scripts/make_readme_figure.sh --random   no weights needed: an untrained model. The picture carries
#                                            a red "RANDOM WEIGHTS" banner; say so in its caption.
#
# Environment: MODEL, PRETRAINED (open_clip name and tag), DEVICE (cpu, cuda), GEMSEG (the gemseg
# executable; default: gemseg on PATH, else .venv/bin/gemseg).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-ViT-B/16}
PRETRAINED=${PRETRAINED:-openai}
GEMSEG=${GEMSEG:-$(command -v gemseg || echo .venv/bin/gemseg)}
weights=(--model "$MODEL" --pretrained "$PRETRAINED")
if [[ "${1:-}" == "--random" ]]; then
  weights=(--model "$MODEL" --random-weights)
  echo "make_readme_figure: RANDOM WEIGHTS - the figure shows the layout, not what GEM finds" >&2
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--random]" >&2
  exit 2
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$GEMSEG" segment examples/chelsea.png -c "cat,eye,nose" --grid -q -o "$out" \
  "${weights[@]}" ${DEVICE:+--device "$DEVICE"}
cp "$out/chelsea.png/grid.png" docs/figure.png
echo "wrote docs/figure.png ($("$GEMSEG" --version), ${weights[*]})" >&2
