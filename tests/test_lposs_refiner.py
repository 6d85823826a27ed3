"""The lposs / lposs+ refiners through the predictor, after any method: ``Segmenter(refine=...)``,
``model.segment(refine=...)``, ``gemseg segment/eval --refine lposs`` and ``gemseg eval --compare``."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import HAS_OPEN_CLIP, tiny_open_clip_backbone, tiny_vfm
from gemseg import GEMModel
from gemseg.lposs import LPOSSConfig, LPOSSRefiner
from gemseg.refiners import get_refiner, list_refiners, register_refiner

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="the tiny CLIP model of these tests needs open_clip")
SMALL = LPOSSConfig(crop=32, stride=16, k=20)  # windows and a graph the tiny inputs can hold


@pytest.fixture
def tiny_lposs():
    """The registered lposs/lposs+ replaced by refiners on a tiny random DINO for the test, then restored."""
    saved = {name: get_refiner(name) for name in ("lposs", "lposs+")}
    vfm = tiny_vfm("dino", seed=7)
    for name, pixel in (("lposs", False), ("lposs+", True)):
        register_refiner(name, LPOSSRefiner(pixel=pixel, vfm=vfm, config=SMALL), overwrite=True)
    yield vfm
    for name, fn in saved.items():
        register_refiner(name, fn, overwrite=True)


def test_both_are_registered_with_the_official_settings():
    assert {"lposs", "lposs+"} <= set(list_refiners())
    plain, plus = get_refiner("lposs"), get_refiner("lposs+")
    assert not plain.config.pixel and plus.config.pixel
    assert plain.config == LPOSSConfig() and plain.vfm is None  # the DINO ViT-B/16 is built on first use


@pytest.mark.filterwarnings("ignore:method .* ignores the GEM setting")
@pytest.mark.parametrize("method", ["gem", "sclip", "naclip"])
def test_any_method_composes_with_lposs_in_the_predictor(method, tiny_lposs):
    from gemseg import Segmenter

    from gemseg import GEMConfig

    model = GEMModel(tiny_open_clip_backbone(), method=method, config=GEMConfig(depth=3))
    images = [torch.rand(40, 48, 3).mul(255).byte().numpy() for _ in range(2)]
    plain = Segmenter.from_classes(model, ["cat", "dog"], background="none", size=(40, 48))
    refined = Segmenter.from_classes(model, ["cat", "dog"], background="none", size=(40, 48), refine="lposs")
    x = plain.prepare(images)
    base = plain.scores(images)
    want = get_refiner("lposs")(base, image=x, model=model)
    got = refined.scores(images)
    assert got.shape == base.shape and torch.allclose(got, want, atol=1e-6)  # the same computation, in order
    assert not torch.allclose(got, base, atol=1e-3)
    seg = model.segment(images, ["cat", "dog"], background="none", size=(40, 48), refine=["lposs+"])
    assert seg.labels.shape == (2, 40, 48)


def test_cli_segment_takes_refine_lposs(tmp_path, capsys, tiny_model_files, tiny_lposs):
    from cli_util import model_args, run_cli, write_image

    image = write_image(tmp_path / "a.png", (48, 40))
    r = run_cli(capsys, "segment", image, "-c", "cat,dog", "--refine", "lposs", "-o", tmp_path / "out",
                "--size", "40", *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert "lposs" in (tmp_path / "out" / "run.json").read_text()


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_cli_eval_compare_shows_what_the_refiner_adds(tmp_path, capsys, tiny_model_files, tiny_lposs):
    import eval_data
    from cli_util import run_cli

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    cfg, ckpt = tiny_model_files["open_clip"]
    common = ["eval", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt, "--device",
              "cpu", "--workers", "0", "--no-progress", "--size", "48", "--crop", "32", "--stride", "16",
              "--templates", "single", "--method", "naclip"]
    for name, extra in (("plain", []), ("lposs", ["--refine", "lposs"]), ("plus", ["--refine", "lposs+"])):
        r = run_cli(capsys, *common, *extra, "--out", tmp_path / name)
        assert r.code == 0, r.err
    results = [json.loads((tmp_path / n / "result.json").read_text()) for n in ("plain", "lposs", "plus")]
    assert "refine" not in results[0] and results[1]["refine"] == ["lposs"] and results[2]["refine"] == ["lposs+"]
    r = run_cli(capsys, "eval", "--compare", *(tmp_path / n / "result.json" for n in ("plain", "lposs", "plus")))
    assert r.code == 0, r.err
    row = next(line for line in r.out.splitlines() if line.startswith("| refine |"))
    assert row.split("|")[2:5] == [" – ", " lposs ", " lposs+ "]


def test_ablation_grids_cross_methods_with_the_lposs_refiners():
    from gemseg import GEMConfig
    from gemseg.eval.ablation import parse_grid, plan_settings

    grid = parse_grid(["method=naclip,sclip", "refine=none,lposs,lposs+"])
    settings = plan_settings(GEMConfig(depth=3), grid=grid, num_blocks=4, method="naclip")
    assert len(settings) == 6 and len({s.slug for s in settings}) == 6
    assert {(s.method, s.refine) for s in settings} == {(m, r) for m in ("naclip", "sclip")
                                                        for r in (None, "lposs", "lposs+")}


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_cli_ablate_crosses_a_method_with_refiners(tmp_path, capsys, tiny_model_files, tiny_lposs):
    import eval_data
    from cli_util import run_cli

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    cfg, ckpt = tiny_model_files["open_clip"]
    args = ["ablate", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt, "--device",
            "cpu", "--workers", "0", "--no-progress", "--size", "48", "--crop", "32", "--stride", "16",
            "--templates", "single", "--method", "naclip", "--grid", "refine=none,lposs", "--no-plots",
            "--out", tmp_path / "abl"]
    r = run_cli(capsys, *args)
    assert r.code == 0, r.err
    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [row["refine"] for row in table["rows"]] == [None, "lposs"]
    runs = [json.loads((tmp_path / "abl" / row["results"]["voc21"]["run"] / "result.json").read_text())
            for row in table["rows"]]
    assert "refine" not in runs[0] and runs[1]["refine"] == ["lposs"]
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert any(line.startswith("| refine=lposs |") for line in md.splitlines())  # the setting names its refiner
    r = run_cli(capsys, *args)  # both finished: nothing is evaluated again
    assert r.code == 0 and r.err.count("finished earlier") == 2


def test_the_demo_segments_with_the_servers_refiners(model, tmp_path, tiny_lposs):
    from demo_helpers import png_bytes
    from gemseg.cli import build_parser
    from gemseg.cli.serve import make_settings
    from gemseg.demo import logic

    path = tmp_path / "up.png"
    path.write_bytes(png_bytes(40, 32, 0))
    kw = dict(background="none", threshold=0, size=(32, 32), limits=logic.Limits(max_side=64))
    inner, seen = get_refiner("lposs"), []

    def spy(scores, *, image, model):
        seen.append(tuple(scores.shape))
        return inner(scores, image=image, model=model)

    register_refiner("lposs", spy, overwrite=True)  # the fixture puts the real one back
    assert logic.run(model, str(path), "cat, dog", "segmentation", **kw).segmentation and not seen
    refined = logic.run(model, str(path), "cat, dog", "segmentation", refine=("lposs",), **kw)
    assert refined.segmentation is not None and seen == [(1, 2, 32, 40)]  # the scores at the picture's size
    args = build_parser().parse_args(["serve", "--random-weights", "--refine", "lposs+"])
    assert make_settings(args, model).refine == ("lposs+",)  # this one holds its DINO: nothing to make random


def test_serve_random_weights_reach_the_refiners_dino(model):
    """`gemseg serve --random-weights --refine lposs+` loaded the refiner's DINO ViT-B/16 pretrained (offline:
    an error at the first request); it is random, as in segment and eval."""
    from gemseg.cli import build_parser
    from gemseg.cli.serve import make_settings

    args = build_parser().parse_args(["serve", "--random-weights", "--refine", "lposs+"])
    assert make_settings(args, model).refine == (("lposs+", {"weights": "random"}),)
    args = build_parser().parse_args(["serve", "--refine", "lposs+"])
    assert make_settings(args, model).refine == ("lposs+",)


def test_the_lposs_presets_carry_the_refiner_and_the_official_protocol():
    from gemseg.eval import load_dataset_spec, resolve_protocol
    from gemseg.eval.protocols import PRESETS

    for name, refiner in (("lposs", "lposs"), ("lposs+", "lposs+")):
        p, source = resolve_protocol(name, load_dataset_spec("voc21"))
        assert (p.resize, p.size, p.mode, p.crop, p.stride, p.refine) == ("short_side", 448, "slide", 224, 112, (refiner,))
        assert "e489a7445528" in PRESETS[name].source_of("refine")
        assert p.segmenter_settings(load_dataset_spec("voc21"))["refine"] == [refiner]
        assert (PRESETS[name].method, PRESETS[name].pretrained) == ("maskclip", "laion2b_s34b_b88k")
    with pytest.raises(ValueError, match="unknown refiner"):
        resolve_protocol("lposs", refine=("crf",))
