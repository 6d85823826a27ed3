"""GEM ablations on a tiny model and tiny synthetic datasets: plans, the table and plots, resume without
recomputing finished settings, two gloo processes equal one, and tables that name every setting."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import eval_data
from conftest import HAS_OPEN_CLIP
from gemseg import GEMConfig, GEMModel
from gemseg.cli import main as cli
from gemseg.eval import compare_markdown, load_dataset_spec, resolve_protocol
from gemseg.eval.ablation import (AblationDataset, ablation_markdown, load_ablation, parse_grid, plan_settings,
                                  plot_series, run_ablation)
from gemseg.eval.plots import bar_chart, line_chart, nice_ticks

pytestmark = [pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed"),
              pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")]

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return eval_data.write_voc(tmp_path_factory.mktemp("voc") / "VOC2012", n=4)


def _voc_data(voc, limit=None):
    spec = load_dataset_spec("voc21")
    protocol, source = resolve_protocol("gem", spec, size=32)
    return AblationDataset(spec, voc, protocol, source, limit)


def _png(path):
    assert path.read_bytes()[:8] == PNG
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


# --- plans ------------------------------------------------------------------------------------------
def test_named_sweeps_and_grids_plan_distinct_settings():
    base = GEMConfig(depth=3)
    plan = plan_settings(base, sweeps=["projections"], num_blocks=4)
    assert [s.label for s in plan] == ["base", "projections=q", "projections=k", "projections=v"]
    assert plan[0].config == base and plan[0].sweeps == ["projections"]
    every = plan_settings(base, sweeps=["all"], num_blocks=4)
    assert len({s.config for s in every}) == len(every) == 1 + 3 + 6 + 5 + 4 + 1 + 1  # the base is run once
    assert every[0].changes == {} and set(every[0].sweeps) == {"projections", "temperature", "iterations",
                                                                  "depth", "l2", "mlp"}
    temps = [s.config.temperature for s in every if "temperature" in s.sweeps]
    assert temps == [None, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    assert [s.config.depth for s in every if "depth" in s.sweeps] == [3, 1, 2, 4, 5]
    big = [s.config.depth for s in plan_settings(GEMConfig(), sweeps=["depth"], num_blocks=24)]
    assert len(big) <= 13 and min(big) == 1 and max(big) == 25
    assert len({s.slug for s in every}) == len(every)  # one run folder per setting

    grid = parse_grid(["iters=0,1,2", "temperature=adaptive,0.1", "proj=v+k+q,q", "l2=off", "mlp=on,on"])
    assert grid == {"iterations": [0, 1, 2], "temperature": [None, 0.1], "projections": [("v", "k", "q"), ("q",)],
                    "l2_normalize": [False], "gem_mlp": [True]}
    product = plan_settings(base, grid=grid, num_blocks=4)
    assert len(product) == 12 and all(s.sweeps == ["grid"] for s in product)
    assert product[0].label == "iterations=0, l2_normalize=off, gem_mlp=on"
    same = plan_settings(base, grid=parse_grid(["projections=qkv"]), num_blocks=4)
    assert same[0].config == base  # the ensemble in any order is the base's
    for bad, match in [("iterations=x", "expected an integer"), ("temperature=hot", "adaptive"),
                       ("projections=qx", "letters of qkv"), ("l2=maybe", "on or off"), ("width=3", "SETTING"),
                       ("depth", "SETTING"), ("depth=", "no values")]:
        with pytest.raises(ValueError, match=match):
            parse_grid([bad])
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["depth=1", "depth=2"])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        plan_settings(base, grid=parse_grid(["temperature=0"]))
    with pytest.raises(ValueError, match="unknown sweep"):
        plan_settings(base, sweeps=["width"])
    with pytest.raises(ValueError, match="nothing to ablate"):
        plan_settings(base)


def test_charts_are_pngs_of_the_requested_size(tmp_path):
    assert nice_ticks(0.3, 9.7) == [0, 2.5, 5, 7.5, 10]
    assert nice_ticks(31.2, 36.9) == [30, 32, 34, 36, 38]
    line = line_chart([("a", [0, 1, 2], [1.0, None, 3.0]), ("b", [0, 1, 2], [2.0, 2.5, 2.0])], title="t",
                      xlabel="x", ylabel="y", size=(640, 400))
    log = line_chart([("a", [0.01, 1, 100], [1.0, 2.0, 3.0])], references=[("a adaptive", 2.5, 0)], log_x=True,
                     title="t", xlabel="x", ylabel="y")
    bars = bar_chart(["q", "k"], [("a", [1.0, None]), ("b", [2.0, 3.0])], title="t", xlabel="x", ylabel="y")
    for name, im in (("line", line), ("log", log), ("bars", bars)):
        im.save(tmp_path / f"{name}.png")
        assert im.mode == "RGB" and len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 10  # drawn
    assert _png(tmp_path / "line.png") == (640, 400)
    with pytest.raises(ValueError, match="positive"):
        line_chart([("a", [0, 1], [1.0, 2.0])], log_x=True, title="t", xlabel="x", ylabel="y")


# --- running an ablation ----------------------------------------------------------------------------
def test_sweep_table_rows_configs_plots_and_text_once_per_dataset(model, voc, tmp_path, monkeypatch):
    oi = eval_data.write_openimages(tmp_path / "oi")
    spec = load_dataset_spec("openimages_v7")
    points = AblationDataset(spec, oi, resolve_protocol("gem", spec, size=32)[0])
    calls = []
    encode = model.backbone.encode_text
    monkeypatch.setattr(model.backbone, "encode_text", lambda texts: calls.append(len(texts)) or encode(texts))
    settings = plan_settings(model.config, sweeps=["projections"], num_blocks=4)
    table = run_ablation(model, [_voc_data(voc), points], settings, out_dir=tmp_path / "abl", progress=False,
                         sweeps=["projections"])
    assert len(calls) == 2  # each vocabulary encoded once, for all four settings
    assert table == load_ablation(tmp_path / "abl")
    rows = table["rows"]
    assert [r["setting"] for r in rows] == ["base", "projections=q", "projections=k", "projections=v"]
    assert [r["config"]["projections"] for r in rows] == [["v", "k", "q"], ["q"], ["k"], ["v"]]
    for row in rows:
        assert set(row["results"]) == {"voc21", "openimages_v7"}
        for name, cell in row["results"].items():
            result = json.loads((tmp_path / "abl" / cell["run"] / "result.json").read_text())
            assert result["model"]["config"] == row["config"]  # each run really used its setting
            assert cell["value"] == result["metrics"][cell["metric"]]
    assert {c["metric"] for c in rows[0]["results"].values()} == {"mIoU", "p-mIoU"}
    assert table["model"]["name"] == "tiny-vit" and table["model"]["pretrained"].endswith(".safetensors")
    assert table["model"]["method"] == "gem" and table["base"]["depth"] == 3
    assert table["datasets"][0]["protocol"]["size"] == 32 and table["datasets"][0]["num_images"] == 4

    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert md == ablation_markdown(table)
    results = md[md.index("## Results"):md.index("## Datasets")]
    assert sum(line.startswith("| projections=") or line.startswith("| base |") for line in results.splitlines()) == 4
    assert "| **q** |" in results and "voc21 mIoU | openimages_v7 p-mIoU | mean" in results
    assert table["plots"] == ["plots/projections.png"]
    assert _png(tmp_path / "abl" / "plots" / "projections.png") == (900, 520)
    assert "![projections](plots/projections.png)" in md


def test_an_interrupted_ablation_resumes_without_recomputing_finished_settings(model, voc, tmp_path):
    settings = plan_settings(model.config, grid=parse_grid(["iterations=0,1,2"]), num_blocks=4)
    seen = []

    def interrupt(dataset, slug, image_id):
        seen.append((slug, image_id))
        if len(seen) == 6:  # the second image of the second setting
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ablation(model, [_voc_data(voc)], settings, out_dir=tmp_path / "abl", progress=False, save_every=1,
                     on_image=interrupt)
    first = tmp_path / "abl" / "runs" / "voc21" / settings[0].slug / "result.json"
    stamp = first.stat().st_mtime_ns
    partial = load_ablation(tmp_path / "abl")  # the table of what was finished is written as it goes
    assert [bool(r["results"]) for r in partial["rows"]] == [True, False, False]

    again = []
    table = run_ablation(model, [_voc_data(voc)], settings, out_dir=tmp_path / "abl", progress=False,
                         on_image=lambda d, slug, i: again.append(slug))
    assert first.stat().st_mtime_ns == stamp  # the finished setting was skipped, not re-evaluated
    assert again == [settings[1].slug] * 2 + [settings[2].slug] * 4  # the half-done one resumed
    fresh = run_ablation(model, [_voc_data(voc)], settings, out_dir=tmp_path / "fresh", progress=False, plots=False)
    assert [r["results"]["voc21"]["value"] for r in table["rows"]] == \
        [r["results"]["voc21"]["value"] for r in fresh["rows"]]
    assert _png(tmp_path / "abl" / "plots" / "iterations.png")

    redo = []
    run_ablation(model, [_voc_data(voc, limit=2)], settings[:1], out_dir=tmp_path / "abl", progress=False,
                 restart=True, plots=False, on_image=lambda d, slug, i: redo.append(i))
    assert len(redo) == 2  # --restart evaluates again


def test_methods_that_ignore_the_varied_settings_are_refused(model, voc, tmp_path):
    for method, sweep, match in (("clip", "iterations", "reads no GEM setting"), ("vv", "iterations", "only depth")):
        other = GEMModel(model.backbone, config=model.config, method=method)
        settings = plan_settings(model.config, sweeps=[sweep], num_blocks=4)
        with pytest.raises(ValueError, match=match):
            run_ablation(other, [_voc_data(voc)], settings, out_dir=tmp_path / method, progress=False)
    with pytest.raises(ValueError, match="each dataset once"):
        run_ablation(model, [_voc_data(voc)] * 2, plan_settings(model.config, sweeps=["l2"]), out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="depth 9"):
        run_ablation(model, [_voc_data(voc)], plan_settings(model.config, grid={"depth": [9]}), out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before anything ran


# --- the command, torchrun, and tables that name every setting --------------------------------------
def _args(voc, out, files, *extra):
    cfg, ckpt = files["open_clip"]
    return ["ablate", "--dataset", "voc21", "--data-root", str(voc), "--out", str(out), "--model", cfg,
            "--checkpoint", ckpt, "--depth", "3", "--device", "cpu", "--workers", "0", "--no-progress",
            "--size", "32", "--limit", "3", "--save-every", "1", "--grid", "iterations=0,1", "l2=on,off", *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(voc, tiny_model_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    assert cli(_args(voc, out, tiny_model_files)) == 0
    return out


def _values(table):
    return [(r["slug"], {k: {m: v for m, v in c.items() if m != "images_per_s"} for k, c in r["results"].items()})
            for r in table["rows"]]


def test_two_gloo_processes_equal_one(voc, tiny_model_files, single, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "gemseg.cli",
           *_args(voc, tmp_path, tiny_model_files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table, reference = load_ablation(tmp_path), load_ablation(single)
    assert len(table["rows"]) == 4 and _values(table) == _values(reference)
    for row in table["rows"]:
        run = tmp_path / row["results"]["voc21"]["run"]
        assert sorted(p.name for p in (run / "state").glob("part-*.pt")) == ["part-g000-r000.pt", "part-g000-r001.pt"]
        assert json.loads((run / "result.json").read_text())["speed"]["world_size"] == 2
    assert proc.stdout.count("## Results") == 1  # only rank 0 reports
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["iterations.png", "l2_normalize.png"]


def test_cli_tables_and_compare_name_every_setting(voc, tiny_model_files, single, capsys):
    table = load_ablation(single)
    md = (single / "ablation.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| setting | sweeps"))
    for name in ("depth", "iterations", "temperature", "projections", "l2_normalize", "gem_mlp", "voc21 mIoU"):
        assert f"| {name} |" in header
    for key in table["datasets"][0]["protocol"]:
        assert f"| protocol.{key} |" in md
    assert "| weights |" in md and "| method | gem |" in md and "grid | iterations=0,1; l2_normalize=on,off" in md

    row = {r["setting"]: r for r in table["rows"]}
    a, b = (single / row[s]["results"]["voc21"]["run"] / "result.json"
            for s in ("base", "iterations=0, l2_normalize=off"))
    assert cli(["eval", "--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| model.config.iterations | 1 | 0 |" in out and "| model.config.l2_normalize | True | False |" in out
    assert "model.config.depth" not in out and "protocol." not in out  # only what differs
    result = json.loads(a.read_text())
    other = {**result, "model": {**result["model"], "name": "ViT-B-16", "pretrained": "openai", "method": "sclip"},
             "dataset": {**result["dataset"], "limit": None},
             "protocol": {**result["protocol"], "size": 448}}
    table_md = compare_markdown([result, other])
    for line in ("| model.name | tiny-vit | ViT-B-16 |", "| model.method | gem | sclip |",
                 "| dataset.limit | 3 | – |", "| protocol.size | 32 | 448 |"):
        assert line in table_md
    assert "| model.pretrained |" in table_md
    result_md = (a.parent / "result.md").read_text()
    for line in ("## Model", "| model.method | gem |", "| model.config.depth | 3 |",
                 "| model.config.temperature | adaptive |", "| model.config.projections | v,k,q |", "| dataset.limit | 3 |",
                 "## Protocol"):
        assert line in result_md

    assert cli(_args(voc, single, tiny_model_files)) == 0  # every setting finished: nothing is evaluated
    err = capsys.readouterr().err
    assert err.count("finished earlier") == 4
    assert cli(_args(voc, single, tiny_model_files, "--show-plan")) == 0
    plan = capsys.readouterr().out
    assert "4 settings x 1 datasets" in plan and "d3-i0-tadaptive-pvkq-l2off-mlpoff" in plan
    cfg, ckpt = tiny_model_files["open_clip"]
    assert cli(["ablate", "--dataset", "voc21", "--model", cfg, "--checkpoint", ckpt, "--sweep", "l2"]) == 2
    assert "one --data-root after each --dataset" in capsys.readouterr().err
    assert cli(["ablate", "--dataset", "voc21", "--data-root", str(voc), "--model", cfg, "--checkpoint", ckpt]) == 2
    assert "give --sweep" in capsys.readouterr().err
    assert cli(["ablate", "--dataset", "voc21", "--data-root", str(voc), "--sweep", "iterations,width"]) == 2
    assert "unknown sweep 'width'" in capsys.readouterr().err
    assert cli(_args(voc, single, tiny_model_files, "--method", "clip")) == 2
    assert "reads no GEM setting" in capsys.readouterr().err


def test_plot_series_of_a_grid_has_a_line_per_other_setting():
    table = {"datasets": [{"name": "a", "metric": "mIoU"}], "base": GEMConfig().to_dict(), "rows": []}
    for s in plan_settings(GEMConfig(), grid=parse_grid(["iterations=0,1,2", "temperature=adaptive,0.1,10"])):
        table["rows"].append({"config": json.loads(json.dumps(s.config.to_dict())),
                              "results": {"a": {"value": float(s.config.iterations)}}})
    lines = plot_series(table, "iterations")
    assert [label for label, _, _ in lines["series"]] == ["a (temperature=adaptive)", "a (temperature=0.1)",
                                                          "a (temperature=10)"]
    temps = plot_series(table, "temperature")
    assert temps["kind"] == "log" and len(temps["references"]) == 3
    assert all(None not in xs for _, xs, _ in temps["series"])
    assert plot_series(table, "depth") is None
