"""Evaluation protocols: every setting that changes a benchmark number, as named presets that can be
printed in full and overridden one setting at a time.

Resolution order: the preset's settings, then the dataset's own values for that preset (the
``presets`` key of its metadata, e.g. SCLIP's logit scale 65 on VOC21), then explicit overrides.
Where each preset's values come from: :data:`PRESET_NOTES` and docs/evaluation.md; the tables they
reproduce: :data:`PRESET_INFO` and docs/reproduce.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..backbones.base import POS_EMBED_MODES
from ..segment import LabelRule
from ..segmenter import INTERPOLATIONS, MODES, InputRule
from ..transforms import RESIZES
from .datasets import DatasetSpec, read_class_file, read_templates

VOCABULARIES = ("names", "synonyms")
POINT_NORMALIZATIONS = ("minmax", "none")
POINT_CLASSES = ("present", "annotated")


@dataclass(frozen=True)
class Protocol:
    """How images are fed to the model and how scores become labels."""

    preset: str = "custom"  # the preset these settings started from
    resize: str = "fixed"  # "fixed": size x size, aspect not kept; "short_side": short side to size (long side
    #                        capped at max_long_side, aspect kept); "none": native resolution
    size: int = 448  # target size in pixels (see resize)
    max_long_side: int = 2048  # "short_side": the long side never exceeds this (mmseg Resize scale=(2048, size))
    interpolation: str = "bicubic"  # "bicubic"/"bilinear": PIL, antialiased (CLIP's preprocessing);
    #                                  "bilinear-cv2": no antialiasing, as OpenCV/mmseg resize
    mode: str = "whole"  # "whole": one forward pass on the resized image; "slide": overlapping crops
    crop: int = 224  # "slide": crop size in pixels
    stride: int = 112  # "slide": crop stride in pixels; overlapping scores are averaged
    templates: str = "single"  # prompt template set ("single", "imagenet80") or a text file, one per line
    vocabulary: str = "names"  # "names": one query per class (its display name); "synonyms": every synonym
    #                            of the dataset's synonym file is a query, a class scores the max over them;
    #                            "<file>.txt": that class file (next to the dataset's metadata, or a path)
    background_query: bool = True  # True: the background class is scored by its own queries; False: only
    #                                foreground classes are queries, background is where the top probability
    #                                is below prob_threshold (the GEM authors' rule)
    background_prompts: tuple[str, ...] | None = None  # queries replacing the background class's names
    logit_scale: float = 100.0  # probabilities are softmax(logit_scale * cosine) over all queries
    prob_threshold: float | None = None  # pixels whose top class probability is below become background
    area_threshold: float | None = None  # foreground classes covering at most this fraction of an image's
    #                                      foreground pixels are dropped (SCLIP's area_thd)
    pamr_steps: int = 0  # PAMR refinement iterations on the scores (0: off)
    pamr_dilations: tuple[int, ...] = (8, 16)  # PAMR neighbourhood dilations, in pixels
    point_threshold: float = 0.5  # point labels: a point is predicted positive where the normalized score >= this
    point_normalize: str = "minmax"  # point labels: "minmax" per image and class, or "none" (raw cosine)
    pos_embed: str = "bicubic-aa"  # position-embedding resampling of the model (POS_EMBED_MODES): gem-torch's
    #                                antialiased bicubic by size; "bicubic-scale" SCLIP's family; "bilinear"
    point_classes: str = "present"  # point labels: the classes scored in an image, those with a "yes" point
    #                                 ("present") or with any yes/no point ("annotated"); docs/evaluation.md

    def __post_init__(self):
        for name in ("size", "max_long_side", "crop", "stride", "pamr_steps"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("logit_scale", "point_threshold", "prob_threshold", "area_threshold"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if self.vocabulary not in VOCABULARIES and not str(self.vocabulary).endswith(".txt"):
            raise ValueError(f"vocabulary must be one of {', '.join(VOCABULARIES)} or a class file (.txt), "
                             f"got {self.vocabulary!r}")
        if not isinstance(self.background_query, bool):
            raise TypeError(f"background_query must be True or False, got {self.background_query!r}")
        for name, allowed in (("resize", RESIZES), ("interpolation", INTERPOLATIONS), ("mode", MODES),
                              ("point_normalize", POINT_NORMALIZATIONS), ("pos_embed", POS_EMBED_MODES),
                              ("point_classes", POINT_CLASSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("size", "max_long_side", "crop", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {getattr(self, name)!r}")
        if self.stride > self.crop:
            raise ValueError(f"stride {self.stride} > crop {self.crop} would leave pixels without a score")
        if self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        for name in ("prob_threshold", "area_threshold"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"{name} must lie in [0, 1] or be None, got {v}")
        if self.pamr_steps < 0 or any(d < 1 for d in self.pamr_dilations) or not self.pamr_dilations:
            raise ValueError("pamr_steps must be >= 0 and pamr_dilations positive integers")
        object.__setattr__(self, "pamr_dilations", tuple(int(d) for d in self.pamr_dilations))
        if self.background_prompts is not None:
            prompts = tuple(p.strip() for p in self.background_prompts if p.strip())
            if not prompts:
                raise ValueError("background_prompts is empty; give None to keep the class file's names")
            object.__setattr__(self, "background_prompts", prompts)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def check_dataset(self, spec: DatasetSpec) -> None:
        """Raise if a setting needs something the dataset lacks (a background class, templates, a
        vocabulary file with one line per class) or leaves background unpredictable."""
        read_templates(self.templates)
        if spec.type != "dense":
            return
        if spec.background is None:
            for name in ("background_prompts", "prob_threshold", "area_threshold"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs a background class, and {spec.name} has none")
        elif not self.background_query:
            if self.prob_threshold is None:
                raise ValueError(f"without a background query, background ({spec.name}) is predicted only "
                                 "below prob_threshold; set --prob-threshold P, or --background-query")
            if self.background_prompts is not None:
                raise ValueError("background_prompts are queries, which background_query=False removes; "
                                 "pass --background-query with them")
        vocabulary_classes(spec, self)

    def segmenter_settings(self, spec: DatasetSpec, **kwargs) -> dict[str, Any]:
        """What :meth:`gemseg.Segmenter.from_dataset` builds from this protocol on ``spec``; see
        :func:`segmenter_settings`."""
        return segmenter_settings(spec, self, **kwargs)


def vocabulary_classes(spec: DatasetSpec, protocol: Protocol) -> list[tuple[str, ...]]:
    """Per class of ``spec``, the names its queries are made of under ``protocol.vocabulary`` (before
    background rules): the display name, the synonym file's names, or a class file's line."""
    if protocol.vocabulary == "names":
        return [c[:1] for c in spec.classes]
    if protocol.vocabulary == "synonyms":
        return list(spec.synonyms)
    path = Path(protocol.vocabulary)
    if not path.is_absolute() and not path.exists():
        path = Path(spec.path).parent / path
    if not path.is_file():
        raise ValueError(f"vocabulary file {protocol.vocabulary} not found (looked next to {spec.path} too)")
    classes = read_class_file(path)
    if len(classes) != spec.num_classes:
        raise ValueError(f"vocabulary file {path} has {len(classes)} classes, {spec.name} has {spec.num_classes}")
    return classes


def class_queries(spec: DatasetSpec, protocol: Protocol) -> list[tuple[str, ...]]:
    """The queries of each class under ``protocol``: its display name ("names"), every name of the
    dataset's synonym file ("synonyms") or its line of a class file; ``background_prompts`` replace the
    background class's, and with ``background_query=False`` the background class has none."""
    per_class = vocabulary_classes(spec, protocol)
    if protocol.background_prompts is not None:
        if spec.background is None:
            raise ValueError(f"background_prompts need a background class, and {spec.name} has none")
        per_class[spec.background] = protocol.background_prompts
    if not protocol.background_query and spec.background is not None:
        per_class[spec.background] = ()
    return per_class


