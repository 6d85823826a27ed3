"""Helpers for the CLI tests: run ``gemseg`` in-process, tiny model arguments, test images."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from gemseg.cli import main

TINY_DEPTH = "3"  # the tiny models have 4 blocks
TINY_SIZE = "32"  # model input: a 4x4 patch grid


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys, *argv: str) -> Result:
    """``gemseg ARGV`` in this process; argparse's SystemExit becomes the exit code."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def model_args(files: dict, backend: str = "open_clip") -> list[str]:
    """--model/--checkpoint for a tiny model from the ``tiny_model_files`` fixture (skips, saying why,
    when the backend is not installed)."""
    if backend not in files:
        pytest.skip(f"the {backend} backend is not installed")
    if backend == "open_clip":
        cfg, ckpt = files["open_clip"]
        return ["--model", cfg, "--checkpoint", ckpt, "--depth", TINY_DEPTH, "--size", TINY_SIZE, "--device", "cpu"]
    return ["--model", files["hf"], "--depth", TINY_DEPTH, "--size", TINY_SIZE, "--device", "cpu"]


def open_clip_config(files: dict) -> str:
    """The tiny open_clip config .json (skips, saying why, without open_clip)."""
    if "open_clip" not in files:
        pytest.skip("the open_clip backend is not installed")
    return files["open_clip"][0]


def write_image(path, size=(40, 30), *, seed: int = 0, mode: str = "RGB", **save_kw) -> str:
    """A random image of ``size`` (width, height) saved at ``path``; returns the path as a string."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode != "RGB":
        im = im.convert(mode)
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    im.save(path, **save_kw)
    return path


def record(out_dir, key: str) -> dict:
    with open(os.path.join(str(out_dir), *key.split("/"), "record.json"), encoding="utf-8") as f:
        return json.load(f)


def run_json(out_dir) -> dict:
    with open(os.path.join(str(out_dir), "run.json"), encoding="utf-8") as f:
        return json.load(f)


def tree(out_dir) -> set[str]:
    """Every file under ``out_dir``, relative, with '/' separators."""
    root = str(out_dir)
    return {os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            for d, _, files in os.walk(root) for f in files}
