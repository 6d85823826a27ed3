#!/usr/bin/env bash
# Create .venv with gemseg, both backends (open_clip + Hugging Face transformers), timm (ProxyCLIP's
# proxy vision models), the web demo (Gradio), the official SAM / SAM 2 packages (the mask tests' reference)
# and the test tools; as root, also Debian's chromium for the browser tests and fonts-dejavu-core
# (DejaVu Sans, the font of the text in pictures) when they are missing.
# Idempotent: re-running only installs what is missing. Usage: bash scripts/setup.sh [extra pip args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e ".[openclip,hf,siglip,vfm,test,demo,export]" "$@"
# the official SAM / SAM 2 packages (extra "official-sam", for the mask tests): sam2 is an sdist whose build asks
# for torch, so it is built against the torch installed above (no isolated build downloading torch again) and
# without its CUDA extension (SAM2_BUILD_CUDA=0, sam2's setup.py; the extension only speeds up hole filling)
SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install --quiet --no-build-isolation -c scripts/constraints.txt \
  -e ".[official-sam]" "$@"
# the browser tests drive Debian's chromium (Playwright's own browser download is not used)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log=$(mktemp)
    echo "setup: installing Debian's chromium for the browser tests (log: $log)"
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
      rm -f "$log"
    else
      echo "setup: could not install chromium (see $log); the browser tests need it: apt-get install chromium" >&2
    fi
  else
    echo "setup: no chromium found; the browser tests need it (as root: apt-get install chromium)" >&2
  fi
fi
# text in pictures: DejaVu Sans draws Latin-1 and beyond (PIL's built-in font draws "Café" as "Caf▯")
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's fonts-dejavu-core for the text in pictures"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core; } >/dev/null 2>&1 \
      || echo "setup: could not install fonts-dejavu-core; pictures fall back to PIL's font (apt-get install fonts-dejavu-core)" >&2
  else
    echo "setup: DejaVu Sans not found; pictures use PIL's built-in font (as root: apt-get install fonts-dejavu-core)" >&2
  fi
fi