def segmenter_settings(spec: DatasetSpec, protocol: Protocol, *, classes: Sequence[Sequence[str]] | None = None,
                       active: Sequence[int] | None = None, crop_batch: int = 8) -> dict[str, Any]:
    """The keyword arguments of :class:`gemseg.Segmenter` under ``protocol`` on ``spec`` (plus its
    ``pos_embed``): the queries of each class (:func:`class_queries`, or ``classes``), only those of the
    ``active`` classes if given; the label rule; the input rule; PAMR as the ``"pamr"`` refiner."""
    per_class = class_queries(spec, protocol) if classes is None else [tuple(c) for c in classes]
    keep = set(range(len(per_class))) if active is None else set(active)
    queries, owner = [], []
    for c, names in enumerate(per_class):
        if c in keep:
            queries += list(names)
            owner += [c] * len(names)
    p = protocol
    names = list(spec.class_names) if classes is None else [c[0] if c else str(i) for i, c in enumerate(per_class)]
    if spec.type == "dense":
        rule = LabelRule(background=spec.background, logit_scale=p.logit_scale, prob_threshold=p.prob_threshold,
                         area_threshold=p.area_threshold, reduction="softmax_then_max")
    else:  # point labels are scored from the scores, no label rule applies
        rule = LabelRule(background=None, logit_scale=p.logit_scale)
    return {
        "queries": queries, "query_to_class": owner, "names": names, "rule": rule,
        "inputs": InputRule(resize=p.resize, size=p.size, max_long_side=p.max_long_side,
                            interpolation=p.interpolation, mode=p.mode, crop=p.crop, stride=p.stride,
                            crop_batch=crop_batch),
        "templates": read_templates(p.templates),
        "refine": [("pamr", {"steps": p.pamr_steps, "dilations": p.pamr_dilations})] if p.pamr_steps else [],
        "pos_embed": p.pos_embed,
    }


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Protocol)}
_SLIDE_FAMILY = {"resize": "short_side", "max_long_side": 2048, "interpolation": "bilinear-cv2", "mode": "slide",
                 "templates": "imagenet80", "vocabulary": "synonyms", "background_query": True,
                 "prob_threshold": None, "area_threshold": None, "pos_embed": "bicubic-scale"}

