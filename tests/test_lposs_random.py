"""--random-weights reaches the lposs refiners' own DINO wherever the command line runs them: --refine,
the lposs presets' protocol (``gemseg eval --preset lposs``) and an ablation's ``--grid refine=...``; and
the refiner's missing-weights line names what the command line can do about it."""
from __future__ import annotations

import json

import pytest

from conftest import HAS_OPEN_CLIP, tiny_vfm
from gemseg.errors import WeightsUnavailableError
from gemseg.lposs import LPOSSConfig, LPOSSRefiner
from gemseg.refiners import get_refiner, register_refiner

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="the tiny CLIP model of these tests needs open_clip")
SMALL = LPOSSConfig(crop=32, stride=16, k=20)  # windows and a graph the tiny inputs can hold


@pytest.fixture
def asked(monkeypatch):
    """lposs/lposs+ registered without a DINO of their own (as shipped, small windows), and the DINO they build
    replaced: a tiny one for weights="random", the offline error otherwise. Yields the weights asked for."""
    import gemseg.backbones.vfm as vfm_module

    seen: list = []
    dino = tiny_vfm("dino", seed=7)  # built before create_vfm is replaced (tiny_vfm calls it)

    def create_vfm(name, *, weights="pretrained", device=None, **kw):
        seen.append((name, weights))
        if weights != "random":  # what an offline machine without timm's weights answers
            raise WeightsUnavailableError(f"cannot load weights for VFM {name}: not in the local cache")
        return dino

    monkeypatch.setattr(vfm_module, "create_vfm", create_vfm)
    saved = {name: get_refiner(name) for name in ("lposs", "lposs+")}
    for name, pixel in (("lposs", False), ("lposs+", True)):
        register_refiner(name, LPOSSRefiner(pixel=pixel, config=SMALL), overwrite=True)
    yield seen
    for name, fn in saved.items():
        register_refiner(name, fn, overwrite=True)


def _common(tmp_path, tiny_model_files):
    import eval_data

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=1)
    cfg, _ = tiny_model_files["open_clip"]
    return ["--dataset", "voc21", "--data-root", voc, "--model", cfg, "--random-weights", "--device", "cpu",
            "--workers", "0", "--no-progress", "--size", "48", "--crop", "32", "--stride", "16",
            "--templates", "single", "--depth", "3"]


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
@pytest.mark.filterwarnings("ignore:method .* ignores the GEM setting")
@pytest.mark.parametrize("preset", ["lposs", "lposs+"])
def test_eval_preset_lposs_gives_its_refiner_random_weights(preset, tmp_path, capsys, tiny_model_files, asked):
    from cli_util import run_cli

    r = run_cli(capsys, "eval", "--preset", preset, *_common(tmp_path, tiny_model_files), "--out", tmp_path / "e")
    assert r.code == 0, r.err
    assert asked == [("dino-b16", "random")]
    result = json.loads((tmp_path / "e" / "result.json").read_text())
    assert result["protocol"]["refine"] == [[preset, {"weights": "random"}]]  # the run records it


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_ablate_grid_refine_lposs_gives_it_random_weights(tmp_path, capsys, tiny_model_files, asked):
    from cli_util import run_cli

    r = run_cli(capsys, "ablate", *_common(tmp_path, tiny_model_files), "--method", "naclip",
                "--grid", "refine=none,lposs", "--no-plots", "--out", tmp_path / "abl")
    assert r.code == 0, r.err
    assert asked == [("dino-b16", "random")]
    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [row["refine"] for row in table["rows"]] == [None, "lposs"]


def test_refine_arg_and_the_presets_share_one_rule():
    import argparse

    from gemseg.cli.common import random_refiners, refine_arg

    args = argparse.Namespace(refine=["pamr", "lposs"], random_weights=True)
    assert refine_arg(args) == ["pamr", ("lposs", {"weights": "random"})]
    assert refine_arg(argparse.Namespace(refine=["lposs"], random_weights=False)) == ["lposs"]
    assert random_refiners(("lposs+", {"k": 5})) == [("lposs+", {"k": 5, "weights": "random"})]


def test_the_missing_weights_line_names_what_the_command_line_can_do(asked):
    import torch

    from conftest import tiny_open_clip_backbone
    from gemseg import GEMConfig, GEMModel

    model = GEMModel(tiny_open_clip_backbone(), config=GEMConfig(depth=3))
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(WeightsUnavailableError) as e:
        get_refiner("lposs")(torch.rand(1, 2, 32, 32), image=x, model=model)
    line = str(e.value)
    assert "\n" not in line and "--random-weights" in line and "HF_HOME" in line
    assert "--proxy-weights" not in line and "--cache-dir" not in line  # neither reaches the refiner
