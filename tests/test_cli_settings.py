"""One flag for a method's settings, its own and its proxy's: ``--method-setting`` repeated or
comma-separated, ``--proxy-settings`` as its alias, one namespace (unknown and ambiguous names refused with
the valid ones listed), the presets' per-dataset settings in ``--show-preset``/``--show-protocol``, and
``gemseg ablate`` handing each dataset the same method settings as ``gemseg eval``."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

import eval_data
from cli_util import run_cli
from conftest import HAS_OPEN_CLIP

from gemseg.cli.common import add_model_args, model_kwargs, settings_kwargs
from gemseg.methods import CASSConfig, METHODS, ResCLIPConfig, register_method


def _kwargs(*argv):
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    return model_kwargs(parser.parse_args(["--device", "cpu", *argv]))


def test_repeated_and_comma_separated_items_are_the_same():
    one = _kwargs("--method", "naclip+resclip", "--method-setting", "rcs_weights=2.0,0.4,use_sfr=off,temp_thd=0.2")
    many = _kwargs("--method", "naclip+resclip", "--method-setting", "rcs_weights=2.0,0.4",
                   "--method-setting", "use_sfr=off", "--method-setting", "temp_thd=0.2")
    assert one["method_settings"] == many["method_settings"] == {"rcs_weights": (2.0, 0.4), "use_sfr": False,
                                                                 "temp_thd": 0.2}
    ResCLIPConfig(**one["method_settings"])  # values of the right types
    later = _kwargs("--method", "naclip+resclip", "--method-setting", "temp_thd=0.2", "--method-setting", "temp_thd=0.3")
    assert later["method_settings"] == {"temp_thd": 0.3}  # a later item wins


def test_proxy_settings_is_an_alias_in_the_same_namespace():
    want = CASSConfig(rank=5, global_semantics_weight=0.1, scale_singular_values=False)
    for argv in (["--proxy-settings", "rank=5,global_semantics_weight=0.1,scale_singular_values=false"],
                 ["--method-setting", "rank=5", "--proxy-settings", "global_semantics_weight=0.1",
                  "--method-setting", "scale_singular_values=off"],
                 ["--method-setting", "rank=5, global_semantics_weight=0.1", "--method-setting", "proxy.scale_singular_values=off"]):
        kw = _kwargs("--method", "cass", *argv)
        assert kw["proxy_settings"] == want and "method_settings" not in kw, argv


@dataclass(frozen=True)
class _Own:
    beta: float = 1.0  # shared with the proxy's: ambiguous
    steps: int = 2


@dataclass(frozen=True)
class _Proxy:
    beta: float = 0.5
    layer: int = -1


@pytest.fixture
def both_kinds():
    def tokens(*a, **k):
        raise AssertionError("not run")

    tokens.settings_type, tokens.proxy_settings_type = _Own, _Proxy
    register_method("two-kinds", tokens, needs=("proxy",))
    yield "two-kinds"
    del METHODS["two-kinds"]


def test_unknown_and_ambiguous_names_are_refused_with_the_valid_ones(both_kinds):
    with pytest.raises(ValueError, match=r"beta is both .* write method\.beta=2 or proxy\.beta=2"):
        settings_kwargs(both_kinds, ["beta=2"])
    with pytest.raises(ValueError, match=r"--method-setting 'gamma=1': .*one of steps, layer, method\.beta, proxy\.beta"):
        settings_kwargs(both_kinds, ["steps=3,gamma=1"])
    kw = settings_kwargs(both_kinds, ["method.beta=2,proxy.beta=3", "steps=4,layer=5"])
    assert kw["method_settings"] == {"beta": 2.0, "steps": 4} and kw["proxy_settings"] == _Proxy(beta=3.0, layer=5)
    with pytest.raises(ValueError, match="no settings of its own"):
        settings_kwargs("naclip", ["beta=1"])
    with pytest.raises(ValueError, match="expected an int|invalid literal"):
        settings_kwargs(both_kinds, ["steps=many"])


def test_a_bad_name_is_a_one_line_error_on_the_command_line(tmp_path, capsys):
    from cli_util import write_image

    image = write_image(tmp_path / "a.png", (32, 32), seed=1)
    r = run_cli(capsys, "heatmap", image, "-p", "cat", "-o", tmp_path / "o", "--method", "cass", "--random-weights",
                "--device", "cpu", "--proxy-settings", "rank=5,nope=1")
    assert r.code == 2 and "nope=1" in r.err and "global_semantics_weight" in r.err and len(r.err.strip().splitlines()) == 1


def test_models_lists_both_kinds_of_settings(capsys):
    r = run_cli(capsys, "models", "--methods", "--json")
    rows = {row["method"]: row for row in json.loads(r.out)}
    assert rows["cass"]["proxy_settings"] == "CASSConfig" and rows["cass"]["settings"] is None
    assert rows["gem+resclip"]["settings"] == "ResCLIPConfig" and rows["gem+resclip"]["proxy_settings"] is None
    r = run_cli(capsys, "models", "--methods")
    assert r.code == 0 and "[--method-setting: CASSConfig (proxy)]" in r.out


def test_show_preset_and_protocol_give_the_method_and_proxy_settings(capsys):
    r = run_cli(capsys, "eval", "--show-preset", "cass")
    assert r.code == 0 and "method settings (with --method cass, its own and its proxy's" in r.out
    assert "voc20           global_semantics_weight=0.4" in r.out
    r = run_cli(capsys, "eval", "--show-protocol", "--preset", "cass", "--dataset", "voc20")
    assert r.code == 0 and "method settings (with --method cass; --method-setting overrides them): " \
                           "global_semantics_weight=0.4,mean_vector_weight=0.02" in r.out
    r = run_cli(capsys, "eval", "--show-protocol", "--preset", "resclip", "--dataset", "voc21")
    assert r.code == 0 and "temp_thd=0.5" in r.out and "sfr_weights=2.2,0.7" in r.out
    r = run_cli(capsys, "eval", "--show-protocol", "--preset", "gem", "--dataset", "voc21")
    assert r.code == 0 and "--method-setting overrides them): -" in r.out


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_ablate_gives_each_dataset_the_presets_method_settings_as_eval_does(tmp_path, capsys, tiny_model_files):
    voc = eval_data.write_voc(tmp_path / "VOC2012", n=1)
    cfg, ckpt = tiny_model_files["open_clip"]
    common = ["--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt, "--device", "cpu",
              "--workers", "0", "--no-progress", "--size", "32", "--preset", "resclip", "--method", "naclip+resclip",
              "--method-setting", "rcs_layers=1,2,sfr_weights=2.0,0.5"]
    r = run_cli(capsys, "eval", *common, "--out", tmp_path / "eval")
    assert r.code == 0, r.err
    evaluated = json.loads((tmp_path / "eval" / "result.json").read_text())["model"]["method_settings"]
    out = tmp_path / "abl"
    r = run_cli(capsys, "ablate", *common, "--out", out, "--no-plots", "--grid", "method=naclip+resclip,naclip")
    assert r.code == 0, r.err
    rows = {row["setting"]: row for row in json.loads((out / "ablation.json").read_text())["rows"]}
    ablated = json.loads((out / rows["base"]["results"]["voc21"]["run"] / "result.json").read_text())
    assert ablated["model"]["method_settings"] == evaluated
    # the preset's voc21 values (temp_thd 0.5, RCS (2.0, 0.3)), and the given ones winning
    assert evaluated["temp_thd"] == 0.5 and evaluated["rcs_weights"] == [2.0, 0.3]
    assert evaluated["sfr_weights"] == [2.0, 0.5] and evaluated["rcs_layers"] == [1, 2]
    other = json.loads((out / rows["method=naclip"]["results"]["voc21"]["run"] / "result.json").read_text())
    assert "method_settings" not in other["model"]  # another method: the preset's settings are not its own
    r = run_cli(capsys, "ablate", *common, "--out", out, "--grid", "method=naclip+resclip,naclip", "--show-plan")
    assert r.code == 0 and "temp_thd=0.5" in r.out
