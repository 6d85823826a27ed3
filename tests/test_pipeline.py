"""The one-call entry (gemseg.pipeline): a path, PIL image or array and class names in, labels and one mask
per class out, the same labels as the predictor it is built on."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cli_util import write_image
from conftest import HAS_OPEN_CLIP
from gemseg.pipeline import SegmentationPipeline, pipeline, segment

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")


@pytest.fixture(scope="module")
def pipe(tiny_model_files):
    cfg, ckpt = tiny_model_files["open_clip"]
    return pipeline(cfg, checkpoint=ckpt, device="cpu", size=32, depth=3)


def test_a_path_gives_labels_and_a_mask_per_class(pipe, tmp_path):
    path = write_image(tmp_path / "a.png", (40, 30), seed=3)
    r = pipe(path, ["cat", "dog"], background="none")
    assert r.labels.shape == (30, 40) and r.names == ("background", "cat", "dog")
    assert set(r.masks) == {"cat", "dog"} and all(m.shape == (30, 40) and m.dtype == bool for m in r.masks.values())
    assert np.array_equal(r.masks["cat"], r.labels == 1) and np.array_equal(r.masks["dog"], r.labels == 2)
    assert (r.labels > 0).all()  # background "none": every pixel gets a class
    assert r.probabilities.shape == (3, 30, 40) and r.random_weights is False
    assert set(r.found) == {n for n in ("cat", "dog") if r.masks[n].any()}
    areas = [r.masks[n].sum() for n in r.found]
    assert areas == sorted(areas, reverse=True)


def test_the_same_labels_as_the_predictor_for_every_input_kind(pipe, tmp_path):
    from gemseg import Segmenter

    path = write_image(tmp_path / "b.png", (36, 28), seed=4)
    picture = Image.open(path).convert("RGB")
    want = Segmenter.from_classes(pipe.model, ["cat", "sofa"], size=32).predict(
        [picture], out_size=(28, 36)).labels[0].numpy()
    for image in (path, picture, np.asarray(picture)):
        got = pipe(image, ["cat", "sofa"]).labels
        assert np.array_equal(got, want)  # the same kernels on the same input: bitwise


def test_the_vocabulary_is_encoded_once(pipe, tmp_path, monkeypatch):
    path = write_image(tmp_path / "c.png", seed=5)
    pipe(path, ["cat", "lamp"])
    calls = []
    original = type(pipe.model).encode_text
    monkeypatch.setattr(type(pipe.model), "encode_text", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    pipe(path, ["cat", "lamp"])
    assert calls == []


def test_one_call_keeps_its_model(tiny_model_files, tmp_path):
    cfg, ckpt = tiny_model_files["open_clip"]
    path = write_image(tmp_path / "d.png", seed=6)
    first = segment(path, ["cat"], model=cfg, checkpoint=ckpt, device="cpu", size=32, depth=3)
    import gemseg.pipeline as module

    (kept,) = module._LAST.values()
    second = segment(path, ["cat"], model=cfg, checkpoint=ckpt, device="cpu", size=32, depth=3)
    assert list(module._LAST.values()) == [kept] and np.array_equal(first.labels, second.labels)


def test_bad_inputs_are_one_clear_error(pipe):
    with pytest.raises(TypeError, match="list of names"):
        pipe(np.zeros((8, 8, 3), np.uint8), "cat,dog")
    with pytest.raises(ValueError, match=r"uint8 RGB \[H, W, 3\]"):
        pipe(np.zeros((8, 8), np.float32), ["cat"])
    with pytest.raises(TypeError, match="a path, a PIL image or a uint8 array"):
        pipe(42, ["cat"])


def test_random_weights_say_so(tiny_model_files):
    from gemseg import create_model

    cfg, _ = tiny_model_files["open_clip"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random weights.*")
        torch.manual_seed(0)
        pipe = SegmentationPipeline(create_model(cfg, depth=3), size=32)
    assert pipe(np.full((16, 16, 3), 90, np.uint8), ["cat"]).random_weights is True
