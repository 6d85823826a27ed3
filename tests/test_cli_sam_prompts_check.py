"""`--refine sam-prompts` uses the SAM that --method trident loads: with any other method the command line
refuses it in one line (exit 2) before the model is built or any image is read, naming the fix."""
from __future__ import annotations

import pytest

from conftest import HAS_OPEN_CLIP

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="the tiny CLIP model of these tests needs open_clip")


@pytest.mark.parametrize("method", ["gem", "naclip"])
def test_segment_refuses_sam_prompts_without_trident(method, tmp_path, capsys, tiny_model_files):
    from cli_util import model_args, run_cli, write_image

    images = [write_image(tmp_path / f"{i}.png", (40, 32), seed=i) for i in range(2)]
    r = run_cli(capsys, "segment", *images, "-c", "cat,dog", "--method", method, "--refine", "sam-prompts",
                "-o", tmp_path / "out", "--size", "32", *model_args(tiny_model_files))
    assert r.code == 2, r.err
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--method trident" in lines[0] and f"--method {method}" in lines[0], r.err
    assert "refine=" not in lines[0] and "Traceback" not in r.err  # command-line terms, not Python's
    assert not list((tmp_path / "out").rglob("*.png"))  # refused before any image


def test_eval_refuses_it_too_and_trident_is_let_through():
    from gemseg.cli import build_parser
    from gemseg.cli.common import model_kwargs

    parser = build_parser()
    args = parser.parse_args(["eval", "--dataset", "voc21", "--method", "sclip", "--refine", "sam-prompts",
                              "--random-weights", "--device", "cpu"])
    with pytest.raises(ValueError, match="add --method trident"):
        model_kwargs(args)
    args = parser.parse_args(["segment", "x.png", "-c", "cat", "--method", "trident", "--refine", "sam-prompts",
                              "--random-weights", "--device", "cpu"])
    assert model_kwargs(args)["method"] == "trident"
