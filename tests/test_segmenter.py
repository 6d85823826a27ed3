"""The predictor (gemseg.Segmenter): resizing, sliding windows, text embeddings computed once, the one
label rule, refiners (PAMR and the registry), and the two ways to build it."""
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gemseg import GEMConfig, GEMModel, Segmenter
from gemseg.eval import class_queries, load_dataset_spec, resolve_protocol
from gemseg.pamr import pamr
from gemseg.refiners import get_refiner, list_refiners, pamr_refiner, register_refiner, resolve_refiners
from gemseg.segment import LabelRule, apply_rule
from gemseg.segmenter import InputRule, slide_windows

import gemseg.refiners as refiners_module


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


def _voc(model, preset="sclip", **kw):
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol(preset, spec, **{"templates": "single", **kw})
    return Segmenter.from_dataset(model, spec, protocol)


@pytest.mark.parametrize("backbone", ["open_clip"], indirect=True)
def test_resizing_rules(model):
    img = _image(100, 1000)
    assert _voc(model).prepare(img).shape == (1, 3, 205, 2048)  # short side 336 would make the long side 3360
    assert _voc(model, size=50).prepare(img).shape == (1, 3, 50, 500)
    assert _voc(model, resize="fixed", size=64).prepare(img).shape == (1, 3, 64, 64)
    assert _voc(model, resize="none").prepare(img).shape == (1, 3, 100, 1000)
    assert _voc(model, resize="fixed", size=64, interpolation="bicubic").prepare(img).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="cannot share a batch"):
        _voc(model).prepare([img, _image(50, 60)])
    with pytest.raises(ValueError, match="resize 'short_side' takes one size"):
        InputRule(resize="short_side", size=(3, 4))


def test_opencv_style_resize_is_unantialiased_bilinear_on_uint8_values(model):
    img = _image(30, 40)
    x = _voc(model, resize="fixed", size=20).prepare(img)
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
    protocol, _ = resolve_protocol("sclip", spec, size=32, crop=32, stride=16, pos_embed=model.pos_embed)
    seg = Segmenter.from_dataset(model, spec, protocol)  # the model itself: no position-embedding view
    n_queries = sum(len(s) for s in spec.synonyms)
    assert len(seg.queries) == n_queries and seg.text.shape[0] == n_queries
    assert sum(calls) == n_queries * 80 and all(c <= 2048 for c in calls)  # chunked, each prompt once
    before = len(calls)
    for seed in range(2):
        labels = seg.predict(_image(24, 30, seed), out_size=(24, 30)).labels
        assert labels.shape == (1, 24, 30) and labels.dtype == torch.long
    assert len(calls) == before
    cache: dict = {}
    a = Segmenter.from_dataset(model, spec, protocol, text_cache=cache)
    encoded = len(calls)
    b = Segmenter.from_dataset(model.variant(depth=2), spec, protocol, text_cache=cache)
    assert encoded > before and len(calls) == encoded and b.text is a.text and len(cache) == 1


def test_slide_with_one_window_equals_whole(model):
    spec = load_dataset_spec("voc20")
    whole, _ = resolve_protocol("gem", spec, resize="none")
    slide, _ = resolve_protocol("gem", spec, resize="none", mode="slide", crop=64, stride=32)
    img = _image(32, 40)
    a = Segmenter.from_dataset(model, spec, whole).scores(img, out_size=(32, 40))
    b = Segmenter.from_dataset(model, spec, slide).scores(img, out_size=(32, 40))
    torch.testing.assert_close(a, b)


def test_overlapping_windows_are_averaged_and_batches_slide_as_single_images(model):
    spec = load_dataset_spec("voc20")
    protocol, _ = resolve_protocol("gem", spec, resize="none", mode="slide", crop=16, stride=8)
    seg = Segmenter.from_dataset(model, spec, protocol)
    x = seg.prepare(_image(16, 24))
    out = seg.query_maps(x)
    crops = [model.heatmaps(x[..., :, a:a + 16], seg.text)[0] for a in (0, 8)]
    torch.testing.assert_close(out[0, :, :, :8], crops[0][..., :8])
    torch.testing.assert_close(out[0, :, :, 8:16], (crops[0][..., 8:] + crops[1][..., :8]) / 2)
    torch.testing.assert_close(out[0, :, :, 16:], crops[1][..., 8:])
    pair = seg.prepare([_image(16, 24, 1), _image(16, 24, 2)])  # two images in one batch, crops of both per pass
    both = seg.query_maps(pair)
    # the same crops in another batch composition: equal up to float32 matmul blocking (1e-5)
    for i in range(2):
        torch.testing.assert_close(both[i], seg.query_maps(pair[i:i + 1])[0], atol=1e-5, rtol=1e-5)


