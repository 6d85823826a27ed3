"""Hostile input and faults for the image commands (issue 16): results are replaced atomically and a
damaged result is never taken as finished, nothing is written outside -o, link loops end, run-level
names are not taken by input folders, pipes are refused, long titles are quick. Every hostile file is
built here, in tmp_path."""
from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

from cli_util import model_args, record, run_cli, tree, write_image
from gemseg.io import find_images


def _listed_files_decode(out) -> list[str]:
    """Every picture some record.json lists, opened fully; returns the ones that do not decode."""
    broken = []
    for rel in sorted(tree(out)):
        if not rel.endswith("record.json"):
            continue
        folder = os.path.join(str(out), os.path.dirname(rel))
        rec = json.loads(open(os.path.join(folder, "record.json"), encoding="utf-8").read())
        names = list(rec["files"].values()) + [f for p in rec.get("prompts", []) for f in p["files"].values()]
        for name in names:
            if name.endswith(".png"):
                try:
                    with Image.open(os.path.join(folder, name)) as im:
                        im.load()
                except OSError:
                    broken.append(os.path.join(folder, name))
    return broken


@pytest.mark.parametrize("command, extra", [("heatmap", ["-p", "cat", "-p", "dog"]), ("segment", ["-c", "cat,dog"])])
def test_an_interrupted_overwrite_never_leaves_a_listed_file_truncated(tmp_path, capsys, tiny_model_files,
                                                                       monkeypatch, command, extra):
    """Ctrl-C while a picture is half written (--overwrite over finished results): the next run must not
    skip an image whose listed picture is broken."""
    import importlib

    module = importlib.import_module(f"gemseg.cli.{command}")
    paths = [write_image(tmp_path / f"img{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out"
    argv = [command, *paths, *extra, "-o", out, *model_args(tiny_model_files)]
    assert run_cli(capsys, *argv).code == 0
    original, calls = module.save_png, []

    def half_written(image, path, **kw):  # writes half of a valid PNG, then the user presses Ctrl-C
        calls.append(path)
        if len(calls) == 2:
            original(image, path, **kw)
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            raise KeyboardInterrupt
        original(image, path, **kw)

    monkeypatch.setattr(module, "save_png", half_written)
    assert run_cli(capsys, *argv, "--overwrite").code == 130
    monkeypatch.setattr(module, "save_png", original)
    assert _listed_files_decode(out) == []
    assert run_cli(capsys, *argv).code == 0  # resumes: whatever is skipped decodes, the rest is redone
    assert _listed_files_decode(out) == []
    assert not [p for p in tree(out) if ".gemseg-tmp" in p]  # no staging folder left behind


def test_a_damaged_result_is_redone_not_skipped(tmp_path, capsys, tiny_model_files):
    paths = [write_image(tmp_path / f"img{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out"
    argv = ["heatmap", *paths, "-p", "cat", "-o", out, *model_args(tiny_model_files)]
    assert run_cli(capsys, *argv).code == 0
    picture = out / "img0.png" / record(out, "img0.png")["prompts"][0]["files"]["heatmap"]
    picture.write_bytes(picture.read_bytes()[:100])  # truncated behind gemseg's back
    r = run_cli(capsys, *argv)
    assert r.code == 0 and "1 done" in r.err and "1 skipped" in r.err
    assert _listed_files_decode(out) == []


def test_a_crash_between_moving_files_and_the_record_means_not_finished(tmp_path, capsys, tiny_model_files,
                                                                        monkeypatch):
    import gemseg.cli.output as output

    path = write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = ["segment", path, "-c", "cat", "-o", out, *model_args(tiny_model_files)]
    assert run_cli(capsys, *argv).code == 0
    real_replace, moves = os.replace, []

    def crash_after_first_move(src, dst):
        if os.path.basename(os.path.dirname(str(src))).startswith(".gemseg-tmp"):  # out of a staging folder
            moves.append(dst)
            if len(moves) == 2:
                raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", crash_after_first_move)
    assert run_cli(capsys, *argv, "--overwrite", "--opacity", "0.9").code == 130
    monkeypatch.setattr(output.os, "replace", real_replace)
    assert not (out / "a.png" / "record.json").exists()  # half replaced: not finished
    r = run_cli(capsys, *argv, "--overwrite", "--opacity", "0.9")
    assert r.code == 0 and "1 done" in r.err and _listed_files_decode(out) == []


def test_a_glob_that_climbs_out_with_dotdot_writes_inside_the_output_folder(tmp_path, capsys, tiny_model_files,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("k/gl/d1")
    write_image("k/src/a.png")
    r = run_cli(capsys, "segment", "k/gl/d*/../../src/*.png", "-c", "cat", "-o", "k/gl/out",
                *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert tree("k/src") == {"a.png"}  # nothing written beside the input
    assert "a.png/record.json" in tree("k/gl/out")


def test_keys_that_leave_the_output_folder_are_refused():
    from gemseg.cli.output import Layout

    layout = Layout("out", "segment", {})
    for key in ("../x.png", "a/../../x.png", "/etc/x.png", "a//b.png", "./a.png", ""):
        with pytest.raises(ValueError, match="would leave the output folder"):
            layout.image_dir(key)


def test_glob_with_two_symlink_loops_ends_and_lists_each_file_once(tmp_path):
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "b").mkdir()
    write_image(tmp_path / "t" / "a" / "x.png")
    write_image(tmp_path / "t" / "y.png")
    os.symlink("..", tmp_path / "t" / "a" / "up")
    os.symlink("..", tmp_path / "t" / "b" / "up")
    start = time.perf_counter()
    found = find_images([str(tmp_path / "t" / "**" / "*.png")], recursive=True)
    assert time.perf_counter() - start < 10
    assert sorted(s.key for s in found.sources) == ["a/x.png", "y.png"]
    assert not any("more than once" in n for n in found.notes)
    assert all(len(n) < 300 for n in found.notes)


@pytest.mark.parametrize("folder", ["run.json", "legend.png", "_run.json"])
def test_input_subfolders_named_like_run_files_get_a_prefix(tmp_path, capsys, tiny_model_files, folder):
    src = tmp_path / "in"
    write_image(src / folder / "a.png")
    write_image(src / "b.png", seed=1)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", src, "-r", "-c", "cat", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    files = tree(out)
    assert {"run.json", "legend.png", f"_{folder}/a.png/record.json", "b.png/record.json"} <= files
    assert json.loads((out / "run.json").read_text())["command"] == "segment"
    Image.open(out / "legend.png").load()  # the run-level legend is a picture, not a folder


def test_a_fifo_given_by_name_is_refused_in_one_line(tmp_path, capsys, tiny_model_files):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    good = write_image(tmp_path / "good.png")
    r = run_cli(capsys, "segment", fifo, good, "-c", "cat", "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 1
    assert f"{fifo}: not a regular file" in r.err and "no such file" not in r.err and "Traceback" not in r.err


def test_a_fifo_inside_a_folder_is_refused_without_blocking(tmp_path):
    from gemseg.io import ImageLoadError, load_image

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path / "pipe.png")


def test_a_10000_character_prompt_title_is_shortened_quickly(tmp_path, capsys, tiny_model_files):
    path = write_image(tmp_path / "a.png", size=(400, 300))
    start = time.perf_counter()
    r = run_cli(capsys, "heatmap", path, "-p", "x" * 10_000, "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 0, r.err
    assert time.perf_counter() - start < 30  # one character at a time took minutes


def test_fit_text_measures_logarithmically_often(monkeypatch):
    from gemseg import viz

    font = viz.get_font(16)
    calls = []
    real = viz.text_box

    def counting(text, f):
        calls.append(len(text))
        return real(text, f)

    monkeypatch.setattr(viz, "text_box", counting)
    text = viz.fit_text("abcdefghij" * 1000, font, 200)
    assert real(text, font)[0] <= 200 and text.endswith("…")
    assert real(("abcdefghij" * 1000)[: len(text)] + "…", font)[0] > 200  # one more character would not fit
    assert len(calls) <= 20


def test_segment_random_weights_are_seeded(tmp_path, capsys, tiny_model_files):
    import torch

    path = write_image(tmp_path / "a.png")
    cfg = tiny_model_files["open_clip"][0]
    labels = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # whatever the global random state was before, the model must be the same
        out = tmp_path / f"out{seed}"
        r = run_cli(capsys, "segment", path, "-c", "cat,dog", "--background", "none", "-o", out, "--model", cfg,
                    "--random-weights", "--depth", "3", "--size", "32", "--device", "cpu")
        assert r.code == 0, r.err
        labels.append((out / "a.png" / "labels.png").read_bytes())
    assert labels[0] == labels[1]


def test_an_escaping_key_fails_that_image_only(tmp_path, capsys, tiny_model_files, monkeypatch):
    import gemseg.cli.run as run
    from gemseg.io import ImageSource

    good, bad = write_image(tmp_path / "good.png"), write_image(tmp_path / "bad.png", seed=1)
    found = find_images([good, bad])
    found.sources[1] = ImageSource(bad, "../escaped.png")  # defence in depth behind find_images
    monkeypatch.setattr(run, "find_images", lambda *a, **k: found)
    r = run_cli(capsys, "segment", good, bad, "-c", "cat", "-o", tmp_path / "out", *model_args(tiny_model_files))
    assert r.code == 1 and "would leave the output folder" in r.err
    assert not (tmp_path / "escaped.png").exists() and "good.png/record.json" in tree(tmp_path / "out")
