"""The gem-torch compatibility layer: same calls, reference bugs fixed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import gemseg
import gemseg.compat as gem
from conftest import HAS_OPEN_CLIP

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")


@pytest.fixture(scope="module")
def wrapper(tiny_model_files):
    cfg, ckpt = tiny_model_files["open_clip"]
    return gem.create_gem_model(cfg, ckpt, 3, 2, None, device="cpu")


def test_create_gem_model_positional_arguments_map_to_gem_settings(wrapper):
    cfg = wrapper.gem.config
    assert (cfg.depth, cfg.iterations, cfg.temperature) == (3, 2, None)
    assert wrapper.depth == 3 and wrapper.patch_size == 8


def test_forward_matches_native_api_and_accepts_batches(wrapper):
    images = torch.randn(2, 3, 32, 48)
    out = wrapper(images, ["cat", "dog"], normalize=False)
    assert out.shape == (2, 2, 32, 48)
    assert torch.equal(out, wrapper.gem.heatmaps(images, ["cat", "dog"]))
    norm = wrapper(images, ["cat", "dog"])
    assert float(norm.min()) == 0.0 and abs(float(norm.max()) - 1.0) < 1e-6


def test_batched_forward_has_forward_scale_and_ragged_prompt_lists(wrapper):
    images = torch.randn(2, 3, 32, 32)
    outs = wrapper.batched_forward(images, [["cat"], ["dog", "cat", "car"]], normalize=False)
    assert [tuple(o.shape) for o in outs] == [(1, 32, 32), (3, 32, 32)]
    assert torch.allclose(outs[1][1], wrapper(images[1:], ["cat"], normalize=False)[0, 0], atol=1e-5)
    assert float(outs[0].abs().max()) <= 1.0  # cosine similarities, not x100 logits
    with pytest.raises(ValueError, match="one list per image"):
        wrapper.batched_forward(images, [["cat"]])


def test_unknown_gem_torch_options_are_rejected_and_ignored_ones_warned(tiny_model_files):
    cfg, ckpt = tiny_model_files["open_clip"]
    with pytest.warns(UserWarning, match="ignores jit"):
        gem.create_gem_model(cfg, ckpt, gem_depth=2, jit=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        gem.create_gem_model(cfg, ckpt, gem_depth=2, colour="red")


def test_img_transform_needs_no_torchvision_and_matches_preprocess():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    x = gem.get_gem_img_transform()(img)
    assert x.shape == (3, 448, 448)
    assert torch.equal(x, gemseg.preprocess(img, size=448))
    short = gem.get_gem_img_transform(img_size=30)(img)
    assert short.shape == (3, 30, 45)  # an int resizes the short side, as torchvision's Resize does


def test_available_models_lists_reference_pairs():
    models = gem.available_models()
    assert "ViT-B/16: openai" in models and "ViT-L/14-336: openai" in models and len(models) == 22


def test_visualize_returns_overlays_and_writes_files_without_a_window(wrapper, tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 24, 3), dtype=np.uint8))
    x = gem.get_gem_img_transform(img_size=(32, 48))(img)[None]
    logits = wrapper(x, ["cat", "remote control"])
    overlays = gem.visualize(img, ["cat", "remote control"], logits, save_path=str(tmp_path))
    assert [o.size for o in overlays] == [img.size, img.size]  # the picture's own size: aspect kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap_cat.png", "heatmap_remote_control.png"]
    from_tensor = gem.visualize(x, ["cat", "remote control"], logits[0])
    assert from_tensor[0].size == (48, 32)
    assert not np.array_equal(np.asarray(overlays[0]), np.asarray(overlays[1]))
    with pytest.raises(TypeError, match="PIL image or a torch.Tensor"):
        gem.visualize("img.png", ["cat"], logits[:, :1])


def test_visualize_keeps_the_aspect_ratio_and_marks_random_weights(wrapper, tiny_model_files):
    """visualize squashed a 24x40 picture into the 48x32 heatmap and never said the model was random."""
    import warnings

    img = Image.fromarray(np.full((40, 24, 3), 128, dtype=np.uint8))  # (H, W) = (40, 24): portrait
    x = gem.get_gem_img_transform(img_size=(32, 48))(img)[None]  # the model sees it squashed
    logits = wrapper(x, ["cat"])
    (trained,) = gem.visualize(img, ["cat"], logits, model=wrapper)
    assert trained.size == (24, 40)
    cfg, _ = tiny_model_files["open_clip"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random weights.*")
        random_model = gem.create_gem_model(cfg, None, 3, 1, None, device="cpu")
    (marked,) = gem.visualize(img, ["cat"], random_model(x, ["cat"]), model=random_model)
    assert marked.width == 24 and marked.height > 40  # the banner strip on top
    assert marked.getpixel((1, 1)) == (200, 0, 0)  # viz.banner's red