# --- the label rule --------------------------------------------------------------------------------
def _labels(rule, query_to_class, num_labels, scores):
    labels, top, _ = apply_rule(scores[None], torch.tensor(query_to_class), num_labels, rule)
    return labels[0], top[0]


def test_labels_softmax_over_queries_then_max_per_class_then_threshold():
    scores = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.29, 0.0], [0.0, 0.05]])[..., None]  # (Q=4, H=2, W=1)
    labels, conf = _labels(LabelRule(logit_scale=10.0, prob_threshold=0.4), [0, 1, 1, 2], 3, scores)
    probs = torch.softmax(10 * scores, dim=0)
    # pixel 1: class 1's probability is its best synonym's (0.499), not the synonyms' sum (0.95)
    assert labels[0, 0] == 1 and float(conf[0, 0]) == pytest.approx(float(probs[1, 0, 0]))
    assert float(conf[0, 0]) == pytest.approx(0.499, abs=1e-3)
    # pixel 2: class 2 wins the argmax with p = 0.355 < 0.4 -> background
    assert float(probs[3, 1, 0]) == pytest.approx(0.355, abs=1e-3) and labels[1, 0] == 0
    assert _labels(LabelRule(logit_scale=10.0), [0, 1, 1, 2], 3, scores)[0][1, 0] == 2


def test_without_a_background_query_background_is_where_the_foreground_is_unsure():
    scores = torch.tensor([[0.3, 0.0], [0.0, 0.02]])[..., None]  # (Q=2, H=2, W=1): classes 1 and 2 only
    labels, conf = _labels(LabelRule(logit_scale=10.0, prob_threshold=0.6), [1, 2], 3, scores)
    probs = torch.softmax(10 * scores, dim=0)  # over the foreground queries only
    assert float(conf[0, 0]) == pytest.approx(float(probs[0, 0, 0])) and labels[0, 0] == 1  # p = 0.95
    assert float(conf[1, 0]) == pytest.approx(0.55, abs=1e-2) and labels[1, 0] == 0  # below 0.6
    loose = _labels(LabelRule(logit_scale=10.0, prob_threshold=0.5), [1, 2], 3, scores)[0]
    assert loose[:, 0].tolist() == [1, 2]  # background never argmax


def test_area_threshold_drops_small_foreground_classes():
    scores = torch.zeros(3, 1, 10)
    scores[1, 0, :9] = 1.0  # class 1: 9 pixels
    scores[2, 0, 9] = 1.0  # class 2: 1 pixel = 10% of the foreground
    scores[0, 0, 9] = 0.5  # background is second there
    labels, _ = _labels(LabelRule(logit_scale=50.0, area_threshold=0.2), [0, 1, 2], 3, scores)
    assert labels[0].tolist() == [1] * 9 + [0]
    assert _labels(LabelRule(logit_scale=50.0), [0, 1, 2], 3, scores)[0][0, 9] == 2
    # per image of a batch: the second image's areas do not change the first's
    batch = torch.stack([scores, scores.flip(-1)])
    labels, _, _ = apply_rule(batch, torch.tensor([0, 1, 2]), 3, LabelRule(logit_scale=50.0, area_threshold=0.2))
    assert labels[0, 0].tolist() == [1] * 9 + [0] and labels[1, 0].tolist() == [0] + [1] * 9


