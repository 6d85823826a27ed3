"""Every preset resolves to its documented settings, per dataset, and each setting can be overridden.

The expected values are written here from the official files (named in the comments), independently of
the presets' own tables."""
import pytest

from gemseg.cli import main as cli
from gemseg.eval import (PRESETS, Protocol, class_queries, describe, list_datasets, load_dataset_spec, read_templates,
                         resolve_protocol)
from gemseg.eval.protocols import PRESET_INFO, PRESET_NOTES, preset_table

SCLIP_BASE = dict(resize="short_side", size=336, max_long_side=2048, interpolation="bilinear-cv2", mode="slide",
                  crop=224, stride=112, templates="imagenet80", vocabulary="synonyms", logit_scale=40.0,
                  prob_threshold=None, area_threshold=None, pamr_steps=0, pamr_dilations=(8, 16),
                  background_query=True, pos_embed="bicubic-scale")
# the published per-dataset values of SCLIP's configs
SCLIP_DATASET = {
    "voc21": dict(logit_scale=65.0, prob_threshold=0.1, area_threshold=0.1),
    "context60": dict(logit_scale=50.0, prob_threshold=0.1),
    "coco_object": dict(logit_scale=50.0, prob_threshold=0.1),
    "coco_stuff": dict(size=448),
    "cityscapes": dict(size=560),
    "voc20": {}, "context59": {}, "ade20k": {}, "openimages_v7": {},
}
# mc-lan/ClearCLIP: clearclip_segmentor.py defaults (logit_scale=50, slide_stride=224, slide_crop=448,
# prob_thd=0.0), configs/cfg_*.py (Resize scale=(2048, 448) everywhere; prob_thd voc21 0.5, context60 0.15,
# coco_object 0.4; cfg_city_scapes.py slide_crop=224), prompts: openai_imagenet_template (80),
# configs/cls_voc21.txt (plain names, "background" one of them)
CLEARCLIP_BASE = dict(resize="short_side", size=448, max_long_side=2048, interpolation="bilinear-cv2", mode="slide",
                      crop=448, stride=224, templates="imagenet80", vocabulary="synonyms", logit_scale=50.0,
                      prob_threshold=None, area_threshold=None, pamr_steps=0, background_query=True,
                      pos_embed="bicubic-scale")
CLEARCLIP_DATASET = {
    "voc21": dict(prob_threshold=0.5, vocabulary="voc21_clearclip.txt"),
    "context60": dict(prob_threshold=0.15),
    "coco_object": dict(prob_threshold=0.4, vocabulary="names"),
    "voc20": dict(vocabulary="names"),
    "cityscapes": dict(crop=224, stride=224),
    "context59": {}, "ade20k": {}, "coco_stuff": {},
}
# sinahmr/NACLIP: naclip.py defaults (logit_scale=40, slide_stride=112, slide_crop=224, pamr_steps=10,
# pamr_stride=(8, 16), prob_thd=0.0, no area threshold), configs/cfg_*.py (Resize scale=(2048, 336); prob_thd
# 0.1 on voc21, context60, coco_object; cfg_city_scapes.py 560; cfg_coco_stuff164k.py 448)
NACLIP_BASE = dict(resize="short_side", size=336, max_long_side=2048, interpolation="bilinear-cv2", mode="slide",
                   crop=224, stride=112, templates="imagenet80", vocabulary="synonyms", logit_scale=40.0,
                   prob_threshold=None, area_threshold=None, pamr_steps=10, pamr_dilations=(8, 16),
                   background_query=True, pos_embed="bicubic-scale")
NACLIP_DATASET = {
    "voc21": dict(prob_threshold=0.1), "context60": dict(prob_threshold=0.1), "coco_object": dict(prob_threshold=0.1),
    "cityscapes": dict(size=560), "coco_stuff": dict(size=448), "voc20": {}, "context59": {}, "ade20k": {},
}
# WalBouss/GEM: gem/gem.py get_gem_img_transform (448x448, bicubic), README (foreground names only, background
# below a probability threshold); logit scale, thresholds and the rest: our choice
GEM = dict(resize="fixed", size=448, interpolation="bicubic", mode="whole", templates="single", vocabulary="names",
           background_query=False, logit_scale=100.0, area_threshold=None, pamr_steps=0, point_threshold=0.5,
           point_normalize="minmax", pos_embed="bicubic-aa")
GEM_THRESHOLD = {"voc21": 0.5, "context60": 0.5, "coco_object": 0.5}  # our documented defaults

TABLES = {"sclip": (SCLIP_BASE, SCLIP_DATASET), "clearclip": (CLEARCLIP_BASE, CLEARCLIP_DATASET),
          "naclip": (NACLIP_BASE, NACLIP_DATASET)}


