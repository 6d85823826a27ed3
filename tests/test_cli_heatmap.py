"""`gemseg heatmap` end to end on tiny models."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cli_util import TINY_DEPTH, model_args, open_clip_config, record, run_cli, run_json, tree, write_image
from conftest import BACKENDS
from gemseg.cli.heatmap import heatmap_names, slug


@pytest.mark.parametrize("backend", BACKENDS)
def test_heatmap_layout_and_record(tmp_path, capsys, tiny_model_files, backend):
    a = write_image(tmp_path / "in" / "a.png", (40, 30), seed=1)
    b = write_image(tmp_path / "in" / "b.jpg", (24, 36), seed=2)
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", a, b, "-p", "cat", "-p", "remote control", "--save-raw", "--grid",
                "-o", out, *model_args(tiny_model_files, backend))
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert tree(out) == {"run.json"} | {f"{k}/{f}" for k in ("a.png", "b.jpg") for f in (
        "record.json", "grid.png", "heatmap-01-cat.png", "heatmap-01-cat.npy",
        "heatmap-02-remote-control.png", "heatmap-02-remote-control.npy")}
    rec = record(out, "b.jpg")
    assert rec["schema"] == "gemseg.heatmap/1" and rec["key"] == "b.jpg"
    assert (rec["width"], rec["height"]) == (24, 36) == (rec["output_width"], rec["output_height"])
    assert rec["random_weights"] is False and rec["model"]["random_weights"] is False
    assert [p["prompt"] for p in rec["prompts"]] == ["cat", "remote control"]
    assert set(rec["timing"]) == {"load_s", "model_s", "write_s", "total_s"}
    for p in rec["prompts"]:
        raw = np.load(out / "b.jpg" / p["files"]["raw"])
        assert raw.shape == (36, 24) and raw.dtype == np.float32
        assert p["min"] == pytest.approx(raw.min()) and p["max"] == pytest.approx(raw.max())
        assert p["min"] <= p["mean"] <= p["max"] and -1 <= p["min"] and p["max"] <= 1
        fig = Image.open(out / "b.jpg" / p["files"]["heatmap"])
        assert fig.width > 24 and fig.height > 36  # colour bar beside, title above
    grid = Image.open(out / "b.jpg" / "grid.png")
    assert grid.width > 3 * 24  # image and two heatmaps side by side
    run = run_json(out)
    assert run["command"] == "heatmap" and run["settings"]["prompts"] == ["cat", "remote control"]
    assert run["last_run"]["done"] == 2 and run["last_run"]["failed"] == 0


def test_raw_scores_equal_the_library(tmp_path, capsys, tiny_model_files):
    """The CLI is thin: its raw map is the library's heatmap, resized bilinearly to the image."""
    import torch.nn.functional as F

    from gemseg import create_model, preprocess

    path = write_image(tmp_path / "a.png", (40, 30), seed=3)
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", path, "-p", "cat", "--save-raw", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    cfg, ckpt = tiny_model_files["open_clip"]
    model = create_model(cfg, checkpoint=ckpt, depth=int(TINY_DEPTH))
    pre = model.backbone.preprocess
    x = preprocess(Image.open(path), size=32, mean=pre.mean, std=pre.std, interpolation=pre.interpolation)
    sims = model.heatmaps(x[None], ["cat"])  # (1, 1, 32, 32)
    expected = F.interpolate(sims, size=(30, 40), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(np.load(out / "a.png" / "heatmap-01-cat.npy"), expected, atol=1e-5)


def test_text_is_encoded_once_per_run(tmp_path, capsys, tiny_model_files, monkeypatch):
    from gemseg.model import GEMModel

    calls = []
    original = GEMModel.encode_text
    monkeypatch.setattr(GEMModel, "encode_text", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    r = run_cli(capsys, "heatmap", *paths, "-p", "cat", "-p", "dog", "-o", tmp_path / "out", "-q",
                *model_args(tiny_model_files))
    assert r.code == 0 and len(calls) == 1


def test_batches_give_the_same_maps(tmp_path, capsys, tiny_model_files):
    paths = [write_image(tmp_path / f"{i}.png", (20 + 4 * i, 30), seed=i) for i in range(3)]
    for bs in (1, 2):
        r = run_cli(capsys, "heatmap", *paths, "-p", "cat", "--save-raw", "--batch-size", bs,
                    "-o", tmp_path / f"bs{bs}", *model_args(tiny_model_files))
        assert r.code == 0, r.err
    for i in range(3):
        a = np.load(tmp_path / "bs1" / f"{i}.png" / "heatmap-01-cat.npy")
        b = np.load(tmp_path / "bs2" / f"{i}.png" / "heatmap-01-cat.npy")
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_non_ascii_prompt(tmp_path, capsys, tiny_model_files):
    path = write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", path, "-p", "猫", "-p", "Café crème", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    rec = record(out, "a.png")
    assert [p["prompt"] for p in rec["prompts"]] == ["猫", "Café crème"]
    assert [p["files"]["heatmap"] for p in rec["prompts"]] == ["heatmap-01.png", "heatmap-02-cafe-creme.png"]
    assert '"猫"' in (out / "a.png" / "record.json").read_text(encoding="utf-8")  # UTF-8, not escaped


def test_long_prompt_is_truncated_with_a_warning(tmp_path, capsys, tiny_model_files):
    path = write_image(tmp_path / "a.png")
    long = " ".join(["word"] * 40)  # the tiny text encoder holds 16 tokens
    r = run_cli(capsys, "heatmap", path, "-p", long, "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 0
    assert "gemseg: warning:" in r.err and "truncated" in r.err


def test_duplicate_prompts_are_used_once(tmp_path, capsys, tiny_model_files):
    path = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", path, "-p", "cat", "-p", " cat ", "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 0 and "more than once" in r.err
    assert [p["prompt"] for p in record(tmp_path / "out", "a.png")["prompts"]] == ["cat"]


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_refused(tmp_path, capsys, tiny_model_files, prompt):
    path = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", path, "-p", "cat", "-p", prompt, "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 2
    assert r.err.strip() == "gemseg: error: prompt 2 is empty; remove it or give it text"
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_templates_file_and_bad_template(tmp_path, capsys, tiny_model_files):
    path = write_image(tmp_path / "a.png")
    tfile = tmp_path / "t.txt"
    tfile.write_text("# my templates\na photo of a {}.\n\nan image of {}\n", encoding="utf-8")
    r = run_cli(capsys, "heatmap", path, "-p", "cat", "--templates", tfile, "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert record(tmp_path / "out", "a.png")["templates"] == ["a photo of a {}.", "an image of {}"]
    r = run_cli(capsys, "heatmap", path, "-p", "cat", "--template", "no slot here", "-o", tmp_path / "o2",
                *model_args(tiny_model_files))
    assert r.code == 2 and "has no '{}'" in r.err and "Traceback" not in r.err


def test_random_weights_are_said_loudly(tmp_path, capsys, tiny_model_files):
    path = write_image(tmp_path / "a.png", (40, 30))
    cfg = open_clip_config(tiny_model_files)
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", path, "-p", "cat", "-o", out, "--model", cfg, "--random-weights",
                "--depth", TINY_DEPTH, "--size", "32")
    assert r.code == 0, r.err
    assert "RANDOM WEIGHTS" in r.err
    assert record(out, "a.png")["random_weights"] is True and run_json(out)["random_weights"] is True
    fig = Image.open(out / "a.png" / "heatmap-01-cat.png").convert("RGB")
    assert fig.getpixel((fig.width - 1, 1)) == (200, 0, 0)  # the red banner across the top
    for folder in (out, tmp_path / "again"):
        r = run_cli(capsys, "heatmap", path, "-p", "cat", "-o", folder, "--model", cfg, "--random-weights",
                    "--depth", TINY_DEPTH, "--size", "32", "--save-raw", "--overwrite")
        assert r.code == 0
    again = tmp_path / "again"
    np.testing.assert_array_equal(np.load(out / "a.png" / "heatmap-01-cat.npy"),
                                  np.load(again / "a.png" / "heatmap-01-cat.npy"))  # seeded: repeatable


def test_slugs_and_names():
    assert slug("Remote Control!") == "remote-control" and slug("猫") == "" and slug("Ça va") == "ca-va"
    assert heatmap_names(["a", "猫", "b c"]) == ["heatmap-01-a", "heatmap-02", "heatmap-03-b-c"]
    assert heatmap_names(["x"] * 100)[-1] == "heatmap-100-x"

