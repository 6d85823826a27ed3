"""The segmentation API: reductions against a plain loop, background rules, label maps, and
GEMModel.segment / heatmaps on PIL images for both backends."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import gemseg
from gemseg import GEMConfig, GEMModel, Segmentation, Segmenter, class_probabilities
from gemseg.segment import AUTO_BACKGROUND, DEFAULT_THRESHOLD, background_rule, resize_maps


def _plain_probabilities(sims, q2c, C, scale, reduction):
    """The two reductions written as loops over pixels, classes and queries (float64)."""
    B, Q, H, W = sims.shape
    s = sims.double()
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                v = s[b, :, y, x]
                if reduction == "softmax_then_max":
                    e = torch.exp(scale * v - (scale * v).max())
                    p = e / e.sum()
                    for c in range(C):
                        out[b, c, y, x] = max(p[q] for q in range(Q) if q2c[q] == c)
                else:
                    m = torch.stack([max(v[q] for q in range(Q) if q2c[q] == c) for c in range(C)])
                    e = torch.exp(scale * m - (scale * m).max())
                    out[b, :, y, x] = e / e.sum()
    return out


@pytest.mark.parametrize("reduction", gemseg.REDUCTIONS)
def test_reductions_match_a_plain_loop(reduction):
    torch.manual_seed(0)
    sims = torch.rand(2, 6, 3, 4) * 2 - 1  # (B, Q, H, W) cosines
    q2c = [2, 0, 1, 0, 2, 0]  # class 0 has three queries, class 2 two
    got = class_probabilities(sims, q2c, 3, logit_scale=20.0, reduction=reduction)
    assert got.shape == (2, 3, 3, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _plain_probabilities(sims, q2c, 3, 20.0, reduction), atol=1e-6, rtol=1e-5)


def test_reductions_differ_but_share_the_argmax():
    torch.manual_seed(1)
    sims = torch.rand(1, 8, 5, 5) * 0.4
    q2c = [0, 0, 0, 0, 0, 1, 2, 3]
    a = class_probabilities(sims, q2c, 4, logit_scale=100.0)
    b = class_probabilities(sims, q2c, 4, logit_scale=100.0, reduction="max_then_softmax")
    assert (a - b).abs().max() > 1e-3  # several queries for class 0: the orders disagree
    assert torch.equal(a.argmax(1), b.argmax(1))
    assert (a <= b + 1e-6).all()  # softmax over more terms never gives a class more probability
    one = list(range(4))  # one query per class: both are the plain softmax
    torch.testing.assert_close(class_probabilities(sims[:, 4:], one, 4),
                               class_probabilities(sims[:, 4:], one, 4, reduction="max_then_softmax"))


def test_bad_reduction_settings_raise():
    sims = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match="reduction must be one of softmax_then_max, max_then_softmax"):
        class_probabilities(sims, [0, 1], 2, reduction="mean")
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        class_probabilities(sims, [0, 1], 2, logit_scale=0)


# --- background rules ----------------------------------------------------------------------------
def test_background_rules():
    bg = background_rule("auto", ["Sky", "cat"])
    assert bg.rule == "auto" and "sky" not in bg.prompts and len(bg.prompts) == len(AUTO_BACKGROUND) - 1
    assert bg.threshold == DEFAULT_THRESHOLD and bg.logit_scale == 100.0
    assert background_rule("none", ["cat"]).to_dict() == {"rule": "none", "prompts": [], "threshold": None,
                                                          "logit_scale": 100.0}
    assert background_rule(None, ["cat"], threshold=0.3).threshold == 0.3
    assert background_rule("sky, road", ["cat"], threshold=0).prompts == ("sky", "road")
    assert background_rule("sky, road", ["cat"], threshold=0).threshold is None  # 0 turns it off
    assert background_rule(["sky", "  floor "], ["cat"]).prompts == ("sky", "floor")


def test_background_rule_warnings_and_errors():
    with pytest.warns(UserWarning, match="also classes; they stay classes"):
        assert background_rule(["wall", "sky"], ["Wall"]).prompts == ("sky",)
    with pytest.warns(UserWarning, match="given more than once"):
        background_rule("sky,sky", ["cat"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no background prompts left"):
            background_rule(["cat"], ["cat"])
    with pytest.raises(ValueError, match="background prompt 2 is empty"):
        background_rule("sky,,road", ["cat"])
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        background_rule("auto", ["cat"], logit_scale=-1)
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        background_rule("auto", ["cat"], threshold=1.5)


# --- label maps ------------------------------------------------------------------------------------
@pytest.fixture
def tiny(clip_backbone):
    return GEMModel(clip_backbone, config=GEMConfig(depth=3))


def _segmentation(model, sims, classes, bg, **kw):
    """Segmenter.segmentation of given query maps (the text is encoded but not used)."""
    return Segmenter.from_classes(model, classes, background=bg, **kw).segmentation(sims)


def test_segmentation_with_background_prompts(tiny):
    torch.manual_seed(2)
    sims = torch.rand(2, 5, 6, 7) * 0.3  # 2 classes, then 3 background prompts
    bg = background_rule(["a", "b", "c"], ["cat", "dog"], threshold=0.4, logit_scale=50.0)
    seg = _segmentation(tiny, sims, ["cat", "dog"], bg)
    assert isinstance(seg, Segmentation) and seg.names == ("background", "cat", "dog")
    assert seg.labels.shape == (2, 6, 7) and seg.labels.dtype == torch.long
    assert seg.probabilities.shape == seg.scores.shape == (2, 3, 6, 7)
    ref = _plain_probabilities(sims, [1, 2, 0, 0, 0], 3, 50.0, "softmax_then_max").float()
    torch.testing.assert_close(seg.probabilities, ref)
    conf, top = ref.max(1)
    torch.testing.assert_close(seg.labels, torch.where(conf < 0.4, 0, top))
    torch.testing.assert_close(seg.confidence, ref.gather(1, seg.labels[:, None])[:, 0])
    torch.testing.assert_close(seg.scores[:, 0], sims[:, 2:].max(1).values)
    assert seg.areas.shape == (2, 3) and seg.areas.sum(1).tolist() == [42, 42]
    stats = seg.stats(1)
    assert [s["pixels"] for s in stats] == seg.areas[1].tolist()
    assert sum(s["fraction"] for s in stats) == pytest.approx(1.0, abs=1e-5)


def test_segmentation_without_background(tiny):
    torch.manual_seed(3)
    sims = torch.rand(1, 3, 4, 4)
    seg = _segmentation(tiny, sims, ["a", "b", "c"], background_rule("none", ["a", "b", "c"]))
    assert torch.isnan(seg.scores[:, 0]).all() and (seg.probabilities[:, 0] == 0).all()
    assert torch.equal(seg.labels, sims.argmax(1) + 1)
    thr = float(seg.confidence.median())
    cut = _segmentation(tiny, sims, ["a", "b", "c"], background_rule("none", ["a", "b", "c"], threshold=thr))
    dropped = cut.labels == 0
    assert dropped.any() and torch.isnan(cut.confidence[dropped]).all()
    assert cut.stats(0)[0]["mean_probability"] is None and cut.stats(0)[0]["mean_score"] is None


def test_segmentation_checks_the_query_count(tiny):
    with pytest.raises(ValueError, match=r"scores must be \[B, 12, H, W\] \(one map per query\)"):
        _segmentation(tiny, torch.zeros(1, 3, 2, 2), ["a", "b"], background_rule("auto", ["a", "b"]))


def test_resize_maps_keeps_leading_dimensions():
    maps = torch.rand(2, 3, 4, 5)
    out = resize_maps(maps, (8, 10))
    assert out.shape == (2, 3, 8, 10)
    torch.testing.assert_close(out[1], torch.nn.functional.interpolate(maps[1:2], size=(8, 10), mode="bilinear",
                                                                       align_corners=False)[0])


# --- the model API, both backends ---------------------------------------------------------------------
def _labels_agree_off_ties(labels, ref, probabilities, margin=1e-5):
    """``labels`` equal ``ref`` wherever the reference's top two probabilities [B, C, H, W] are more than
    ``margin`` apart: two code paths agree to float32 rounding (about 1e-6 here), so only a near-tie may flip."""
    top2 = probabilities.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > margin
    assert decided.float().mean() > 0.9  # the comparison is not vacuous
    assert torch.equal(labels[decided], ref[decided])


def _pictures(n=2):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (30 + 4 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture
def gem(backbone):
    return GEMModel(backbone, config=GEMConfig(depth=3))


def test_heatmaps_take_pil_images_at_a_size(gem):
    pics = _pictures()
    got = gem.heatmaps(pics, ["cat", "dog"], size=32)
    assert got.shape == (2, 2, 32, 32)
    torch.testing.assert_close(got, gem.heatmaps(gem.preprocess(pics, size=32), ["cat", "dog"]))
    one = gem.heatmaps(pics[0], ["cat"], size=(24, 40))
    assert one.shape == (1, 1, 24, 40)
    with pytest.raises(TypeError, match="torch.stack them"):
        gem.heatmaps([torch.zeros(3, 32, 32)], ["cat"])


@pytest.mark.parametrize("reduction", gemseg.REDUCTIONS)
def test_segment_equals_heatmaps_then_the_segmenters_rule(gem, reduction):
    pics = _pictures()
    seg = gem.segment(pics, ["cat", "dog"], size=32, reduction=reduction)
    bg = background_rule("auto", ["cat", "dog"])
    sims = gem.heatmaps(pics, ["cat", "dog", *bg.prompts], size=32)
    ref = _segmentation(gem, sims, ["cat", "dog"], bg, reduction=reduction)
    assert seg.labels.shape == (2, 32, 32) and seg.probabilities.shape == (2, 3, 32, 32)
    assert seg.reduction == reduction and seg.background == bg
    torch.testing.assert_close(seg.probabilities, ref.probabilities)
    _labels_agree_off_ties(seg.labels, ref.labels, ref.probabilities)
    assert torch.isfinite(seg.probabilities).all() and int(seg.areas.sum()) == 2 * 32 * 32


def test_segment_options(gem):
    pic = _pictures(1)[0]
    x = gem.preprocess(pic, size=32)[None]
    free = gem.segment(x, ["cat", "dog", "sofa"], background="none")
    assert free.labels.min() >= 1 and free.background.rule == "none"
    torch.testing.assert_close(free.scores[:, 1:], gem.heatmaps(x, ["cat", "dog", "sofa"]))
    big = gem.segment(pic, ["cat"], background=["sky", "road"], threshold=0, size=32, out_size=(30, 40),
                      templates=["a {}."])
    assert big.labels.shape == (1, 30, 40) and big.background.prompts == ("sky", "road")
    sims = gem.heatmaps(x, gem.encode_text(["cat", "sky", "road"], templates=["a {}."]))
    ref = _segmentation(gem, resize_maps(sims, (30, 40)), ["cat"], big.background)  # embeddings: normalized twice
    _labels_agree_off_ties(big.labels, ref.labels, ref.probabilities)
    with pytest.raises(ValueError, match="class 2 is empty"):
        gem.segment(x, ["cat", " "])