# Each preset lists every setting, so that printing it shows the whole protocol. Per-dataset values live
# in each dataset's metadata (``presets``), with their sources; PRESET_NOTES says where each value is from.
PRESETS: dict[str, dict[str, Any]] = {
    # GEM (Bousselham et al., CVPR 2024; github.com/WalBouss/GEM): 448x448 bicubic, one pass, one template,
    # one query per foreground class; background where the top probability is below a threshold.
    "gem": {**_DEFAULTS, "preset": "gem", "resize": "fixed", "size": 448, "interpolation": "bicubic",
            "mode": "whole", "templates": "single", "vocabulary": "names", "background_query": False,
            "logit_scale": 100.0, "prob_threshold": None, "area_threshold": None, "pamr_steps": 0,
            "point_threshold": 0.5, "point_normalize": "minmax", "pos_embed": "bicubic-aa"},
    # SCLIP (Wang et al., ECCV 2024; github.com/wangf3014/SCLIP configs/): short side 336 (mmseg Resize
    # scale=(2048, 336)), 224 crops with stride 112, 80 templates, synonym files, logit scale 40.
    "sclip": {**_DEFAULTS, **_SLIDE_FAMILY, "preset": "sclip", "size": 336, "crop": 224, "stride": 112,
              "logit_scale": 40.0, "pamr_steps": 0},
    # ClearCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ClearCLIP configs/, clearclip_segmentor.py):
    # short side 448, 448 crops with stride 224, logit scale 50.
    "clearclip": {**_DEFAULTS, **_SLIDE_FAMILY, "preset": "clearclip", "size": 448, "crop": 448, "stride": 224,
                  "logit_scale": 50.0, "pamr_steps": 0},
    # NACLIP (Hajimiri et al., WACV 2025; github.com/sinahmr/NACLIP configs/, naclip.py): short side 336,
    # 224 crops with stride 112, logit scale 40, PAMR 10 steps with dilations 8, 16 (main table).
    "naclip": {**_DEFAULTS, **_SLIDE_FAMILY, "preset": "naclip", "size": 336, "crop": 224, "stride": 112,
               "logit_scale": 40.0, "pamr_steps": 10, "pamr_dilations": (8, 16)},
    # ProxyCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ProxyCLIP): proxyclip_segmentor.py defaults
    # slide_crop=336, slide_stride=112, logit_scale=40, prob_thd=0.0 (= no threshold) and the 80 ImageNet
    # templates (openai_imagenet_template); configs/cfg_*.py: mmseg Resize scale=(2048, 336), keep_ratio.
    # Per-dataset values: PRESET_DATASETS below. Use it with --method proxyclip.
    "proxyclip": {**_DEFAULTS, **_SLIDE_FAMILY, "preset": "proxyclip", "size": 336, "crop": 336, "stride": 112,
                  "logit_scale": 40.0, "pamr_steps": 0},
}

