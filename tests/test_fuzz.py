"""Property-based fuzzing of the readers that take user files (issue 16): images, checkpoints, open_clip
model configs, prompt templates and split files. Whatever the bytes, a reader returns a valid result or
raises its one-line ``ValueError`` (``FileNotFoundError`` for missing files); any other exception is a bug.

Budget: each test has a small ``max_examples`` so that all of them together run in well under 30 s on
one core; ``deadline=None`` because a loaded CI machine makes single examples slow.
"""
from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import HAS_OPEN_CLIP, TINY_OPEN_CLIP

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _valid_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(8 * 6 * 3, dtype=np.uint8).reshape(6, 8, 3)).save(buf, format="PNG")
    return buf.getvalue()


def _valid_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(8 * 6 * 3, dtype=np.uint8).reshape(6, 8, 3)).save(buf, format="JPEG")
    return buf.getvalue()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file with some bytes overwritten, a cut, or junk appended (or random bytes)."""
    data = bytearray(draw(st.sampled_from(seeds)) if draw(st.booleans()) else draw(st.binary(max_size=200)))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=16))


@settings(FUZZ, max_examples=80)
@given(mutated([_valid_png(), _valid_jpeg()]))
def test_image_reader_returns_rgb_or_one_line_error(data):
    from gemseg.io import ImageLoadError, load_image

    try:
        loaded = load_image(data, max_pixels=10_000_000)
    except ImageLoadError as e:
        assert "\n" not in str(e)
        return
    assert loaded.image.mode == "RGB" and min(loaded.image.size) >= 1


def _write_temp(data: bytes, suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _valid_checkpoints() -> list[bytes]:
    from safetensors.torch import save as save_safetensors

    state = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(2, dtype=torch.int64)}
    buf = io.BytesIO()
    torch.save(state, buf)
    return [save_safetensors(state), buf.getvalue()]


@settings(FUZZ, max_examples=60)
@given(mutated(_valid_checkpoints()), st.sampled_from([".safetensors", ".pt"]))
def test_checkpoint_reader_returns_tensors_or_one_line_error(data, suffix):
    from gemseg.backbones.weights import load_state_dict

    path = _write_temp(data, suffix)
    try:
        state = load_state_dict(path)
    except ValueError as e:
        assert path in str(e) and "\n" not in str(e)
        return
    finally:
        os.remove(path)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10 ** 12), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.integers(-2, 300), max_size=3))
_VISION_KEYS = ["layers", "width", "head_width", "patch_size", "image_size", "mlp_ratio", "wdith", "ls_init_value"]
_TEXT_KEYS = ["context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "eos_id"]


@st.composite
def model_configs(draw):
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    for section, keys in (("vision_cfg", _VISION_KEYS), ("text_cfg", _TEXT_KEYS)):
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            cfg[section][key] = draw(_VALUES)
    if draw(st.booleans()):
        cfg["embed_dim"] = draw(_VALUES)
    if draw(st.integers(0, 9)) == 0:
        cfg = draw(st.one_of(_VALUES, st.just({"vision_cfg": 3})))
    return cfg


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
@settings(FUZZ, max_examples=120)
@given(model_configs())
def test_model_config_reader_accepts_or_refuses_in_one_line(cfg):
    import open_clip

    from gemseg.backbones.model_config import read_open_clip_config

    path = _write_temp(json.dumps(cfg).encode(), ".json")
    try:
        checked = read_open_clip_config(path, open_clip)
    except ValueError as e:
        assert path in str(e) and "\n" not in str(e)
        return
    finally:
        os.remove(path)
    vision = checked["vision_cfg"]
    assert all(isinstance(vision.get(k, 1), int) and vision.get(k, 1) >= 1 for k in ("width", "patch_size", "layers"))


@settings(FUZZ, max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("{}a :!label0sr>")), max_size=14))
def test_template_check_and_fill_agree(template):
    from gemseg.templates import check_template, fill

    try:
        check_template(template)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    filled = fill(template, "zebra")
    assert filled.count("zebra") == 1


@settings(FUZZ, max_examples=150)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab./\\ \t\x00\x1b")), max_size=8), max_size=6))
def test_split_reader_never_gives_an_id_outside_the_root(lines):
    import warnings
    from pathlib import Path

    from gemseg.eval.datasets import read_split

    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.txt"
        split.write_text("\n".join(lines), encoding="utf-8")
        root = os.path.realpath(tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ids = read_split(split)
        except ValueError as e:
            assert "\n" not in str(e)
            return
        assert len(ids) == len(set(ids))
        for image_id in ids:
            target = os.path.normpath(os.path.join(root, "JPEGImages", image_id + ".jpg"))
            assert target.startswith(os.path.join(root, "JPEGImages") + os.sep)
