"""One-pass post-processing sweeps: each combination's confusion matrix equals a separate eval run with
that setting, resume after an interruption, the held-out selection on a constructed case, the syntax."""
import json

import pytest
import torch

import eval_data
from conftest import HAS_OPEN_CLIP
from gemseg.cli import main as cli
from gemseg.eval import evaluate, load_dataset_spec, resolve_protocol
from gemseg.eval.runner import Counts
from gemseg.eval.sweep import combinations, holdout_split, parse_sweep, run_sweep
from gemseg.eval.sweep_report import sweep_markdown, sweep_table

needs_open_clip = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
pytestmark = pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")

SMALL = dict(size=48, crop=32, stride=16, templates="single")
GRID = ["prob_threshold=none,0.06,0.3", "logit_scale=40,100", "area_threshold=none,0.1"]


def _state_confusion(out):
    parts = sorted((out / "state").glob("part-*.pt"))
    assert parts
    return sum(torch.load(p, weights_only=True)["counts"]["confusion"] for p in parts)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return eval_data.write_voc(tmp_path_factory.mktemp("voc") / "VOC2012", n=5)


def _sweep(model, voc, out, grid=GRID, **kw):
    spec = load_dataset_spec("voc21")
    protocol, source = resolve_protocol("sclip", spec, **SMALL)
    return run_sweep(model, spec, voc, protocol, parse_sweep(grid), out_dir=out, protocol_source=source,
                     progress=False, **kw)


@needs_open_clip
def test_each_combination_equals_a_separate_eval_run(model, voc, tmp_path):
    table = _sweep(model, voc, tmp_path / "sweep")
    swept = _state_confusion(tmp_path / "sweep")  # (K, C, C)
    combos = combinations(parse_sweep(GRID))
    assert swept.shape == (12, 21, 21) and len(table["rows"]) == 12
    spec = load_dataset_spec("voc21")
    differ = set()
    for k, combo in enumerate(combos):
        protocol, _ = resolve_protocol("sclip", spec, **SMALL, **combo)
        result = evaluate(model, spec, voc, protocol, out_dir=tmp_path / f"eval{k}", progress=False)
        ref = _state_confusion(tmp_path / f"eval{k}")
        # the sweep labels cached scores with its own code, the run with the Segmenter's: the scores agree to
        # float32 rounding, so a pixel at a near-tie may move (thread counts, machines); at most 0.1% of them
        moved = int((swept[k] - ref).abs().sum()) // 2
        assert swept[k].sum() == ref.sum() and moved <= 1e-3 * int(ref.sum()), (combo, moved)
        assert table["rows"][k]["settings"] == combo
        assert table["rows"][k]["all"]["mIoU"] == pytest.approx(result["metrics"]["mIoU"], abs=0.5 if moved else 0)
        assert table["rows"][k]["all"]["aAcc"] == pytest.approx(result["metrics"]["aAcc"], abs=0.1 if moved else 0)
        differ.add(tuple(swept[k].flatten().tolist()))
    assert len(differ) > 3  # the settings do change the labels on this set, so the equality means something
    # each rule matters somewhere: prob_threshold none vs 0.3, logit scale 40 vs 100, area none vs 0.1
    for a, b in ((range(0, 4), range(8, 12)), ((0, 1, 4, 5), (2, 3, 6, 7)), ((0, 2, 4, 6), (1, 3, 5, 7))):
        assert any(not torch.equal(swept[i], swept[j]) for i, j in zip(a, b))
    best = max(range(12), key=lambda k: (table["rows"][k]["all"]["mIoU"], -k))
    assert table["best"]["index"] == best and table["best"]["chosen_on"] == "all"
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert md == sweep_markdown(json.loads((tmp_path / "sweep" / "sweep.json").read_text()))
    assert md.count("| best |") == 1 and "tuned on them" in md
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 0