def test_label_rule_checks():
    with pytest.raises(ValueError, match="no background label"):
        LabelRule(background=None, prob_threshold=0.3)
    with pytest.raises(ValueError, match=r"prob_threshold must lie in \[0, 1\]"):
        LabelRule(prob_threshold=1.5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LabelRule(reduction="mean")


def test_background_prompts_replace_the_background_queries():
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("gem", spec, background_prompts=("sky", "wall"), background_query=True)
    queries = class_queries(spec, protocol)
    assert queries[0] == ("sky", "wall") and queries[1] == ("aeroplane",)
    sclip, _ = resolve_protocol("sclip", spec)
    assert class_queries(spec, sclip)[15][1] == "person in shirt"
    with pytest.raises(ValueError, match="background"):
        class_queries(load_dataset_spec("ade20k"), protocol)


# --- refiners --------------------------------------------------------------------------------------
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


def test_the_refiner_registry():
    assert "pamr" in list_refiners() and get_refiner("pamr") is pamr_refiner
    with pytest.raises(ValueError, match="unknown refiner 'nope'; choose from pamr"):
        get_refiner("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_refiner("pamr", pamr_refiner)
    with pytest.raises(TypeError, match="must be callable"):
        register_refiner("x", 3)
    with pytest.raises(TypeError, match=r"\(name, \{settings\}\)"):
        resolve_refiners([("pamr", 3)])

    def halve(scores, *, image, model):
        return scores / 2

    try:
        register_refiner("halve", halve)
        named = resolve_refiners(["pamr", ("pamr", {"steps": 2}), "halve", functools.partial(halve)])
        assert [n for n, _ in named] == ["pamr", "pamr", "halve", "halve"]
        assert named[1][1].keywords == {"steps": 2}
    finally:
        refiners_module._REFINERS.pop("halve", None)


def test_a_refiner_gets_the_scores_at_the_output_size_the_network_input_and_the_model(model):
    seen = {}

    def probe(scores, *, image, model):
        seen.update(scores=tuple(scores.shape), image=tuple(image.shape), model=model)
        return scores * 0 + torch.arange(scores.shape[1], dtype=scores.dtype, device=scores.device)[:, None, None]

    seg = Segmenter.from_classes(model, ["cat", "dog"], background="none", size=32, refine=probe)
    out = seg.predict(_image(20, 30), out_size=(20, 30))
    assert seen == {"scores": (1, 2, 20, 30), "image": (1, 3, 32, 32), "model": model}
    assert (out.labels == 2).all()  # the refined scores made the labels: "dog" everywhere


def test_pamr_refiner_equals_pamr_guided_by_the_resized_input(model):
    seg = Segmenter.from_classes(model, ["cat", "dog"], size=32)
    x = seg.prepare(_image(20, 30))
    maps = seg.query_maps(x)
    plain = seg.at_size(maps, x, (24, 36))
    guide = F.interpolate(x, size=(24, 36), mode="bilinear", align_corners=False)
    ref = pamr(guide, plain, steps=3, dilations=(1, 2))
    refined = Segmenter.from_classes(model, ["cat", "dog"], size=32, refine=("pamr", {"steps": 3, "dilations": (1, 2)}))
    assert torch.equal(refined.at_size(maps, x, (24, 36)), ref)  # the same kernels on the same inputs
    assert (ref - plain).abs().max() > 1e-4


@pytest.mark.parametrize("backbone", ["open_clip"], indirect=True)
def test_protocol_pamr_is_the_pamr_refiner(model):
    spec = load_dataset_spec("voc21")
    on, _ = resolve_protocol("naclip", spec, size=32, crop=32, stride=16, templates="single", pamr_steps=2,
                             pamr_dilations=(1, 2))
    off, _ = resolve_protocol("naclip", spec, size=32, crop=32, stride=16, templates="single", pamr_steps=0)
    a = Segmenter.from_dataset(model, spec, on)
    b = Segmenter.from_dataset(model, spec, off, refine=("pamr", {"steps": 2, "dilations": (1, 2)}))
    assert [n for n, _ in a.refiners] == ["pamr"] and not Segmenter.from_dataset(model, spec, off).refiners
    img = _image(30, 40)
    assert torch.equal(a.scores(img, out_size=(30, 40)), b.scores(img, out_size=(30, 40)))


def test_model_segment_takes_refine(model):
    x = model.preprocess(__import__("PIL.Image").Image.fromarray(_image(20, 30)), size=32)[None]
    plain = model.segment(x, ["cat", "dog"])
    refined = model.segment(x, ["cat", "dog"], refine="pamr")
    seg = Segmenter.from_classes(model, ["cat", "dog"], refine="pamr")
    assert torch.equal(refined.probabilities, seg.predict(x).probabilities)
    assert not torch.equal(refined.scores, plain.scores)


# --- building it ------------------------------------------------------------------------------------
def test_from_classes_queries_and_checks(model):
    seg = Segmenter.from_classes(model, ["cat", "dog"], background="sky,road", threshold=0.3)
    assert seg.queries == ["cat", "dog", "sky", "road"] and seg.query_to_class.tolist() == [1, 2, 0, 0]
    assert seg.names == ("background", "cat", "dog") and seg.rule.prob_threshold == 0.3
    bg = seg.background
    with pytest.raises(ValueError, match="part of a resolved Background"):
        Segmenter.from_classes(model, ["cat", "dog"], background=bg, threshold=0.2)
    assert Segmenter.from_classes(model, ["cat", "dog"], background=bg).rule == seg.rule
    with pytest.raises(ValueError, match=r"scores must be \[B, 4, H, W\]"):
        seg.labels(torch.zeros(1, 3, 2, 2))


# --- model variants and what methods need ------------------------------------------------------------
def test_variant_shares_the_weights_and_changes_only_what_is_asked(model):
    v = model.variant(method="clearclip", pos_embed="bilinear", depth=2)
    assert v.backbone is model.backbone and (v.method, v.pos_embed, v.config.depth) == ("clearclip", "bilinear", 2)
    assert (model.method, model.pos_embed, model.config.depth) == ("gem", "bicubic-aa", 3)  # unchanged
    assert v.variant(iterations=2).pos_embed == "bilinear" and v.variant(iterations=2).method == "clearclip"
    assert model.with_config(depth=2).config == model.variant(depth=2).config
    with pytest.raises(ValueError, match="unknown GEM setting"):
        model.variant(nope=1)
    with pytest.raises(ValueError, match="needs a proxy vision model"):
        model.variant(method="proxyclip")
    with pytest.raises(ValueError, match="takes no proxy"):
        model.variant(proxy=object())


def test_methods_declare_what_they_need():
    from gemseg.methods import get_method, list_methods, register_method, METHODS

    proxied = ("proxyclip", "cass", "trident")  # the methods that hold a second vision model (trident: DINO + SAM)
    assert all(get_method(m).needs == ("proxy",) for m in proxied)
    assert get_method("corrclip").needs == ("proxy", "masks")
    plugged = [m for m in list_methods() if m.endswith("+resclip")]  # ResCLIP's feedback: the queries and PAMR
    assert plugged and all(get_method(m).needs == ("text", "refine") for m in plugged)
    assert all(get_method(m).needs == () for m in list_methods() if m not in proxied + ("corrclip",) and m not in plugged)
    with pytest.raises(ValueError, match="unknown requirement"):
        register_method("x", lambda *a, **k: None, needs=("nothing-known",))
    assert "x" not in METHODS


@pytest.mark.parametrize("backbone", ["open_clip"], indirect=True)
def test_method_analysis_keeps_the_models_position_embeddings(model):
    from gemseg.analysis import method_analysis, token_grouping

    torch.manual_seed(0)
    images = torch.randn(1, 3, 40, 48)  # not the native 32x32: the resampling mode matters
    masks = torch.randint(0, 3, (1, 40, 48))
    text = model.encode_text(["a", "b", "c"])
    view = model.variant(pos_embed="bilinear")
    got = method_analysis(view, images, masks, text, methods=["gem"])[0].grouping
    plain = method_analysis(model, images, masks, text, methods=["gem"])[0].grouping
    assert got.intra != plain.intra
    from gemseg.analysis import patch_labels

    labels = patch_labels(masks, model.patch_size)
    assert got == token_grouping(view.encode_image(images), labels)


@pytest.mark.parametrize("backbone", ["open_clip"], indirect=True)
def test_cli_refine_on_segment_and_eval(model, tmp_path, capsys, tiny_model_files):
    import json

    import eval_data
    from cli_util import model_args, record, run_cli, write_image

    a = write_image(tmp_path / "a.png", (40, 30), seed=1)
    args = model_args(tiny_model_files)
    assert run_cli(capsys, "segment", a, "-c", "cat,dog", "--save-raw", "-o", tmp_path / "plain", *args).code == 0
    r = run_cli(capsys, "segment", a, "-c", "cat,dog", "--save-raw", "--refine", "pamr", "-o", tmp_path / "pamr", *args)
    assert r.code == 0, r.err
    assert record(tmp_path / "pamr", "a.png")["refine"] == ["pamr"] and "refine" not in record(tmp_path / "plain", "a.png")
    raw = [np.load(tmp_path / d / "a.png" / "scores.npy") for d in ("plain", "pamr")]
    assert np.abs(raw[0] - raw[1]).max() > 1e-4  # the refiner changed the scores
    assert run_cli(capsys, "segment", a, "-c", "cat", "--refine", "nope", "-o", tmp_path / "x", *args).code == 2
    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    cfg, ckpt = tiny_model_files["open_clip"]
    r = run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt,
                "--device", "cpu", "--workers", "0", "--no-progress", "--size", "48", "--templates", "single",
                "--depth", "3", "--refine", "pamr", "--out", tmp_path / "eval")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "eval" / "result.json").read_text())["refine"] == ["pamr"]


def test_refiners_get_only_the_context_they_name():
    from gemseg.refiners import refine_scores

    got = {}

    def plain(scores):
        return scores + 1

    def some(scores, *, image):
        got["some"] = image
        return scores

    def every(scores, **context):
        got["every"] = sorted(context)
        return scores

    scores = torch.zeros(1, 2, 3, 3)
    out = refine_scores(scores, resolve_refiners([plain, some, every]), image="x", model="m", masks="later")
    assert torch.equal(out, scores + 1) and got == {"some": "x", "every": ["image", "masks", "model"]}
    with pytest.raises(ValueError, match="refiner 'bad' must return scores of shape"):
        refine_scores(scores, [("bad", lambda s: s[:, :1])])