@pytest.mark.parametrize("preset,dataset", [(p, d) for p, (_, per) in TABLES.items() for d in sorted(per)])
def test_slide_family_presets_per_dataset(preset, dataset):
    base, per = TABLES[preset]
    spec = load_dataset_spec(dataset)
    protocol, source = resolve_protocol(preset, spec)
    expected = {**base, **per[dataset]}
    assert {k: getattr(protocol, k) for k in expected} == expected
    for key in per[dataset]:
        assert source[key] == f"dataset {dataset}"
    assert source["crop"] == "dataset cityscapes" if (preset, dataset) == ("clearclip", "cityscapes") \
        else source["crop"] == f"preset {preset}"
    protocol.check_dataset(spec)


def test_clearclip_voc21_queries_are_its_plain_names():
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("clearclip", spec)
    queries = class_queries(spec, protocol)
    assert all(len(q) == 1 for q in queries)  # no synonyms
    assert [q[0] for q in queries][:5] == ["background", "aeroplane", "bicycle", "bird", "ship"]
    assert queries[11] == ("table",) and queries[20] == ("tvmonitor",)
    sclip, _ = resolve_protocol("sclip", spec)
    assert len(class_queries(spec, sclip)[0]) == 26  # SCLIP's background: 26 scene words


@pytest.mark.parametrize("dataset", sorted(SCLIP_DATASET))
def test_sclip_preset_per_dataset(dataset):
    protocol, source = resolve_protocol("sclip", load_dataset_spec(dataset))
    expected = {**SCLIP_BASE, **SCLIP_DATASET[dataset]}
    assert {k: getattr(protocol, k) for k in expected} == expected
    for key in SCLIP_DATASET[dataset]:
        assert source[key] == f"dataset {dataset}"
    assert source["crop"] == "preset sclip"


@pytest.mark.parametrize("dataset", list_datasets())
def test_gem_preset_per_dataset(dataset):
    spec = load_dataset_spec(dataset)
    protocol, source = resolve_protocol("gem", spec)
    assert {k: getattr(protocol, k) for k in GEM} == GEM
    assert protocol.prob_threshold == GEM_THRESHOLD.get(dataset)
    assert set(source.values()) == ({"preset gem", f"dataset {dataset}"} if dataset in GEM_THRESHOLD else {"preset gem"})
    protocol.check_dataset(spec)
    assert read_templates(protocol.templates) == ["a photo of a {}."]
    if spec.type == "dense" and spec.background is not None:
        queries = class_queries(spec, protocol)
        assert queries[spec.background] == () and all(len(q) == 1 for i, q in enumerate(queries) if i != spec.background)
        # the old behaviour: a query named "background", no threshold
        old, _ = resolve_protocol("gem", spec, background_query=True, prob_threshold=None)
        old.check_dataset(spec)
        assert class_queries(spec, old)[spec.background] == ("background",)


def test_gem_without_background_query_needs_a_threshold():
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("gem", spec, prob_threshold=None)
    with pytest.raises(ValueError, match="prob_threshold"):
        protocol.check_dataset(spec)
    protocol, _ = resolve_protocol("gem", spec, background_prompts=("sky",))
    with pytest.raises(ValueError, match="background_query"):
        protocol.check_dataset(spec)
    with pytest.raises(TypeError, match="background_query"):
        Protocol(background_query="no")


def test_every_gem_value_says_where_it_comes_from():
    notes = PRESET_NOTES["gem"]
    for key in ("resize", "size", "interpolation", "mode", "templates", "vocabulary", "background_query",
                "logit_scale", "prob_threshold", "pos_embed"):
        assert key in notes
    assert "our choice" in notes["logit_scale"] and "our choice" in notes["prob_threshold"]
    for dataset in GEM_THRESHOLD:
        assert any(s.startswith("gem preset prob_threshold") and "our choice" in s
                   for s in load_dataset_spec(dataset).sources)
    text = describe(*resolve_protocol("gem", load_dataset_spec("voc21")))
    assert "# preset gem: our choice (CLIP's learned scale 100" in text


def test_every_preset_lists_every_setting_and_builds():
    fields = set(Protocol().to_dict())
    for name, settings in PRESETS.items():
        assert set(settings) == fields
        assert Protocol(**settings).preset == name
    assert len(read_templates(PRESETS["sclip"]["templates"])) == 80
    assert set(PRESETS) == {"gem", "sclip", "clearclip", "naclip", "proxyclip"} == set(PRESET_INFO)


OVERRIDES = {"resize": "none", "size": 512, "max_long_side": 1024, "interpolation": "bilinear", "mode": "whole",
             "crop": 336, "stride": 224, "templates": "single", "vocabulary": "names",
             "background_prompts": ("sky", "wall"), "logit_scale": 30.0, "prob_threshold": None,
             "area_threshold": None, "pamr_steps": 10, "pamr_dilations": (4, 8), "point_threshold": 0.3,
             "point_normalize": "none", "background_query": False, "pos_embed": "bilinear"}


