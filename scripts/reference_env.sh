#!/usr/bin/env bash
# Build .venv-ref: the GEM reference implementation (gem-torch 1.0.1, which only runs on
# open_clip_torch 2.23.0 with its sequence-first blocks) next to an editable gemseg, for
# benchmarks/parity.py and benchmarks/speed.py.
#
#   bash scripts/reference_env.sh            # creates or updates ./.venv-ref
#   REF_VENV=/path/to/env bash scripts/reference_env.sh
#
# Safe to run again: pinned packages that are already there are left alone. Any failure stops the
# script with a non-zero exit status.
#
# Choices:
# - pip runs with --isolated so that no pip configuration (for example a find-links folder holding a
#   CPU-only torch wheel) changes what gets installed: torchvision from the registry only imports
#   beside the registry's own torch build, so torch and torchvision are installed as a pinned pair.
# - The default pair is the one in the main development environment, so the speed comparison runs
#   both implementations on the same torch.
# - gem-torch is installed with --no-deps: it declares opencv-python, whose GUI build needs system
#   libraries (libGL) that headless machines lack. Its real imports are installed instead:
#   open_clip_torch, einops, matplotlib and opencv-python-headless (the same cv2 module).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REF_VENV:-$ROOT/.venv-ref}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.2}"
GEM_TORCH_VERSION="1.0.1"
OPEN_CLIP_VERSION="2.23.0"

die() { echo "reference_env.sh: error: $*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' (set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is older than 3.10, which gemseg needs"

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
else
    echo "==> reusing $VENV"
fi

PIP=("$VENV/bin/python" -m pip --isolated --disable-pip-version-check)
CERT="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$CERT" ]; then
    PIP+=(--cert "$CERT")
fi

echo "==> torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
"${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

echo "==> open_clip_torch $OPEN_CLIP_VERSION and the modules gem-torch imports"
"${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    "open_clip_torch==$OPEN_CLIP_VERSION" einops matplotlib opencv-python-headless numpy

echo "==> gem-torch $GEM_TORCH_VERSION (without its declared opencv-python)"
"${PIP[@]}" install --no-deps "gem-torch==$GEM_TORCH_VERSION"

echo "==> gemseg (editable) from $ROOT"
"${PIP[@]}" install "torch==$TORCH_VERSION" -e "$ROOT"

echo "==> checking the environment"
MPLBACKEND=Agg "$VENV/bin/python" -W ignore::FutureWarning - "$OPEN_CLIP_VERSION" <<'EOF'
import sys
from importlib.metadata import version

import torch
import torchvision  # noqa: F401  (fails here if the torch/torchvision pair does not match)
import open_clip
import gem
import gemseg

want = sys.argv[1]
got = version("open_clip_torch")
if got != want:
    sys.exit(f"open_clip_torch is {got}, expected {want}")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"open_clip {got}, gem-torch {version('gem-torch')}, gemseg {version('gemseg')} ({gemseg.__file__})")
EOF
echo "==> $VENV is ready"
