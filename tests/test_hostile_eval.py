"""Hostile evaluation data and state (issue 16): ids that climb out of the root, repeated ids, broken
images, labels and run-state files, worker errors, --split folders, JSON errors, seeded random weights.
Each error is one line naming the file, exit code 2, and nothing is written outside --out."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import eval_data
from conftest import HAS_OPEN_CLIP
from cli_util import run_cli
from gemseg.eval import load_dataset_spec
from gemseg.eval.datasets import DenseDataset

pytestmark = [pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed"),
              pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")]


def _voc(tmp_path, n=4):
    return eval_data.write_voc(tmp_path / "data" / "VOC2012", n=n)


def _split(root):
    return root / "ImageSets" / "Segmentation" / "val.txt"


def _eval(capsys, tiny_model_files, root, out, *extra):
    cfg, ckpt = tiny_model_files["open_clip"]
    return run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", root, "--model", cfg, "--checkpoint", ckpt,
                   "--depth", "3", "--device", "cpu", "--no-progress", "--size", "32", "--templates", "single",
                   "--preset", "gem", "--out", out, *extra)


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("gemseg: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("bad", ["../../x", "/etc/passwd", "a/../../x", "a//b", "a\\..\\b"])
def test_split_ids_that_leave_the_root_are_refused(tmp_path, capsys, tiny_model_files, bad):
    root = _voc(tmp_path)
    with open(_split(root), "a") as f:
        f.write(bad + "\n")
    out = tmp_path / "runs" / "out"
    r = _eval(capsys, tiny_model_files, root, out, "--save-preds", "9", "--workers", "0")
    assert r.code == 2 and "is not a relative path inside the dataset" in _one_line(r.err)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "runs" / "x.png").exists()


def test_a_repeated_split_id_is_counted_once_and_resumes(tmp_path, capsys, tiny_model_files):
    root = _voc(tmp_path)
    ids = _split(root).read_text().split()
    _split(root).write_text("\n".join(ids + ids[:1]) + "\n")
    with pytest.warns(UserWarning, match="1 repeated ids .* counted once"):
        assert DenseDataset(load_dataset_spec("voc21"), root).ids == ids
    out = tmp_path / "out"
    r = _eval(capsys, tiny_model_files, root, out, "--workers", "0", "--save-every", "1")
    assert r.code == 0, r.err
    assert json.loads((out / "result.json").read_text())["dataset"]["num_images"] == len(ids)
    r = _eval(capsys, tiny_model_files, root, out, "--workers", "0")  # a finished run resumes, nothing redone
    assert r.code == 0 and "inconsistent" not in r.err


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_broken_image_names_the_file(tmp_path, capsys, tiny_model_files, damage, workers):
    root = _voc(tmp_path)
    victim = sorted((root / "JPEGImages").glob("*.jpg"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"this is not a JPEG at all")
    r = _eval(capsys, tiny_model_files, root, tmp_path / "out", "--workers", workers)
    line = _one_line(r.err)
    assert r.code == 2 and str(victim) in line and "DataLoader worker" not in line


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_label_keeps_its_one_line_reason_with_workers(tmp_path, capsys, tiny_model_files, workers):
    root = _voc(tmp_path)
    label = sorted((root / "SegmentationClass").glob("*.png"))[2]
    Image.fromarray(np.full((40, 40, 3), 9, dtype=np.uint8)).save(label)  # RGB: not a label map
    r = _eval(capsys, tiny_model_files, root, tmp_path / "out", "--workers", workers)
    line = _one_line(r.err)
    assert r.code == 2 and f"{label} is an RGB colour image" in line and "Caught" not in line


@pytest.mark.parametrize("content", ["truncated", "malicious", "not a part", "garbage"])
def test_a_broken_run_state_file_is_one_line(tmp_path, capsys, tiny_model_files, content):
    root = _voc(tmp_path)
    out = tmp_path / "out"
    assert _eval(capsys, tiny_model_files, root, out, "--workers", "0", "--limit", "2").code == 0
    part = next((out / "state").glob("part-*.pt"))
    if content == "truncated":
        part.write_bytes(part.read_bytes()[:50])
    elif content == "malicious":
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))

        part.write_bytes(pickle.dumps(Evil()))
    elif content == "not a part":
        torch.save({"ids": [1, 2], "counts": "x"}, part)
    else:
        part.write_bytes(os.urandom(300))
    r = _eval(capsys, tiny_model_files, root, out, "--workers", "0", "--limit", "2")
    line = _one_line(r.err)
    assert r.code == 2 and str(part) in line and "--restart" in line
    assert not (tmp_path / "pwned").exists()
    assert _eval(capsys, tiny_model_files, root, out, "--workers", "0", "--limit", "2", "--restart").code == 0


def test_a_corrupt_run_json_is_one_line(tmp_path, capsys, tiny_model_files):
    root = _voc(tmp_path)
    out = tmp_path / "out"
    assert _eval(capsys, tiny_model_files, root, out, "--workers", "0", "--limit", "1").code == 0
    (out / "state" / "run.json").write_text('{"dataset": ')
    r = _eval(capsys, tiny_model_files, root, out, "--workers", "0", "--limit", "1")
    assert r.code == 2 and str(out / "state" / "run.json") in _one_line(r.err)


def _score(capsys, pred, gt, *extra):
    return run_cli(capsys, "score", "--pred", pred, "--gt", gt, "--num-classes", "3", *extra)


def test_score_names_a_corrupt_prediction_png(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "gt" / "a.png")
    (tmp_path / "pred" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = _score(capsys, tmp_path / "pred", tmp_path / "gt")
    assert r.code == 2 and f"prediction {tmp_path / 'pred' / 'a.png'} cannot be read" in _one_line(r.err)


def test_score_split_that_is_a_folder_or_escapes(tmp_path, capsys):
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / d / "a.png")
    r = _score(capsys, tmp_path / "pred", tmp_path / "gt", "--split", tmp_path)
    assert r.code == 2 and "is a folder" in _one_line(r.err)
    (tmp_path / "split.txt").write_text("a\n../pred/a\n")
    r = _score(capsys, tmp_path / "pred", tmp_path / "gt", "--split", tmp_path / "split.txt")
    assert r.code == 2 and "not a relative path inside the dataset" in _one_line(r.err)


@pytest.mark.parametrize("what", ["dataset", "compare"])
def test_json_errors_name_the_file(tmp_path, capsys, what):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "classes": }')
    argv = ["eval", "--dataset", bad, "--show-protocol"] if what == "dataset" else ["eval", "--compare", bad]
    r = run_cli(capsys, *argv)
    line = _one_line(r.err)
    assert r.code == 2 and str(bad) in line and "line 2" in line


def test_eval_random_weights_are_seeded(tmp_path, capsys, tiny_model_files):
    root = _voc(tmp_path)
    cfg, _ = tiny_model_files["open_clip"]
    results = []
    for seed, run in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)  # whatever the global random state was before, the model must be the same
        r = run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", root, "--model", cfg, "--random-weights",
                    "--depth", "3", "--device", "cpu", "--no-progress", "--size", "32", "--templates", "single",
                    "--workers", "0", "--limit", "2", "--out", tmp_path / run)
        assert r.code == 0, r.err
        results.append(json.loads((tmp_path / run / "result.json").read_text())["metrics"])
    assert results[0] == results[1]