_OURS = "our choice"
_SCLIP_CFG = "SCLIP configs/cfg_*.py (as recorded earlier in gemseg; not re-read for the new presets)"
_CLEAR_CFG = "ClearCLIP configs/cfg_*.py Resize(scale=(2048, 448))"
_NA_CFG = "NACLIP configs/cfg_*.py Resize(scale=(2048, 336))"
_SLIDE_NOTES = {"max_long_side": "mmseg Resize scale=(2048, size)", "interpolation": "mmseg Resize (cv2 bilinear)",
                "templates": "prompts/imagenet_template.py (80)",
                "background_query": "the background line of configs/cls_*.txt",
                "pos_embed": "clip/model.py interpolate_pos_encoding, scale_factor (g + 0.1) / g0"}
# where each preset's own value of a setting comes from (settings they do not use are left out)
PRESET_NOTES: dict[str, dict[str, str]] = {
    "gem": {"resize": "GEM gem/gem.py get_gem_img_transform: Resize((448, 448), BICUBIC)", "size": "gem/gem.py get_gem_img_transform",
            "interpolation": "gem/gem.py get_gem_img_transform", "mode": "GEM README (one forward pass per image)", "templates": "gem-torch's prompt 'a photo of a {}.' (as recorded earlier in gemseg)",
            "vocabulary": "GEM README (foreground class names)",
            "background_query": "GEM README: no background prompt, threshold rule",
            "logit_scale": f"{_OURS} (CLIP's learned scale 100; GEM's README softmaxes min-max maps)",
            "prob_threshold": f"{_OURS} per dataset (README: chosen by a sweep; its 0.85 is for min-max maps)",
            "area_threshold": _OURS, "pamr_steps": _OURS, "point_threshold": _OURS, "point_normalize": _OURS,
            "pos_embed": "gem-torch (open_clip resize, bicubic antialiased)"},
    "sclip": {**_SLIDE_NOTES, "vocabulary": "SCLIP configs/cls_*.txt (the *_sclip.txt synonym files)",
              "resize": _SCLIP_CFG, "size": _SCLIP_CFG, "mode": _SCLIP_CFG,
              "crop": _SCLIP_CFG, "stride": _SCLIP_CFG, "logit_scale": _SCLIP_CFG, "prob_threshold": _SCLIP_CFG,
              "area_threshold": _SCLIP_CFG, "pamr_steps": "SCLIP main table: no PAMR"},
    "clearclip": {**_SLIDE_NOTES, "vocabulary": "SCLIP's synonym files, assumed (ClearCLIP's cls_*.txt read for "
                                                "VOC21 only, see the dataset's value)",
                  "resize": _CLEAR_CFG, "size": _CLEAR_CFG,
                  "mode": "clearclip_segmentor.py slide_crop=448",
                  "crop": "clearclip_segmentor.py slide_crop=448",
                  "stride": "clearclip_segmentor.py slide_stride=224",
                  "logit_scale": "clearclip_segmentor.py logit_scale=50",
                  "prob_threshold": "configs/cfg_*.py prob_thd (default 0.0)",
                  "area_threshold": "ClearCLIP has no area rule", "pamr_steps": "ClearCLIP has no PAMR",
                  "pos_embed": "open_clip/transformer.py interpolate_pos_encoding, scale_factor (g + 0.1) / g0"},
    "naclip": {**_SLIDE_NOTES, "vocabulary": "SCLIP's synonym files, assumed (NACLIP's README: dataset configs "
                                             "follow SCLIP; its cls_*.txt not read)",
               "resize": _NA_CFG, "size": _NA_CFG, "mode": "naclip.py slide_crop=224",
               "crop": "naclip.py slide_crop=224", "stride": "naclip.py slide_stride=112", "logit_scale": "naclip.py logit_scale=40",
               "prob_threshold": "configs/cfg_*.py prob_thd (default 0.0)",
               "area_threshold": "NACLIP has no area rule",
               "pamr_steps": "naclip.py pamr_steps=10; README main results: test_all.sh ... pamr on",
               "pamr_dilations": "naclip.py pamr_stride=(8, 16)"},
    "proxyclip": {**_SLIDE_NOTES, "vocabulary": "SCLIP's synonym files, assumed (ProxyCLIP's cls_*.txt not read)",
                  "resize": "ProxyCLIP configs/cfg_*.py Resize(scale=(2048, 336))", "size": "configs/cfg_*.py",
                  "mode": "proxyclip_segmentor.py slide_crop=336", "crop": "proxyclip_segmentor.py slide_crop=336",
                  "stride": "proxyclip_segmentor.py slide_stride=112",
                  "logit_scale": "proxyclip_segmentor.py logit_scale=40",
                  "prob_threshold": "proxyclip_segmentor.py prob_thd=0.0 (per dataset: PRESET_DATASETS)",
                  "area_threshold": "ProxyCLIP has no area rule", "pamr_steps": "ProxyCLIP has no PAMR",
                  "pos_embed": "assumed as ClearCLIP's (same authors' open_clip fork); not re-read"},
}

