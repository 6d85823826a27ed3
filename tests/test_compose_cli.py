"""SC-CLIP, SFP and ``<base>+resclip`` through the command line on a tiny model: ``heatmap``/``segment`` with
``--method-setting``, one-line errors, ``models``' method list, and ``ablate`` crossing methods, plug-ins
and post-processing, whose runs ``eval --compare`` sets side by side with what each adds."""
from __future__ import annotations

import json

import pytest

import eval_data
from cli_util import model_args, record, run_cli, write_image
from conftest import HAS_OPEN_CLIP

pytestmark = [pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed"),
              pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")]

# layer indices a 4-block model has (the defaults are ViT-B/16's)
TINY = {"sc-clip": ["pre_adjust=1", "post_adjust=0", "multi_start=0", "multi_end=2", "res_cls=0.3", "lof_neighbors=5"],
        "sfp": ["cross_start=0", "cross_end=3", "ref_layer=2", "aux_layer=0"],
        "naclip+resclip": ["rcs_layers=1,2", "use_sfr=on", "rcs_weights=2.0,0.3"],
        "sclip+resclip": ["rcs_layers=1,2"], "gem+resclip": ["rcs_layers=1,2"], "vv+resclip": ["rcs_layers=1,2"]}


def _settings(method):
    return [a for item in TINY[method] for a in ("--method-setting", item)]


@pytest.mark.parametrize("method", sorted(TINY))
def test_each_method_segments_and_draws_heatmaps(tmp_path, capsys, tiny_model_files, method):
    image = write_image(tmp_path / "a.png", (40, 30), seed=1)
    r = run_cli(capsys, "segment", image, "-c", "cat,dog", "-o", tmp_path / "seg", "--method", method,
                *_settings(method), *model_args(tiny_model_files))
    assert r.code == 0, r.err
    rec = record(tmp_path / "seg", "a.png")
    assert sum(c["pixels"] for c in rec["classes"]) == 40 * 30
    r = run_cli(capsys, "heatmap", image, "-p", "cat", "-o", tmp_path / "heat", "--method", method,
                *_settings(method), *model_args(tiny_model_files))
    assert r.code == 0, r.err


def test_bad_method_settings_are_one_line_errors(tmp_path, capsys, tiny_model_files):
    image = write_image(tmp_path / "a.png", (40, 30), seed=1)
    for extra, words in ((["--method", "sfp", "--method-setting", "outlier=lof"], "NAME one of"),
                         (["--method", "naclip", "--method-setting", "beta=1"], "no settings of its own"),
                         (["--method", "sfp", "--method-setting", "res_cls=high"], "res_cls=high"),
                         (["--method", "sfp"], "out of range for 4 blocks"),
                         (["--method", "sfp+resclip"], "invalid choice")):
        r = run_cli(capsys, "segment", image, "-c", "cat", "-o", tmp_path / "o", *extra, *model_args(tiny_model_files))
        assert r.code == 2 and words in r.err, (extra, r.err)


def test_models_lists_the_methods_and_compositions(capsys):
    r = run_cli(capsys, "segment", "--help")
    assert r.code == 0
    for name in ("sc-clip", "sfp", "naclip+resclip", "sclip+resclip", "clearclip+resclip", "gem+resclip", "vv+resclip",
                 "--method-setting"):
        assert name in r.out
    r = run_cli(capsys, "models", "--methods", "--json")
    assert r.code == 0
    rows = {row["method"]: row for row in json.loads(r.out)}
    assert rows["sfp"]["settings"] == "SFPConfig" and rows["naclip"]["settings"] is None
    assert rows["naclip+resclip"]["summary"].startswith("naclip with the ResCLIP plug-in")
    assert {"gem", "sc-clip", "clip+resclip", "gem+resclip", "vv+resclip"} <= set(rows)
    assert rows["gem+resclip"]["summary"].startswith("gem with the ResCLIP plug-in")


def test_ablate_crosses_methods_and_plug_ins_and_compare_shows_the_gain(tmp_path, capsys, tiny_model_files):
    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    cfg, ckpt = tiny_model_files["open_clip"]
    out = tmp_path / "abl"
    r = run_cli(capsys, "ablate", "--dataset", "voc21", "--data-root", voc, "--out", out, "--model", cfg,
                "--checkpoint", ckpt, "--device", "cpu", "--workers", "0", "--no-progress", "--size", "32",
                "--method", "naclip+resclip", *_settings("naclip+resclip"), "--no-plots",
                "--grid", "method=naclip,naclip+resclip,sclip+resclip", "refine=none,pamr")
    assert r.code == 0, r.err
    table = json.loads((out / "ablation.json").read_text())
    rows = {row["setting"]: row for row in table["rows"]}
    assert set(rows) == {"base", "method=naclip", "method=sclip+resclip", "refine=pamr",
                         "method=naclip, refine=pamr", "method=sclip+resclip, refine=pamr"}
    assert len({row["slug"] for row in table["rows"]}) == 6 and rows["refine=pamr"]["refine"] == "pamr"
    refined = json.loads((out / rows["refine=pamr"]["results"]["voc21"]["run"] / "result.json").read_text())
    assert refined["refine"] == ["pamr"]
    assert rows["base"]["method"] == "naclip+resclip" and rows["method=naclip"]["method"] == "naclip"
    runs = [out / rows[s]["results"]["voc21"]["run"] / "result.json" for s in ("method=naclip", "base")]
    results = [json.loads(p.read_text()) for p in runs]
    assert results[1]["model"]["method_settings"]["rcs_layers"] == [1, 2]  # the plug-in's settings, recorded
    assert "method_settings" not in results[0]["model"]
    r = run_cli(capsys, "eval", "--compare", *runs)
    assert r.code == 0, r.err
    gain = results[1]["metrics"]["mIoU"] - results[0]["metrics"]["mIoU"]
    assert f"| mIoU − {runs[0]} | 0.00 | {gain:.2f} |" in r.out
    assert "| model.method | naclip | naclip+resclip |" in r.out
    assert "| model.method_settings.use_sfr | – | True |" in r.out


def test_the_demo_runs_each_new_method(tmp_path, tiny_model_files):
    """The demo's request logic on a model built with each method's tiny settings (the demo's method box
    lists every method; a view of another kind starts from that method's official settings)."""
    import gemseg
    from gemseg.demo import logic
    from gemseg.methods import get_method
    from gemseg.methods.settings import settings_from_text

    cfg, ckpt = tiny_model_files["open_clip"]
    image = write_image(tmp_path / "a.png", (40, 30), seed=1)
    for method in [*sorted(set(TINY) - {"sfp"}), "sfp"]:
        kind = get_method(method).settings_type
        model = gemseg.create_model(cfg, checkpoint=ckpt, method=method, depth=3,  # 4 blocks: GEM's depth fits
                                    method_settings=settings_from_text(kind, TINY[method]))
        for mode in ("heatmaps", "segmentation"):
            r = logic.run(model, image, "cat, dog", mode, size=(32, 32))
            assert (len(r.heatmaps) == 2) if mode == "heatmaps" else r.segmentation is not None
    assert model.method == "sfp"  # the last one; a view of another kind gets that method's official settings
    with pytest.raises(logic.DemoError, match="layer settings for"):
        logic.run(model, image, "cat", method="sc-clip", size=(32, 32))
