"""Evaluation protocols: every setting that changes a benchmark number, as named presets that can be
printed in full and overridden one setting at a time.

Resolution order: the preset's settings, then the dataset's own values for that preset (the
``presets`` key of its metadata, e.g. SCLIP's logit scale 65 on VOC21), then explicit overrides.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .datasets import DatasetSpec, read_templates

RESIZES = ("fixed", "short_side", "none")
INTERPOLATIONS = ("bicubic", "bilinear", "bilinear-cv2")
MODES = ("whole", "slide")
VOCABULARIES = ("names", "synonyms")
POINT_NORMALIZATIONS = ("minmax", "none")


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
    #                            of the dataset's synonym file is a query, a class scores the max over them
    background_prompts: tuple[str, ...] | None = None  # queries replacing the background class's names
    logit_scale: float = 100.0  # probabilities are softmax(logit_scale * cosine) over all queries
    prob_threshold: float | None = None  # pixels whose top class probability is below become background
    area_threshold: float | None = None  # foreground classes covering at most this fraction of an image's
    #                                      foreground pixels are dropped (SCLIP's area_thd)
    pamr_steps: int = 0  # PAMR refinement iterations on the scores (0: off)
    pamr_dilations: tuple[int, ...] = (8, 16)  # PAMR neighbourhood dilations, in pixels
    point_threshold: float = 0.5  # point labels: a point is predicted positive where the normalized score >= this
    point_normalize: str = "minmax"  # point labels: "minmax" per image and class, or "none" (raw cosine)

    def __post_init__(self):
        for name in ("size", "max_long_side", "crop", "stride", "pamr_steps"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("logit_scale", "point_threshold", "prob_threshold", "area_threshold"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        for name, allowed in (("resize", RESIZES), ("interpolation", INTERPOLATIONS), ("mode", MODES),
                              ("vocabulary", VOCABULARIES), ("point_normalize", POINT_NORMALIZATIONS)):
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
        """Raise if a setting needs something the dataset lacks (a background class, templates)."""
        read_templates(self.templates)
        if spec.type == "dense" and spec.background is None:
            for name in ("background_prompts", "prob_threshold", "area_threshold"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs a background class, and {spec.name} has none")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Protocol)}

# Each preset lists every setting, so that printing it shows the whole protocol.
PRESETS: dict[str, dict[str, Any]] = {
    # GEM paper (Bousselham et al., CVPR 2024): the whole image resized to 448x448 (bicubic, as CLIP's
    # preprocessing), one forward pass, the single template "a photo of a {}.", one query per class.
    # Background, where a dataset has one, is the class named "background" in its class file.
    "gem": {**_DEFAULTS, "preset": "gem", "resize": "fixed", "size": 448, "interpolation": "bicubic",
            "mode": "whole", "templates": "single", "vocabulary": "names", "logit_scale": 100.0,
            "prob_threshold": None, "area_threshold": None, "pamr_steps": 0, "point_threshold": 0.5,
            "point_normalize": "minmax"},
    # SCLIP / ClearCLIP / NACLIP tables (SCLIP configs, github.com/wangf3014/SCLIP): short side 336 with the
    # long side capped at 2048 (mmseg Resize, OpenCV bilinear), 224 crops with stride 112, the 80 ImageNet
    # templates, the published synonym files, logit scale 40 and no threshold unless the dataset says
    # otherwise (VOC21, Context60, COCO-Object set logit scale and a background probability threshold;
    # COCO-Stuff uses short side 448 and Cityscapes 560; see each dataset's metadata).
    "sclip": {**_DEFAULTS, "preset": "sclip", "resize": "short_side", "size": 336, "max_long_side": 2048,
              "interpolation": "bilinear-cv2", "mode": "slide", "crop": 224, "stride": 112,
              "templates": "imagenet80", "vocabulary": "synonyms", "logit_scale": 40.0, "prob_threshold": None,
              "area_threshold": None, "pamr_steps": 0, "pamr_dilations": (8, 16)},
    # ProxyCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ProxyCLIP): proxyclip_segmentor.py defaults
    # slide_crop=336, slide_stride=112, logit_scale=40, prob_thd=0.0 (= no threshold) and the 80 ImageNet
    # templates (openai_imagenet_template); configs/cfg_*.py: mmseg Resize scale=(2048, 336), keep_ratio.
    # Per-dataset values: PROXYCLIP_DATASETS below. Use it with --method proxyclip.
    "proxyclip": {**_DEFAULTS, "preset": "proxyclip", "resize": "short_side", "size": 336, "max_long_side": 2048,
                  "interpolation": "bilinear-cv2", "mode": "slide", "crop": 336, "stride": 112,
                  "templates": "imagenet80", "vocabulary": "synonyms", "logit_scale": 40.0, "prob_threshold": None,
                  "area_threshold": None, "pamr_steps": 0, "pamr_dilations": (8, 16)},
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
    """Every setting of ``protocol``, one per line, with where it came from."""
    lines = []
    for key, value in protocol.to_dict().items():
        text = f"{key:<20} {value!r}" if value is None or isinstance(value, str) else f"{key:<20} {value}"
        if source and key in source and key != "preset":
            text = f"{text:<44} # {source[key]}"
        lines.append(text)
    return "\n".join(lines)