_EIGHT = ("voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k", "coco_stuff")
# The table each preset reproduces: paper, model, method, datasets, published mIoU with its source
# (None: not verified in the sources read for gemseg; fill in from the paper and cite it).
PRESET_INFO: dict[str, dict[str, Any]] = {
    "gem": {"paper": "GEM, Bousselham et al., CVPR 2024 (arXiv 2312.00878)", "method": "gem",
            "model": "ViT-B/16", "pretrained": "openai", "datasets": ("voc21", "context60", "coco_object",
                                                                      "voc20", "context59", "ade20k",
                                                                      "openimages_v7"),
            "source": "github.com/WalBouss/GEM (README, gem/gem.py)", "published": {}, "published_from": None},
    "sclip": {"paper": "SCLIP, Wang et al., ECCV 2024 (arXiv 2312.01597)", "method": "sclip",
              "model": "ViT-B/16", "pretrained": "openai", "datasets": _EIGHT,
              "source": "github.com/wangf3014/SCLIP configs/",
              "published": {"voc21": 59.63, "context60": 31.74, "coco_object": 33.52, "voc20": 81.54,
                            "cityscapes": 32.34, "context59": 34.46, "ade20k": 16.45, "coco_stuff": 22.77},
              "published_from": "SCLIP README, 'Results' (the repository's default setup)"},
    "clearclip": {"paper": "ClearCLIP, Lan et al., ECCV 2024 (arXiv 2407.12442)", "method": "clearclip",
                  "model": "ViT-B/16", "pretrained": "openai", "datasets": _EIGHT,
                  "source": "github.com/mc-lan/ClearCLIP configs/, clearclip_segmentor.py", "published": {},
                  "published_from": None},
    "naclip": {"paper": "NACLIP, Hajimiri et al., WACV 2025 (arXiv 2404.08181)", "method": "naclip",
               "model": "ViT-B/16", "pretrained": "openai", "datasets": _EIGHT,
               "source": "github.com/sinahmr/NACLIP configs/, naclip.py",
               "published": {"voc21": 64.07, "context60": 34.99, "coco_object": 36.19, "voc20": 83.03,
                             "cityscapes": 38.27, "context59": 38.35, "ade20k": 19.05, "coco_stuff": 25.69},
               "published_from": "NACLIP README, 'Results' (default setup, PAMR on)"},
    "proxyclip": {"paper": "ProxyCLIP, Lan et al., ECCV 2024 (arXiv 2408.04883)", "method": "proxyclip",
                  "model": "ViT-B/16", "pretrained": "openai", "datasets": _EIGHT,
                  "source": "github.com/mc-lan/ProxyCLIP configs/, proxyclip_segmentor.py", "published": {},
                  "published_from": None},
}

