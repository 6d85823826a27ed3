"""Every preset resolves to its documented settings, per dataset, and each setting can be overridden."""
import pytest

from gemseg.cli import main as cli
from gemseg.eval import PRESETS, Protocol, describe, list_datasets, load_dataset_spec, read_templates, resolve_protocol

SCLIP_BASE = dict(resize="short_side", size=336, max_long_side=2048, interpolation="bilinear-cv2", mode="slide",
                  crop=224, stride=112, templates="imagenet80", vocabulary="synonyms", logit_scale=40.0,
                  prob_threshold=None, area_threshold=None, pamr_steps=0, pamr_dilations=(8, 16))
# the published per-dataset values of SCLIP's configs
SCLIP_DATASET = {
    "voc21": dict(logit_scale=65.0, prob_threshold=0.1, area_threshold=0.1),
    "context60": dict(logit_scale=50.0, prob_threshold=0.1),
    "coco_object": dict(logit_scale=50.0, prob_threshold=0.1),
    "coco_stuff": dict(size=448),
    "cityscapes": dict(size=560),
    "voc20": {}, "context59": {}, "ade20k": {}, "openimages_v7": {},
}
GEM = dict(resize="fixed", size=448, interpolation="bicubic", mode="whole", templates="single", vocabulary="names",
           logit_scale=100.0, prob_threshold=None, area_threshold=None, pamr_steps=0, point_threshold=0.5,
           point_normalize="minmax")


@pytest.mark.parametrize("dataset", sorted(SCLIP_DATASET))
def test_sclip_preset_per_dataset(dataset):
    protocol, source = resolve_protocol("sclip", load_dataset_spec(dataset))
    expected = {**SCLIP_BASE, **SCLIP_DATASET[dataset]}
    assert {k: getattr(protocol, k) for k in expected} == expected
    for key in SCLIP_DATASET[dataset]:
        assert source[key] == f"dataset {dataset}"
    assert source["crop"] == "preset sclip"


@pytest.mark.parametrize("dataset", list_datasets())
def test_gem_preset_is_the_same_on_every_dataset(dataset):
    spec = load_dataset_spec(dataset)
    protocol, source = resolve_protocol("gem", spec)
    assert {k: getattr(protocol, k) for k in GEM} == GEM
    assert set(source.values()) == {"preset gem"}
    protocol.check_dataset(spec)
    assert read_templates(protocol.templates) == ["a photo of a {}."]


def test_every_preset_lists_every_setting_and_builds():
    fields = set(Protocol().to_dict())
    for name, settings in PRESETS.items():
        assert set(settings) == fields
        assert Protocol(**settings).preset == name
    assert len(read_templates(PRESETS["sclip"]["templates"])) == 80


OVERRIDES = {"resize": "none", "size": 512, "max_long_side": 1024, "interpolation": "bilinear", "mode": "whole",
             "crop": 336, "stride": 224, "templates": "single", "vocabulary": "names",
             "background_prompts": ("sky", "wall"), "logit_scale": 30.0, "prob_threshold": None,
             "area_threshold": None, "pamr_steps": 10, "pamr_dilations": (4, 8), "point_threshold": 0.3,
             "point_normalize": "none"}


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
                dict(interpolation="nearest"), dict(logit_scale=0), dict(background_prompts=())):
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
