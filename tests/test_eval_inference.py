"""Inference of the evaluation harness: resizing, sliding windows, text embeddings computed once, PAMR,
and the rules from scores to labels."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gemseg import GEMConfig, GEMModel
from gemseg.eval import Segmenter, class_queries, load_dataset_spec, pamr, resolve_protocol, slide_windows


@pytest.fixture
def model(backbone):
    return GEMModel(backbone, config=GEMConfig(depth=3))


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_slide_windows_follow_the_mmseg_grid_and_cover_every_pixel():
    assert [w[0] for w in slide_windows(336, 224, 224, 112)][::1] == [0, 112]
    starts = sorted({w[2] for w in slide_windows(224, 500, 224, 112)})
    assert starts == [0, 112, 224, 276]  # the last crop is shifted back to end at the border
    assert slide_windows(100, 150, 224, 112) == [(0, 100, 0, 150)]  # smaller than a crop: one window
    cover = np.zeros((337, 501), dtype=int)
    for y1, y2, x1, x2 in slide_windows(337, 501, 224, 112):
        assert y2 - y1 == 224 and x2 - x1 == 224
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1


def test_resizing_rules(model):
    img = _image(100, 1000)
    def shape(**kw):
        protocol, _ = resolve_protocol("sclip", **kw)
        seg = Segmenter.__new__(Segmenter)
        seg.model, seg.protocol = model, protocol
        return tuple(seg.prepare(img).shape)
    assert shape() == (1, 3, 205, 2048)  # short side 336 would make the long side 3360 > 2048
    assert shape(size=50) == (1, 3, 50, 500)
    assert shape(resize="fixed", size=64) == (1, 3, 64, 64)
    assert shape(resize="none") == (1, 3, 100, 1000)
    assert shape(resize="fixed", size=64, interpolation="bicubic") == (1, 3, 64, 64)


def test_opencv_style_resize_is_unantialiased_bilinear_on_uint8_values(model):
    img = _image(30, 40)
    protocol, _ = resolve_protocol("sclip", resize="fixed", size=20)
    seg = Segmenter.__new__(Segmenter)
    seg.model, seg.protocol = model, protocol
    x = seg.prepare(img)
    pre = model.backbone.preprocess
    ref = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=(20, 20), mode="bilinear",
                        align_corners=False).round()
    ref = (ref / 255 - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref)


def test_text_embeddings_are_computed_once(model, monkeypatch):
    calls = []
    original = model.encode_text

    def counting(prompts, templates=None):
        calls.append(len(prompts) * len(templates))
        return original(prompts, templates=templates)

    monkeypatch.setattr(model, "encode_text", counting)
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("sclip", spec, size=32, crop=32, stride=16)
    seg = Segmenter(model, protocol, class_queries(spec, protocol), background=0)
    n_queries = sum(len(s) for s in spec.synonyms)
    assert len(seg.queries) == n_queries and seg.text.shape[0] == n_queries
    assert sum(calls) == n_queries * 80 and all(c <= 2048 for c in calls)  # chunked, each prompt once
    before = len(calls)
    for seed in range(2):
        labels = seg.predict(_image(24, 30, seed))
        assert labels.shape == (24, 30) and labels.dtype == torch.long
    assert len(calls) == before


def test_slide_with_one_window_equals_whole(model):
    spec = load_dataset_spec("voc20")
    whole, _ = resolve_protocol("gem", spec, resize="none")
    slide, _ = resolve_protocol("gem", spec, resize="none", mode="slide", crop=64, stride=32)
    img = _image(32, 40)
    a = Segmenter(model, whole, class_queries(spec, whole)).query_scores(img, (32, 40))
    b = Segmenter(model, slide, class_queries(spec, slide)).query_scores(img, (32, 40))
    torch.testing.assert_close(a, b)


def test_overlapping_windows_are_averaged(model):
    spec = load_dataset_spec("voc20")
    protocol, _ = resolve_protocol("gem", spec, resize="none", mode="slide", crop=16, stride=8)
    seg = Segmenter(model, protocol, class_queries(spec, protocol))
    x = seg.prepare(_image(16, 24))
    out = seg._slide(x, seg.text)
    crops = [model.heatmaps(x[..., :, a:a + 16], seg.text)[0] for a in (0, 8)]
    torch.testing.assert_close(out[0, :, :, :8], crops[0][..., :8])
    torch.testing.assert_close(out[0, :, :, 8:16], (crops[0][..., 8:] + crops[1][..., :8]) / 2)
    torch.testing.assert_close(out[0, :, :, 16:], crops[1][..., 8:])


def _rules(protocol, query_to_class, num_classes, background=0):
    seg = Segmenter.__new__(Segmenter)
    seg.protocol, seg.background, seg.num_classes = protocol, background, num_classes
    seg.query_to_class = torch.tensor(query_to_class)
    return seg


def test_labels_softmax_over_queries_then_max_per_class_then_threshold():
    protocol, _ = resolve_protocol("gem", logit_scale=10.0, prob_threshold=0.4)
    seg = _rules(protocol, [0, 1, 1, 2], 3)  # class 1 has two synonyms
    scores = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.29, 0.0], [0.0, 0.05]])[..., None]  # (Q=4, H=2, W=1)
    labels, conf = seg.labels(scores)
    probs = torch.softmax(10 * scores, dim=0)
    # pixel 1: class 1's probability is its best synonym's (0.499), not the synonyms' sum (0.95)
    assert labels[0, 0] == 1 and float(conf[0, 0]) == pytest.approx(float(probs[1, 0, 0]))
    assert float(conf[0, 0]) == pytest.approx(0.499, abs=1e-3)
    # pixel 2: class 2 wins the argmax with p = 0.355 < 0.4 -> background
    assert float(probs[3, 1, 0]) == pytest.approx(0.355, abs=1e-3) and labels[1, 0] == 0
    no_threshold, _ = resolve_protocol("gem", logit_scale=10.0)
    assert _rules(no_threshold, [0, 1, 1, 2], 3).labels(scores)[0][1, 0] == 2


def test_without_a_background_query_background_is_where_the_foreground_is_unsure():
    protocol, _ = resolve_protocol("gem", logit_scale=10.0, prob_threshold=0.6)  # background_query=False
    seg = _rules(protocol, [1, 2], 3)  # queries for classes 1 and 2 only; class 0 is background
    scores = torch.tensor([[0.3, 0.0], [0.0, 0.02]])[..., None]  # (Q=2, H=2, W=1)
    labels, conf = seg.labels(scores)
    probs = torch.softmax(10 * scores, dim=0)  # over the foreground queries only
    assert float(conf[0, 0]) == pytest.approx(float(probs[0, 0, 0])) and labels[0, 0] == 1  # p = 0.95
    assert float(conf[1, 0]) == pytest.approx(0.55, abs=1e-2) and labels[1, 0] == 0  # below 0.6
    loose, _ = resolve_protocol("gem", logit_scale=10.0, prob_threshold=0.5)
    assert _rules(loose, [1, 2], 3).labels(scores)[0][:, 0].tolist() == [1, 2]  # background never argmax


def test_area_threshold_drops_small_foreground_classes():
    protocol, _ = resolve_protocol("gem", logit_scale=50.0, area_threshold=0.2)
    scores = torch.zeros(3, 1, 10)
    scores[1, 0, :9] = 1.0  # class 1: 9 pixels
    scores[2, 0, 9] = 1.0  # class 2: 1 pixel = 10% of the foreground
    scores[0, 0, 9] = 0.5  # background is second there
    labels, _ = _rules(protocol, [0, 1, 2], 3).labels(scores)
    assert labels[0].tolist() == [1] * 9 + [0]
    plain, _ = resolve_protocol("gem", logit_scale=50.0)
    assert _rules(plain, [0, 1, 2], 3).labels(scores)[0][0, 9] == 2


def test_background_prompts_replace_the_background_queries():
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("gem", spec, background_prompts=("sky", "wall"), background_query=True)
    queries = class_queries(spec, protocol)
    assert queries[0] == ("sky", "wall") and queries[1] == ("aeroplane",)
    sclip, _ = resolve_protocol("sclip", spec)
    assert class_queries(spec, sclip)[15][1] == "person in shirt"
    with pytest.raises(ValueError, match="background"):
        class_queries(load_dataset_spec("ade20k"), protocol)


def test_pamr_keeps_constants_and_follows_image_edges():
    image = torch.zeros(1, 3, 12, 12)
    image[..., 6:] = 1.0  # two flat regions
    const = torch.full((1, 2, 12, 12), 0.25)
    torch.testing.assert_close(pamr(image, const, steps=3, dilations=(1, 2)), const)
    scores = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pamr(image, scores, steps=0), scores)
    out = pamr(image, scores, steps=20, dilations=(1, 2))
    assert out.shape == scores.shape
    left, right = out[..., :6], out[..., 6:]
    # scores flatten within each region but do not bleed across the edge
    assert left.std() < scores[..., :6].std() / 3 and right.std() < scores[..., 6:].std() / 3
    torch.testing.assert_close(left.mean((-1, -2)), scores[..., :6].mean((-1, -2)), atol=0.08, rtol=0)