@needs_open_clip
def test_sweep_resumes_after_an_interruption(model, voc, tmp_path):
    reference = _sweep(model, voc, tmp_path / "ref")
    seen = []

    def interrupt(image_id):
        seen.append(image_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sweep(model, voc, tmp_path / "run", save_every=2, on_image=interrupt)
    resumed = _sweep(model, voc, tmp_path / "run", on_image=seen.append)
    assert len(seen) == 5 and len(set(seen)) == 5  # finished images were not counted again
    assert resumed["rows"] == reference["rows"] and resumed["best"] == reference["best"]
    assert resumed["speed"]["resumed_images"] == 3 and resumed["speed"]["images"] == 2
    assert torch.equal(_state_confusion(tmp_path / "run"), _state_confusion(tmp_path / "ref"))
    from gemseg.eval.state import StateError

    with pytest.raises(StateError, match="other settings"):  # another grid in the same folder
        _sweep(model, voc, tmp_path / "run", grid=["prob_threshold=0.1,0.2"])


@needs_open_clip
def test_holdout_parts_add_up_and_the_choice_is_made_on_the_selection_part(model, voc, tmp_path):
    table = _sweep(model, voc, tmp_path / "h", holdout=0.4)
    assert table["parts"] == {"select": 3, "held_out": 2}
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert len(holdout_split(ids, 0.4)) == 2
    rows = table["rows"]
    best = max(range(len(rows)), key=lambda k: (rows[k]["select"]["mIoU"] or -1, -k))
    assert table["best"]["index"] == best and table["best"]["reported"] == rows[best]["held_out"]
    assert "held-out" in (tmp_path / "h" / "sweep.md").read_text()


def test_holdout_split_is_deterministic_disjoint_and_order_free():
    ids = [f"img{i:03d}" for i in range(40)]
    held = holdout_split(ids, 0.25)
    assert len(held) == 10 and held <= set(ids)
    assert holdout_split(list(reversed(ids)), 0.25) == held  # the image order does not matter
    assert holdout_split(ids, 0.25) == held
    assert held != set(ids[:10]) and held != set(ids[-10:])  # not a prefix or suffix of the list
    with pytest.raises(ValueError, match="empty part"):
        holdout_split(ids[:2], 0.1)
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\)"):
        holdout_split(ids, 1.0)


def _cm(correct, wrong):
    """A 2-class confusion matrix with ``correct`` pixels on the diagonal of each class and ``wrong``
    pixels of class 0 predicted as 1."""
    return torch.tensor([[correct, wrong], [0, correct]])


def test_held_out_selection_on_a_constructed_case():
    # combination 0 is best on the selection images, combination 1 on the held-out ones
    select = torch.stack([_cm(10, 0), _cm(10, 10)])
    held = torch.stack([_cm(10, 10), _cm(10, 0)])
    counts = Counts(totals={"confusion": select + held, "select": select}, images=4, resumed=0, seconds=1.0)
    spec = load_dataset_spec("voc20")

    class Spec:  # the two-class metadata the table needs
        name, title, class_names = "toy", "toy", ["a", "b"]

    combos = [{"prob_threshold": 0.1}, {"prob_threshold": 0.2}]
    table = sweep_table(counts, spec=Spec, root=".", protocol=resolve_protocol("gem", spec)[0], protocol_source={},
                        model=_FakeModel(), grid={"prob_threshold": [0.1, 0.2]}, combos=combos, holdout=0.5,
                        parts=(2, 2), num_images=4, limit=None, dist=_World())
    best = table["best"]
    assert best["index"] == 0 and best["chosen_on"] == "select" and best["reported_on"] == "held_out"
    # held-out mIoU of combination 0 by hand: IoU_a = 10 / (20 + 10 - 10) = 0.5, IoU_b = 10 / (10 + 20 - 10) = 0.5
    assert best["reported"]["mIoU"] == pytest.approx(50.0)
    assert best["held_out_best"]["index"] == 1 and best["held_out_best"]["mIoU"] == pytest.approx(100.0)
    # without a holdout both combinations have the same totals on all images: the tie goes to the first
    plain = sweep_table(Counts(totals={"confusion": select + held}, images=4, resumed=0, seconds=1.0), spec=Spec,
                        root=".", protocol=resolve_protocol("gem", spec)[0], protocol_source={}, model=_FakeModel(),
                        grid={"prob_threshold": [0.1, 0.2]}, combos=combos, holdout=None, parts=None, num_images=4,
                        limit=None, dist=_World())
    assert plain["best"]["index"] == 0 and plain["best"]["chosen_on"] == "all" and "select" not in plain["rows"][0]


class _World:
    world_size = 1


class _FakeModel:
    device = "cpu"
    method = "gem"

    class backbone:  # noqa: N801 - attribute access as on a GEMModel
        name, pretrained = "toy", None

    class config:  # noqa: N801
        @staticmethod
        def to_dict():
            return {}

    precision = "fp32"


