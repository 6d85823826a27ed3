"""The presets of SC-CLIP, SFP and ResCLIP (on its three bases): every value cites its line, the records
resolve on every dataset they name, ResCLIP's per-dataset method settings build its settings and reach
the model in ``gemseg eval`` (``--method-setting`` overriding them), and ``--show-preset`` prints them."""
from __future__ import annotations

import json
import re

import pytest

import eval_data
from cli_util import run_cli
from conftest import HAS_OPEN_CLIP
from gemseg.eval import load_dataset_spec, resolve_protocol
from gemseg.eval.presets_2025 import PRESETS_2025
from gemseg.eval.protocols import PRESETS, get_preset
from gemseg.methods import get_method

COMMIT = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{12}:\S+:\d+")
IMAGE = re.compile(r"^yvhangyang/ResCLIP@0e085f7f52f0:figs/main_results_wo?\.png \(README\.md:3[04]; ")


def test_every_value_cites_its_line_and_every_record_resolves():
    for record in PRESETS_2025:
        assert PRESETS[record.name] is record
        cited = [*record.settings.values(), *record.method_settings.values(),
                 *(c for d in record.per_dataset.values() for c in d.values()),
                 *(c for d in record.per_dataset_method.values() for c in d.values())]
        assert all(COMMIT.match(c.source) for c in cited), record.name
        kind = getattr(get_method(record.method), "settings_type", None)
        for dataset in record.datasets:
            spec = load_dataset_spec(dataset)
            protocol, _ = resolve_protocol(record.name, spec)
            protocol.check_dataset(spec)  # SFP's class files have one line per class
            if record.method_settings or record.per_dataset_method:
                kind(**record.method_values(dataset))


def test_values_read_in_the_official_configs():
    res = get_preset("resclip")
    assert res.method == "naclip+resclip" and get_preset("resclip-sclip").method == "sclip+resclip"
    assert res.method_values("voc21") == {"gaussian_std": 5.0, "use_rcs": True, "use_sfr": True, "temp_thd": 0.5,
                                          "rcs_weights": (2.0, 0.3), "sfr_weights": (2.2, 0.7),
                                          "delete_same_entity": True}
    assert res.method_values("cityscapes")["sfr_weights"] == (2.1, 0.6)
    voc = resolve_protocol("resclip", load_dataset_spec("voc21"))[0]
    assert (voc.mode, voc.prob_threshold, voc.size, voc.crop, voc.logit_scale) == ("whole", 0.1, 336, 224, 40.0)
    assert resolve_protocol("sfp", load_dataset_spec("ade20k"))[0].size == 384
    obj = resolve_protocol("sc-clip", load_dataset_spec("coco_object"))[0]
    assert (obj.logit_scale, obj.prob_threshold, obj.mode, obj.pos_embed) == (55.0, 0.35, "slide", "bicubic-scale")
    # ResCLIP's own tables, first-hand, one number per dataset of each base
    for name, voc21 in (("resclip", 61.1), ("resclip-sclip", 60.7), ("resclip-clearclip", 59.0)):
        record = get_preset(name)
        assert record.published_for("voc21").miou == voc21
        assert {n.dataset for n in record.published} == set(record.datasets)
        assert all(IMAGE.match(n.source) and not n.second_hand for n in record.published)
    assert get_preset("sfp").published_for("voc21").miou == 61.4


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_eval_gives_the_model_the_presets_method_settings(tmp_path, capsys, tiny_model_files):
    voc = eval_data.write_voc(tmp_path / "VOC2012", n=1)
    cfg, ckpt = tiny_model_files["open_clip"]
    base = ["eval", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt, "--device",
            "cpu", "--workers", "0", "--no-progress", "--size", "64", "--preset", "resclip", "--method",
            "naclip+resclip", "--method-setting", "rcs_layers=1,2"]
    r = run_cli(capsys, *base, "--out", tmp_path / "a")
    assert r.code == 0, r.err
    settings = json.loads((tmp_path / "a" / "result.json").read_text())["model"]["method_settings"]
    assert settings["temp_thd"] == 0.5 and settings["sfr_weights"] == [2.2, 0.7] and settings["rcs_layers"] == [1, 2]
    r = run_cli(capsys, *base, "--method-setting", "temp_thd=0.2", "--out", tmp_path / "b")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "b" / "result.json").read_text())["model"]["method_settings"]["temp_thd"] == 0.2
    r = run_cli(capsys, "eval", "--show-preset", "resclip")
    assert r.code == 0 and "method settings (with --method naclip+resclip" in r.out
    assert "voc21           temp_thd=0.5 (yvhangyang/ResCLIP@0e085f7f52f0:configs/cfg_voc21.py:8)" in r.out
