"""`gemseg segment` end to end on tiny models: layout, JSON schema and the background rules."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cli_util import model_args, record, run_cli, run_json, tree, write_image
from conftest import BACKENDS
from gemseg.segment import AUTO_BACKGROUND, DEFAULT_THRESHOLD

CLASS_KEYS = {"index", "name", "color", "pixels", "fraction", "mean_score", "mean_probability"}


def _softmax(x, axis=0):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_layout_and_schema(tmp_path, capsys, tiny_model_files, backend):
    a = write_image(tmp_path / "a.png", (40, 30), seed=1)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", a, "-c", "cat,dog", "-c", "sofa", "--grid", "--save-raw", "-o", out,
                *model_args(tiny_model_files, backend))
    assert r.code == 0, r.err
    assert tree(out) == {"run.json", "legend.png", "a.png/record.json", "a.png/labels.png", "a.png/overlay.png",
                         "a.png/grid.png", "a.png/scores.npy"}
    rec = record(out, "a.png")
    assert rec["schema"] == "gemseg.segment/1"
    assert rec["files"] == {"labels": "labels.png", "overlay": "overlay.png", "grid": "grid.png",
                            "scores": "scores.npy"}
    assert [c["name"] for c in rec["classes"]] == ["background", "cat", "dog", "sofa"]
    assert [c["index"] for c in rec["classes"]] == [0, 1, 2, 3]
    assert all(set(c) == CLASS_KEYS for c in rec["classes"])
    assert sum(c["pixels"] for c in rec["classes"]) == 40 * 30
    assert sum(c["fraction"] for c in rec["classes"]) == pytest.approx(1.0, abs=1e-4)
    assert set(rec["found"]) == {c["name"] for c in rec["classes"][1:] if c["pixels"]}
    assert rec["background"] == {"rule": "auto", "prompts": list(AUTO_BACKGROUND),
                                 "threshold": DEFAULT_THRESHOLD, "logit_scale": 100.0}
    for c in rec["classes"]:
        assert (c["mean_score"] is None) == (c["pixels"] == 0)
        if c["pixels"]:
            assert -1 <= c["mean_score"] <= 1 and 0 < c["mean_probability"] <= 1
    labels = Image.open(out / "a.png" / "labels.png")
    assert labels.mode == "P" and labels.size == (40, 30)
    values = np.array(labels)
    for c in rec["classes"]:
        assert (values == c["index"]).sum() == c["pixels"]
        assert tuple(labels.getpalette()[3 * c["index"]: 3 * c["index"] + 3]) == tuple(c["color"])
    assert Image.open(out / "a.png" / "overlay.png").width > 40  # legend beside the overlay
    assert run_json(out)["settings"]["classes"] == ["cat", "dog", "sofa"]
    legend = Image.open(out / "legend.png")
    assert legend.height > 4 * 10  # one row per class and background


def _scores_and_labels(out, key="a.png"):
    return np.load(out / key / "scores.npy"), np.array(Image.open(out / key / "labels.png"))


def test_auto_background_follows_the_documented_rule(tmp_path, capsys, tiny_model_files):
    """auto: background prompts compete as class 0, and pixels under the threshold become 0. With
    --reduction max_then_softmax the probabilities are the softmax of the saved class scores; the default
    (softmax over all prompts, then max) gives the same argmax and never a higher probability."""
    a = write_image(tmp_path / "a.png", (40, 30), seed=4)
    common = [a, "-c", "cat,dog", "--save-raw", *model_args(tiny_model_files)]
    r = run_cli(capsys, "segment", *common, "--reduction", "max_then_softmax", "-o", tmp_path / "old")
    assert r.code == 0, r.err
    scores, old = _scores_and_labels(tmp_path / "old")
    assert scores.shape == (3, 30, 40) and not np.isnan(scores).any()
    probs = _softmax(100.0 * scores.astype(np.float64))
    expected = np.where(probs.max(0) < DEFAULT_THRESHOLD, 0, probs.argmax(0))
    assert (expected == old).mean() > 0.999  # float32 ties aside
    r = run_cli(capsys, "segment", *common, "-o", tmp_path / "new")
    assert r.code == 0, r.err
    scores_new, new = _scores_and_labels(tmp_path / "new")
    np.testing.assert_array_equal(scores_new, scores)  # cosines do not depend on the reduction
    assert record(tmp_path / "new", "a.png")["reduction"] == "softmax_then_max"
    fg = new > 0
    assert (new[fg] == scores.argmax(0)[fg]).mean() > 0.999
    assert (new[scores.argmax(0) == 0] == 0).all()
    assert (new[old == 0] == 0).mean() > 0.999  # lower or equal probabilities: background stays background


def test_none_gives_every_pixel_a_class(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png", (40, 30), seed=4)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", a, "-c", "cat,dog,sofa", "--background", "none", "--save-raw", "-o", out,
                *model_args(tiny_model_files))
    assert r.code == 0, r.err
    scores, labels = _scores_and_labels(out)
    assert np.isnan(scores[0]).all()  # no background score without background prompts
    assert labels.min() >= 1
    np.testing.assert_array_equal(labels, scores[1:].argmax(0) + 1)
    rec = record(out, "a.png")
    assert rec["background"] == {"rule": "none", "prompts": [], "threshold": None, "logit_scale": 100.0}
    assert rec["classes"][0]["pixels"] == 0


def test_none_with_a_threshold_marks_uncertain_pixels(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png", (40, 30), seed=4)
    common = [a, "-c", "cat,dog,sofa", "--background", "none", "--logit-scale", "20", "--save-raw",
              *model_args(tiny_model_files)]
    r = run_cli(capsys, "segment", *common, "-o", tmp_path / "free")
    assert r.code == 0, r.err
    scores, _ = _scores_and_labels(tmp_path / "free")
    top = _softmax(20.0 * scores[1:].astype(np.float64)).max(0)
    threshold = float(np.median(top))  # so that about half of the pixels fall under it
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", *common, "--threshold", f"{threshold:.6f}", "-o", out)
    assert r.code == 0, r.err
    _, labels = _scores_and_labels(out)
    expected = np.where(top < round(threshold, 6), 0, scores[1:].argmax(0) + 1)
    assert (expected == labels).mean() > 0.999
    assert 0.3 < (labels == 0).mean() < 0.7
    assert record(out, "a.png")["classes"][0]["mean_probability"] is None


def test_background_prompt_list(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png", seed=5)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", a, "-c", "cat,Wall", "--background", "sky, wall ,floor", "--threshold", "0",
                "--save-raw", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert "also classes" in r.err  # 'wall' stays a class
    rec = record(out, "a.png")
    assert rec["background"]["rule"] == "prompts" and rec["background"]["prompts"] == ["sky", "floor"]
    assert rec["background"]["threshold"] is None  # 0 turns the threshold off
    scores, labels = _scores_and_labels(out)
    np.testing.assert_array_equal(labels, scores.argmax(0))


def test_auto_drops_background_prompts_that_are_classes(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png", seed=5)
    r = run_cli(capsys, "segment", a, "-c", "sky,cat", "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 0, r.err
    prompts = record(tmp_path / "out", "a.png")["background"]["prompts"]
    assert "sky" not in prompts and len(prompts) == len(AUTO_BACKGROUND) - 1


def test_classes_file(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png")
    cfile = tmp_path / "classes.txt"
    cfile.write_text("# VOC-ish\ncat\n\ndog, small\n", encoding="utf-8")
    r = run_cli(capsys, "segment", a, "--classes-file", cfile, "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert [c["name"] for c in record(tmp_path / "out", "a.png")["classes"]] == ["background", "cat", "dog, small"]


@pytest.mark.parametrize("argv, message", [
    ([], "no classes given"),
    (["-c", "cat,,dog"], "class 2 is empty"),
    (["-c", ",".join(f"c{i}" for i in range(256))], "at most 255 fit"),
    (["-c", "cat", "--background", "cat"], "no background prompts left"),
    (["-c", "cat", "--logit-scale", "0"], "--logit-scale: must be > 0"),
    (["-c", "cat", "--threshold", "1.5"], "expected a number in [0, 1]"),
])
def test_bad_class_arguments(tmp_path, capsys, tiny_model_files, argv, message):
    a = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "segment", a, *argv, "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 2 and message in r.err and "Traceback" not in r.err


def test_exif_rotated_image_gives_upright_outputs(tmp_path, capsys, tiny_model_files):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 8
    im.save(tmp_path / "r.jpg", exif=exif)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", tmp_path / "r.jpg", "-c", "cat", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    rec = record(out, "r.jpg")
    assert rec["exif_transposed"] is True and (rec["width"], rec["height"]) == (30, 40)
    assert Image.open(out / "r.jpg" / "labels.png").size == (30, 40)


def test_max_side_scales_outputs_down(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png", (80, 40))
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", a, "-c", "cat", "--max-side", "20", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    rec = record(out, "a.png")
    assert (rec["width"], rec["height"], rec["output_width"], rec["output_height"]) == (80, 40, 20, 10)
    assert Image.open(out / "a.png" / "labels.png").size == (20, 10)
