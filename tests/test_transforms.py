"""Preprocessing without torchvision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gemseg import denormalize, preprocess
from gemseg.transforms import preprocess_cv2, resized_size
from gemseg.backbones.base import OPENAI_MEAN, OPENAI_STD


def _img(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_preprocess_normalizes_with_mean_and_std():
    arr = _img()
    x = preprocess(arr, size=None)
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32
    expect = (arr[..., 0] / 255.0 - OPENAI_MEAN[0]) / OPENAI_STD[0]
    assert np.allclose(x[0].numpy(), expect, atol=1e-5)
    assert np.array_equal(denormalize(x), arr)


def test_preprocess_resizes_like_pil_bicubic():
    arr = _img()
    x = preprocess(Image.fromarray(arr), size=(16, 24))
    ref = np.asarray(Image.fromarray(arr).resize((24, 16), Image.BICUBIC))
    assert np.array_equal(denormalize(x), ref)
    assert preprocess(arr, size=12).shape == (3, 12, 12)


def test_lists_batch_and_modes_convert():
    gray = np.full((20, 30), 100, dtype=np.uint8)
    rgba = np.dstack([_img(), np.full((20, 30), 7, np.uint8)])
    batch = preprocess([gray, rgba, Image.fromarray(_img()).convert("L")], size=None)
    assert batch.shape == (3, 3, 20, 30)
    assert torch.allclose(batch[0, 0], batch[0, 1] * OPENAI_STD[1] / OPENAI_STD[0]
                          + (OPENAI_MEAN[1] - OPENAI_MEAN[0]) / OPENAI_STD[0], atol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="different sizes"):
        preprocess([_img(10, 10), _img(12, 10)], size=None)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="PIL image or a numpy array"):
        preprocess(["not an image"])
    with pytest.raises(ValueError, match="no images"):
        preprocess([])
    with pytest.raises(ValueError, match="size must be"):
        preprocess(_img(), size=(0, 4))


def test_protocol_sizes():
    assert resized_size(100, 1000, resize="short_side", size=336, max_long_side=2048) == (205, 2048)
    assert resized_size(100, 1000, resize="short_side", size=50, max_long_side=2048) == (50, 500)
    assert resized_size(300, 200, resize="short_side", size=100) == (150, 100)
    assert resized_size(100, 1000, resize="fixed", size=64) == (64, 64)
    assert resized_size(100, 1000, resize="none", size=64) == (100, 1000)
    with pytest.raises(ValueError, match="resize must be one of fixed, short_side, none"):
        resized_size(10, 10, resize="long_side", size=5)


def test_cv2_style_resize_is_unantialiased_bilinear_on_uint8_values():
    img = _img(30, 40)
    x = preprocess_cv2(img, size=(20, 20))
    ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=(20, 20),
                                          mode="bilinear", align_corners=False, antialias=False).round()
    ref = (ref / 255 - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref)
    torch.testing.assert_close(preprocess_cv2(img), preprocess(img, size=None)[None])  # no resize: same values
    with pytest.raises(ValueError, match=r"expected a uint8 RGB array \[H, W, 3\]"):
        preprocess_cv2(img.astype(np.float32))