@pytest.mark.parametrize("key", sorted(OVERRIDES))
def test_each_setting_can_be_overridden_alone(key):
    base, _ = resolve_protocol("sclip", load_dataset_spec("voc21"))
    protocol, source = resolve_protocol("sclip", load_dataset_spec("voc21"), **{key: OVERRIDES[key]})
    assert getattr(protocol, key) == OVERRIDES[key] and source[key] == "override"
    others = {k: v for k, v in protocol.to_dict().items() if k != key}
    assert others == {k: v for k, v in base.to_dict().items() if k != key}


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_protocol("mmseg")
    with pytest.raises(ValueError, match="unknown protocol settings"):
        resolve_protocol("gem", crop_size=3)
    for bad in (dict(mode="tiles"), dict(stride=300, crop=224), dict(prob_threshold=1.5), dict(size=0),
                dict(interpolation="nearest"), dict(logit_scale=0), dict(background_prompts=()),
                dict(pos_embed="bicubic"), dict(vocabulary="words")):
        with pytest.raises(ValueError):
            resolve_protocol("gem", **bad)
    voc20 = load_dataset_spec("voc20")
    for needs_background in (dict(prob_threshold=0.2), dict(background_prompts=("sky",))):
        protocol, _ = resolve_protocol("gem", voc20, **needs_background)
        with pytest.raises(ValueError, match="background class"):
            protocol.check_dataset(voc20)
    protocol, _ = resolve_protocol("gem", templates="no_such_templates")
    with pytest.raises(ValueError, match="unknown templates"):
        protocol.check_dataset(voc20)
    protocol, _ = resolve_protocol("gem", vocabulary="no_such_file.txt")
    with pytest.raises(ValueError, match="vocabulary file"):
        protocol.check_dataset(voc20)
    protocol, _ = resolve_protocol("gem", vocabulary="voc21_clearclip.txt")  # 21 lines for 20 classes
    with pytest.raises(ValueError, match="has 21 classes"):
        protocol.check_dataset(voc20)


def test_describe_prints_every_setting_and_its_origin():
    protocol, source = resolve_protocol("sclip", load_dataset_spec("cityscapes"), pamr_steps=10)
    text = describe(protocol, source)
    assert len(text.splitlines()) == len(protocol.to_dict())
    assert "size                 560" in text and "# dataset cityscapes" in text
    assert "pamr_steps           10" in text and "# override" in text


def test_cli_prints_presets_and_resolved_protocols(capsys):
    assert cli(["eval", "--show-preset", "sclip"]) == 0
    out = capsys.readouterr().out
    assert "templates            'imagenet80'" in out
    assert "voc21           logit_scale=65, prob_threshold=0.1, area_threshold=0.1" in out
    assert "cityscapes      size=560" in out
    assert cli(["eval", "--dataset", "voc21", "--preset", "sclip", "--show-protocol", "--prob-threshold", "none",
                "--pamr-dilations", "4,8", "--background-prompts", "sky,wall"]) == 0
    out = capsys.readouterr().out
    assert "prob_threshold       None" in out and "pamr_dilations       [4, 8]" in out
    assert "background_prompts   ['sky', 'wall']" in out and "logit_scale          65.0" in out
    assert cli(["eval", "--dataset", "voc20", "--show-protocol", "--prob-threshold", "0.3"]) == 2
    assert "background class" in capsys.readouterr().err
    assert cli(["eval", "--list-datasets"]) == 0
    assert "coco_object     81 classes" in capsys.readouterr().out
    assert cli(["eval", "--dataset", "voc21", "--show-protocol", "--background-query", "--prob-threshold", "none",
                "--pos-embed", "bilinear"]) == 0
    out = capsys.readouterr().out
    assert "background_query     True" in out and "pos_embed            'bilinear'" in out
    assert cli(["eval", "--dataset", "voc21", "--show-protocol", "--prob-threshold", "none"]) == 2
    assert "--background-query" in capsys.readouterr().err


def test_list_presets_names_each_table_its_datasets_and_sources(capsys):
    assert cli(["eval", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == preset_table()
    for name, info in PRESET_INFO.items():
        assert f"--method {info['method']}" in out and info["source"] in out
    assert "voc21 (59.63)" in out and "coco_stuff (25.69)" in out  # SCLIP / NACLIP README results
    assert "cityscapes (38.27)" in out
    blocks = out.split("\n")
    assert sum(line[:1].strip() != "" for line in blocks) == len(PRESETS)  # one header line per preset