# --- per-dataset values of presets whose source is not the dataset metadata --------------------------------
# ProxyCLIP configs/cfg_<dataset>.py (commit 05c3c18): VOC21 prob_thd=0.2, Context60 prob_thd=0.15,
# COCO-Object prob_thd=0.25 (all short side 336); ADE20K short side 448; Cityscapes short side 448 with
# slide_crop=224, slide_stride=112; COCO-Stuff short side 336. VOC20 and Context59 have no config in the
# repository: the preset's values apply.
PRESET_DATASETS: dict[str, dict[str, dict[str, Any]]] = {
    "proxyclip": {
        "voc21": {"prob_threshold": 0.2},
        "context60": {"prob_threshold": 0.15},
        "coco_object": {"prob_threshold": 0.25},
        "ade20k": {"size": 448},
        "cityscapes": {"size": 448, "crop": 224, "stride": 112},
    },
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def resolve_protocol(preset: str = "gem", spec: DatasetSpec | None = None,
                     **overrides: Any) -> tuple[Protocol, dict[str, str]]:
    """The protocol a run uses, and where each setting came from.

    Args:
        preset: a name from :data:`PRESETS`.
        spec: the dataset; its ``presets[preset]`` values apply on top of the preset.
        overrides: explicit settings (a key given with ``None`` sets ``None``, e.g. no threshold).
    Returns:
        ``(protocol, source)`` with ``source[setting]`` one of ``"preset <name>"``,
        ``"dataset <name>"``, ``"override"``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(list_presets())}")
    values = dict(PRESETS[preset])
    source = {k: f"preset {preset}" for k in values}
    layers = [({**PRESET_DATASETS.get(preset, {}).get(spec.name, {}), **spec.presets.get(preset, {})},
                f"dataset {spec.name}")] if spec is not None else []
    layers.append((overrides, "override"))
    for layer, origin in layers:
        unknown = sorted(set(layer) - set(values) - {"preset"})
        if unknown:
            raise ValueError(f"unknown protocol settings {unknown} ({origin}); valid: {sorted(values)}")
        for key, value in layer.items():
            values[key] = tuple(value) if isinstance(value, list) else value
            source[key] = origin
    return Protocol(**values), source


def describe(protocol: Protocol, source: dict[str, str] | None = None) -> str:
    """Every setting of ``protocol``, one per line, with where it came from (for a preset's own value,
    also the repository file or "our choice", from :data:`PRESET_NOTES`)."""
    lines = []
    notes = PRESET_NOTES.get(protocol.preset, {})
    for key, value in protocol.to_dict().items():
        text = f"{key:<20} {value!r}" if value is None or isinstance(value, str) else f"{key:<20} {value}"
        if source and key in source and key != "preset":
            origin = source[key]
            if origin == f"preset {protocol.preset}" and key in notes:
                origin = f"{origin}: {notes[key]}"
            text = f"{text:<44} # {origin}"
        lines.append(text)
    return "\n".join(lines)


def preset_table() -> str:
    """Every preset, the paper table it reproduces, its model and method, the datasets it covers and
    its sources, one block per preset (``gemseg eval --list-presets``)."""
    blocks = []
    for name in list_presets():
        info = PRESET_INFO.get(name)
        if info is None:
            blocks.append(f"{name}\n  (no reproduction table recorded)")
            continue
        covered = ", ".join(f"{d} ({info['published'][d]:.2f})" if d in info["published"] else d
                            for d in info["datasets"])
        blocks.append(f"{name:<10} {info['paper']}\n"
                      f"  model      --model {info['model']} --pretrained {info['pretrained']} --method {info['method']}\n"
                      f"  datasets   {covered}\n"
                      f"  published  {info['published_from'] or 'not recorded (see docs/reproduce.md)'}\n"
                      f"  settings   {info['source']}")
    return "\n".join(blocks)
