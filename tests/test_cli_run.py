"""What every image command shares: bad input, resume and skip, output layout, progress, exit codes."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from cli_util import model_args, open_clip_config, record, run_cli, run_json, tree, write_image
from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS
from gemseg.cli import build_parser


def _png_header(w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _good_and_bad_inputs(folder) -> tuple[dict, dict]:
    """Images every command must read (name -> upright (w, h)) and files it must refuse (name -> reason)."""
    folder = str(folder)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    good = {}

    def save(name, im, **kw):
        im.save(os.path.join(folder, name), **kw)
        good[name] = (40, 30)

    save("rgb.png", Image.fromarray(rgb))
    save("gray.png", Image.fromarray(rgb[..., 0]))
    save("gray16.png", Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)))
    save("palette.png", Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE))
    save("palette_alpha.png", Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE), transparency=0)
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    save("rgba.png", Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (30, 40), dtype=np.uint8)])))
    save("la.png", Image.fromarray(rgb).convert("LA"))
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(os.path.join(folder, "exif.jpg"), exif=exif)
    good["exif.jpg"] = (30, 40)
    bad = {}
    with open(os.path.join(folder, "empty.png"), "wb"):
        bad["empty.png"] = "empty file"
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image")
        bad["notes.txt"] = "not an image"
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with open(os.path.join(folder, "truncated.jpg"), "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        bad["truncated.jpg"] = "truncated"
    with open(os.path.join(folder, "zero.png"), "wb") as f:
        f.write(_png_header(0, 12))
        bad["zero.png"] = "zero-sized image (0x12)"
    with open(os.path.join(folder, "bomb.png"), "wb") as f:
        f.write(_png_header(20000, 20000))
        bad["bomb.png"] = "400.0 megapixels is over the limit of 100 megapixels"
    return good, bad


@pytest.mark.parametrize("command, extra", [("heatmap", ["-p", "cat"]), ("segment", ["-c", "cat,dog"])])
def test_bad_input_loses_nothing(tmp_path, capsys, tiny_model_files, command, extra):
    good, bad = _good_and_bad_inputs(tmp_path)
    files = [str(tmp_path / n) for n in sorted(good) + sorted(bad)]
    out = tmp_path / "out"
    r = run_cli(capsys, command, *files, str(tmp_path / "missing.png"), *extra, "-o", out,
                *model_args(tiny_model_files))
    assert r.code == 1  # something failed
    assert "Traceback" not in r.err
    for name, reason in bad.items():
        lines = [line for line in r.err.splitlines() if f"{name}:" in line and "error" in line]
        assert len(lines) == 1 and reason in lines[0], (name, r.err)
        assert not (out / name).exists()
    assert "missing.png: no such file or folder" in r.err
    for name, size in good.items():
        rec = record(out, name)
        assert (rec["width"], rec["height"]) == size, name
        assert rec["original_mode"] == Image.open(tmp_path / name).mode
    summary = run_json(out)["last_run"]
    assert (summary["done"], summary["failed"], summary["skipped"]) == (len(good), len(bad) + 1, 0)
    assert {os.path.basename(f["input"]) for f in summary["failures"]} == set(bad) | {"missing.png"}


def test_pixel_limit_option(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png", (40, 30))
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--max-pixels", "0.001", "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 1 and "over the limit of 0.001 megapixels" in r.err and "--max-pixels" in r.err


def test_resume_skips_finished_images(tmp_path, capsys, tiny_model_files):
    paths = [write_image(tmp_path / "in" / f"{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "out"
    argv = ["segment", *paths, "-c", "cat,dog", "-o", out, *model_args(tiny_model_files)]
    assert run_cli(capsys, *argv).code == 0
    stamp = {k: os.path.getmtime(out / k / "labels.png") for k in ("0.png", "1.png", "2.png")}
    os.remove(out / "1.png" / "overlay.png")  # an unfinished image: one of its files is missing
    r = run_cli(capsys, *argv)
    assert r.code == 0 and "1 done, 0 failed, 2 skipped" in r.err
    assert os.path.getmtime(out / "0.png" / "labels.png") == stamp["0.png"]
    assert (out / "1.png" / "overlay.png").exists()
    assert run_json(out)["last_run"]["skipped"] == 2
    r = run_cli(capsys, *argv, "--overwrite")
    assert r.code == 0 and "3 done, 0 failed, 0 skipped" in r.err


def test_results_of_other_settings_are_not_overwritten(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    assert run_cli(capsys, "segment", a, "-c", "cat", "-o", out, *model_args(tiny_model_files)).code == 0
    before = (out / "a.png" / "record.json").read_text()
    r = run_cli(capsys, "segment", a, "-c", "dog", "-o", out, *model_args(tiny_model_files))
    assert r.code == 2 and "other settings (classes)" in r.err and "--overwrite" in r.err
    assert (out / "a.png" / "record.json").read_text() == before
    r = run_cli(capsys, "heatmap", a, "-p", "dog", "-o", out, *model_args(tiny_model_files))
    assert r.code == 2 and "`gemseg segment`" in r.err
    r = run_cli(capsys, "segment", a, "-c", "dog", "-o", out, "--overwrite", *model_args(tiny_model_files))
    assert r.code == 0 and record(out, "a.png")["found"] in (["dog"], [])
    assert run_json(out)["settings"]["classes"] == ["dog"]


def test_folders_globs_and_recursive_layout(tmp_path, capsys, tiny_model_files):
    write_image(tmp_path / "photos" / "a.png", seed=1)
    write_image(tmp_path / "photos" / "trip" / "b.jpg", seed=2)
    write_image(tmp_path / "other" / "a.png", seed=3)
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", tmp_path / "photos", f"{tmp_path}/other/*.png", "-r", "-p", "cat", "-o", out,
                "-q", *model_args(tiny_model_files))
    assert r.code == 0, r.err
    # photos/a.png and other/a.png share a name: their keys keep the folder that tells them apart
    assert {p.rsplit("/", 1)[0] for p in tree(out) if p.endswith("record.json")} == \
        {"photos/a.png", "other/a.png", "trip/b.jpg"}


def test_image_named_like_a_run_file(tmp_path, capsys, tiny_model_files):
    img = write_image(tmp_path / "legend.png")
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", img, "-c", "cat", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert (out / "legend.png").is_file() and (out / "_legend.png" / "labels.png").is_file()
    assert record(out, "_legend.png")["key"] == "legend.png"


def test_no_images_at_all(tmp_path, capsys, tiny_model_files):
    r = run_cli(capsys, "heatmap", tmp_path / "nothing", "-p", "cat", "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 2
    assert r.err.splitlines() == [f"gemseg: error: {tmp_path / 'nothing'}: no such file or folder",
                                  "gemseg: error: no images to process"]


def test_unwritable_output_folder(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "-o", tmp_path / "file" / "out", *model_args(tiny_model_files))
    assert r.code == 2 and r.err.startswith("gemseg: error: cannot write to output folder")
    assert len(r.err.strip().splitlines()) == 1


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_unknown_model_suggests_close_matches(tmp_path, capsys):
    a = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--model", "ViT-B-61", "-o", tmp_path / "out")
    assert r.code == 2
    assert r.err.strip().splitlines()[-1].startswith("gemseg: error: unknown open_clip model 'ViT-B-61'; did you mean")
    assert "ViT-B-16" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("model", [
    pytest.param(["--model", "ViT-B-32", "--pretrained", "openai"],
                 marks=pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")),
    pytest.param(["--model", "openai/clip-vit-base-patch32"],
                 marks=pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed"))])
def test_missing_weights_offline_say_how_to_provide_them(tmp_path, capsys, model):
    a = write_image(tmp_path / "a.png")
    r = run_cli(capsys, "heatmap", a, "-p", "cat", *model, "--cache-dir", tmp_path / "empty-cache",
                "-o", tmp_path / "out")
    assert r.code == 2
    last = r.err.strip().splitlines()[-1]
    # a hub id offline misses its config first (tests/test_cli_first_run.py has the wording)
    assert last.startswith(("gemseg: error: cannot load weights", "gemseg: error: cannot load the model config"))
    assert "HF_HUB_OFFLINE=1" in last
    assert "--checkpoint" in last or "save_pretrained" in last
    assert "Traceback" not in r.err


@pytest.mark.parametrize("argv, message", [
    (["--random-weights", "--checkpoint", "x.pt"], "--random-weights contradicts"),
    (["--size", "0"], "expected N or HxW"),
    (["--batch-size", "0"], "expected a positive integer"),
    (["--font", "/no/such/font.ttf"], "cannot load font /no/such/font.ttf"),
    (["--random-weights", "--depth", "3", "--size", "4x64"], "--size 4x64 is smaller than one 8x8 patch"),
])
def test_contradictory_or_bad_options(tmp_path, capsys, tiny_model_files, argv, message):
    a = write_image(tmp_path / "a.png")
    cfg = open_clip_config(tiny_model_files)
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--model", cfg, *argv, "-o", tmp_path / "out")
    assert r.code == 2 and message in r.err


def test_config_without_weights_is_refused(tmp_path, capsys, tiny_model_files):
    a = write_image(tmp_path / "a.png")
    cfg = open_clip_config(tiny_model_files)
    r = run_cli(capsys, "heatmap", a, "-p", "cat", "--model", cfg, "-o", tmp_path / "out")
    assert r.code == 2 and "add --checkpoint PATH (or --random-weights for a demo)" in r.err


def test_progress_bar_and_summary(tmp_path, capsys, tiny_model_files):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    r = run_cli(capsys, "heatmap", *paths, "-p", "cat", "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 0
    assert "img/s" in r.err and "2/2" in r.err  # tqdm: count, rate and ETA
    assert "heatmap: 2 image(s): 2 done, 0 failed, 0 skipped" in r.err


def test_quiet_prints_nothing_but_errors(tmp_path, capsys, tiny_model_files):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    r = run_cli(capsys, "segment", *paths, "-c", "cat", "-q", "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert (r.code, r.out, r.err) == (0, "", "")
    (tmp_path / "bad.png").write_bytes(b"")
    r = run_cli(capsys, "segment", *paths, tmp_path / "bad.png", "-c", "cat", "-q", "-o", tmp_path / "out",
                *model_args(tiny_model_files))
    assert r.code == 1 and r.err == f"gemseg: error: {tmp_path / 'bad.png'}: empty file (0 bytes)\n"


def test_one_failing_image_in_a_batch(tmp_path, capsys, tiny_model_files, monkeypatch):
    """A model error on one image fails that image only, even inside a batch."""
    import gemseg.cli.heatmap as heatmap

    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    original = heatmap.similarity_maps

    def flaky(model, items, text, size):
        if any(it.source.key == "1.png" for it in items):
            raise RuntimeError("simulated out of memory")
        return original(model, items, text, size)

    monkeypatch.setattr(heatmap, "similarity_maps", flaky)
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", *paths, "-p", "cat", "--batch-size", "3", "-o", out, *model_args(tiny_model_files))
    assert r.code == 1
    assert f"gemseg: error: {paths[1]}: RuntimeError: simulated out of memory" in r.err
    assert {p.split("/")[0] for p in tree(out) if p.endswith("record.json")} == {"0.png", "2.png"}


def test_interrupt_keeps_finished_images(tmp_path, capsys, tiny_model_files, monkeypatch):
    import gemseg.cli.run as run

    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    original = run.load_image

    def interrupted(path, **kw):
        if path.endswith("1.png"):
            raise KeyboardInterrupt
        return original(path, **kw)

    monkeypatch.setattr(run, "load_image", interrupted)
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", *paths, "-p", "cat", "-o", out, *model_args(tiny_model_files))
    assert r.code == 130 and "interrupted" in r.err
    assert (out / "0.png" / "record.json").exists() and not (out / "2.png").exists()
    assert run_json(out)["last_run"]["interrupted"] is True


@pytest.mark.parametrize("command", ["heatmap", "segment", "models"])
def test_help_on_every_command(capsys, command):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gemseg {command}") and "examples:" in text


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
def test_console_entry_exit_codes(tmp_path):
    """Through a real process: a one-line error, no traceback, a non-zero exit code."""
    a = write_image(tmp_path / "a.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "gemseg.cli", "heatmap", a, "-p", "cat", "--model", "ViT-B-61",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("gemseg: error: unknown open_clip model") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("choice, note", [("white", "transparent pixels composited on (255, 255, 255)"),
                                          ("black", "transparent pixels composited on (0, 0, 0)"),
                                          ("drop", "alpha channel dropped")])
def test_transparency_option(tmp_path, capsys, tiny_model_files, choice, note):
    arr = np.zeros((16, 16, 4), dtype=np.uint8)
    arr[..., 3] = 0  # fully transparent
    Image.fromarray(arr).save(tmp_path / "t.png")
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", tmp_path / "t.png", "-p", "cat", "--transparency", choice, "-o", out,
                *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert record(out, "t.png")["notes"] == [note]