def test_sweep_syntax():
    grid = parse_sweep(["prob_threshold=0:0.95:0.05", "logit-scale=40,50,65", "area_threshold=none,0.1"])
    assert len(grid["prob_threshold"]) == 20 and grid["prob_threshold"][-1] == 0.95
    assert grid["prob_threshold"][:3] == [0.0, 0.05, 0.1]
    assert grid["logit_scale"] == [40.0, 50.0, 65.0] and grid["area_threshold"] == [None, 0.1]
    assert parse_sweep(["prob_threshold=0:1:0.3"])["prob_threshold"] == [0.0, 0.3, 0.6, 0.9]  # 1 is off the grid
    assert parse_sweep(["prob_threshold=none,0.5:0.6:0.1"])["prob_threshold"] == [None, 0.5, 0.6]
    assert len(combinations(grid)) == 20 * 3 * 2


@pytest.mark.parametrize("items, message", [
    (["prob_threshold"], "write SETTING=VALUES"),
    (["prob_threshold="], "write SETTING=VALUES"),
    (["size=224,448"], "use `gemseg ablate` instead"),
    (["mode=whole,slide"], "use `gemseg ablate` instead"),
    (["templates=single"], "use `gemseg ablate` instead"),
    (["method=gem,clip"], "use `gemseg ablate` instead"),
    (["colour=1"], "unknown setting"),
    (["logit_scale=none,40"], "none is not a value of logit_scale"),
    (["prob_threshold=0:1"], "not a range START:STOP:STEP"),
    (["prob_threshold=0:1:0"], "must be > 0"),
    (["prob_threshold=0.5:0.1:0.1"], "ends before it starts"),
    (["prob_threshold=0.1,abc"], "'abc' is not a number or none"),
    (["prob_threshold=0.1,0.1"], "repeated"),
    (["prob_threshold=0.1", "prob_threshold=0.2"], "given twice"),
    ([], "at least one"),
])
def test_bad_sweep_syntax_is_one_clear_error(items, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep(items)


@needs_open_clip
def test_cli_sweep_and_its_errors(voc, tiny_model_files, tmp_path, capsys):
    cfg, ckpt = tiny_model_files["open_clip"]
    common = ["eval", "--dataset", "voc21", "--data-root", str(voc), "--model", cfg, "--checkpoint", ckpt,
              "--depth", "3", "--device", "cpu", "--workers", "0", "--no-progress", "--size", "48",
              "--templates", "single", "--limit", "4"]
    assert cli(common + ["--out", str(tmp_path / "s"), "--sweep", "prob_threshold=0:0.2:0.1",
                         "--holdout", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "voc21 sweep of 3 combinations: best prob_threshold=" in out and "on held_out" in out
    table = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert table["grid"] == {"prob_threshold": [0.0, 0.1, 0.2]} and table["parts"] == {"select": 2, "held_out": 2}
    assert cli(common + ["--sweep", "size=224,448"]) == 2
    assert "use `gemseg ablate` instead" in capsys.readouterr().err
    assert cli(common + ["--sweep", "prob_threshold=0.1", "--holdout", "0.99"]) == 2
    assert "empty part" in capsys.readouterr().err
    assert cli(common + ["--holdout", "0.5"]) == 2
    assert "give --sweep too" in capsys.readouterr().err
    oi = eval_data.write_openimages(tmp_path / "oi")
    assert cli(["eval", "--dataset", "openimages_v7", "--data-root", str(oi), "--model", cfg, "--checkpoint", ckpt,
                "--device", "cpu", "--sweep", "prob_threshold=0.1,0.2"]) == 2
    assert "point labels" in capsys.readouterr().err


@needs_open_clip
def test_two_gloo_processes_equal_one(voc, tiny_model_files, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    cfg, ckpt = tiny_model_files["open_clip"]
    args = ["eval", "--dataset", "voc21", "--data-root", str(voc), "--model", cfg, "--checkpoint", ckpt, "--depth", "3",
            "--device", "cpu", "--workers", "0", "--no-progress", "--preset", "sclip", "--size", "48", "--crop", "32",
            "--stride", "16", "--templates", "single", "--save-every", "1", "--sweep", *GRID, "--holdout", "0.4"]
    assert cli(args + ["--out", str(tmp_path / "one")]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "gemseg.cli", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / x / "sweep.json").read_text()) for x in ("one", "two"))
    assert two["rows"] == one["rows"] and two["best"] == one["best"]  # identical counts, identical tables
    assert two["speed"]["world_size"] == 2 and two["speed"]["images"] == 5
    assert sorted(p.name for p in (tmp_path / "two" / "state").glob("part-*.pt")) == ["part-g000-r000.pt",
                                                                                       "part-g000-r001.pt"]
    assert proc.stdout.count("voc21 sweep of 12 combinations") == 1  # only rank 0 reports
