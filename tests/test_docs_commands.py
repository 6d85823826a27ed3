"""Commands the README and docs/ show for the 2025 methods and refiners, run on tiny models: what a new user
meets when an option a method needs is missing, and --random-weights reaching every model a command loads."""
from __future__ import annotations

import json
import os

import pytest

from cli_util import model_args, run_cli, write_image
from conftest import HAS_OPEN_CLIP

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")


@pytest.mark.parametrize("extra, flag", [(["--method", "corrclip", "--proxy-weights", "random"], "--method corrclip"),
                                         (["--method", "naclip", "--refine", "masks"], "--refine masks")])
def test_masks_missing_is_one_line_before_any_image(tmp_path, capsys, tiny_model_files, extra, flag):
    """`gemseg segment photo.jpg -c "cat,sofa" --method corrclip` without --masks failed once per image after
    the model was built ("photo.jpg: masks are needed ... create_model(..., masks=...)"), exit 1."""
    image = write_image(tmp_path / "photo.png")
    r = run_cli(capsys, "segment", image, "-c", "cat,sofa", "-o", tmp_path / "out", *extra,
                *model_args(tiny_model_files))
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gemseg: error: {flag} needs class-agnostic masks"), r.err
    assert "--masks SOURCE" in lines[0] and "create_model" not in lines[0]
    assert not os.path.exists(tmp_path / "out" / "photo.png")  # no image was tried
