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


@pytest.mark.parametrize("name", ["lposs", "lposs+"])
def test_random_weights_reach_the_lposs_refiners_dino(tmp_path, capsys, tiny_model_files, name):
    """`gemseg segment photo.jpg -c "cat,sofa" --method naclip --refine lposs+ --random-weights` offline failed
    on the image ("cannot load weights for VFM dino-b16"): the refiner's own DINO ignored --random-weights."""
    from cli_util import open_clip_config

    image = write_image(tmp_path / "photo.png", (40, 30))
    r = run_cli(capsys, "segment", image, "-c", "cat,sofa", "--method", "naclip", "--refine", name, "-q",
                "-o", tmp_path / "out", "--model", open_clip_config(tiny_model_files), "--random-weights",
                "--size", "32", "--device", "cpu")
    assert r.code == 0, r.err
    with open(tmp_path / "out" / "run.json", encoding="utf-8") as f:
        assert json.load(f)["settings"]["refine"] == [name]
    assert os.path.isfile(tmp_path / "out" / "photo.png" / "labels.png")


def test_random_weights_reach_the_lposs_refiner_in_eval(tmp_path, capsys, tiny_model_files):
    """`gemseg eval ... --refine lposs --random-weights`: the same refiner DINO, random too."""
    import eval_data
    from cli_util import open_clip_config

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    r = run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", voc, "--model", open_clip_config(tiny_model_files),
                "--random-weights", "--device", "cpu", "--workers", "0", "--no-progress", "--size", "32",
                "--templates", "single", "--method", "naclip", "--refine", "lposs", "--out", tmp_path / "out")
    assert r.code == 0, r.err
    with open(tmp_path / "out" / "result.json", encoding="utf-8") as f:
        assert json.load(f)["refine"] == ["lposs"]
