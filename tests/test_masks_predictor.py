"""Masks in the one predictor (gemseg.Segmenter): made once per image, cropped with each sliding window
for corrclip, and the "masks" refiner (CorrCLIP's map correction) after any method."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import tiny_vfm
from gemseg import GEMModel
from gemseg.methods.corrclip import CorrCLIPProxy, map_correction
from gemseg.segmenter import InputRule, Segmenter, slide_windows
from test_corrclip import BoxSource


def pictures(n=2, size=(44, 36)):
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)) for _ in range(n)]


def test_masks_refiner_gives_each_mask_its_most_frequent_label(clip_backbone):
    source = BoxSource()
    model = GEMModel(clip_backbone, method="clearclip", masks=source)
    pics = pictures()
    plain = Segmenter.from_classes(model, ["cat", "dog", "sofa"], background="none", size=(32, 48))
    fixed = Segmenter.from_classes(model, ["cat", "dog", "sofa"], background="none", size=(32, 48), refine="masks")
    want_labels = plain.labels(plain.scores(pics))[0]
    got = fixed.predict(pics)
    assert source.calls == 2  # once per image (the plain predictor needs none)
    regions = torch.stack([BoxSource()(np.zeros((32, 48, 3), np.uint8)).label_map()] * 2)
    for b in range(2):
        assert torch.equal(got.labels[b], map_correction(want_labels[b], regions[b]))
    with pytest.raises(ValueError, match="masks are needed"):
        Segmenter.from_classes(GEMModel(clip_backbone, method="clearclip"), ["cat"], refine="masks").predict(pics)


def test_sliding_windows_crop_the_masks_of_the_whole_image(clip_backbone):
    vfm = tiny_vfm("dino", seed=1, patch_size=4)
    source = BoxSource()
    model = GEMModel(clip_backbone, method="corrclip", proxy=CorrCLIPProxy(vfm), masks=source)
    rule = InputRule(resize="fixed", size=(40, 56), mode="slide", crop=32, stride=16, crop_batch=2)
    seg = Segmenter(model, ["cat", "dog"], [1, 2], ["background", "cat", "dog"], inputs=rule)
    pics = pictures(1)
    x = seg.prepare(pics)
    masks = seg.masks(pics, x)
    assert source.calls == 1 and masks.shape == (1, 40, 56)  # the whole image's masks, once
    got = seg.query_maps(x, masks=masks)
    total, count = torch.zeros(1, 2, 40, 56), torch.zeros(1, 1, 40, 56)
    for y1, y2, x1, x2 in slide_windows(40, 56, 32, 16):  # each window with its crop of the label map
        total[..., y1:y2, x1:x2] += model.heatmaps(x[..., y1:y2, x1:x2], seg.text, masks=masks[..., y1:y2, x1:x2])
        count[..., y1:y2, x1:x2] += 1
    assert torch.allclose(got, total / count, atol=1e-5)  # crops batched 2 at a time vs one by one
    assert not torch.allclose(got, F.interpolate(model.heatmaps(x, seg.text, masks=masks), size=(40, 56)), atol=1e-3)
    assert source.calls == 1


def test_model_segment_with_corrclip_and_the_masks_refiner(clip_backbone):
    vfm = tiny_vfm("dino", seed=1, patch_size=4)
    model = GEMModel(clip_backbone, method="corrclip", proxy=CorrCLIPProxy(vfm), masks=BoxSource())
    seg = model.segment(pictures(1), ["cat", "dog"], size=(32, 48), refine="masks")
    regions = BoxSource()(np.zeros((32, 48, 3), np.uint8)).label_map()
    for v in (1, 2):  # every mask holds one label
        assert seg.labels[0][regions == v].unique().numel() == 1
    view = model.variant(method="proxyclip")  # the same VFM in ProxyCLIP's holder, and back
    assert view.proxy.vfm is vfm and view.variant(method="corrclip").proxy.vfm is vfm


def test_demo_refuses_corrclip_without_masks(clip_backbone):
    from gemseg.demo import logic

    vfm = tiny_vfm("dino", seed=1, patch_size=4)
    from gemseg.methods import ProxyAttention

    served = GEMModel(clip_backbone, method="proxyclip", proxy=ProxyAttention(vfm))
    with pytest.raises(logic.DemoError, match="needs class-agnostic masks.*--masks SOURCE"):
        logic.model_for(served, method="corrclip")
    view = logic.model_for(GEMModel(clip_backbone, method="proxyclip", proxy=ProxyAttention(vfm), masks=BoxSource()),
                           method="corrclip")
    assert isinstance(view.proxy, CorrCLIPProxy) and view.mask_source is not None
