"""Evaluation protocols: every setting that changes a benchmark number, as named presets that can be
printed in full and overridden one setting at a time.

Resolution order: :class:`Protocol`'s defaults, the preset's settings, the preset's values for the dataset
(e.g. SCLIP's logit scale 65 on VOC21), a custom dataset's own ``presets`` metadata, then explicit overrides.
Each preset is one :class:`~gemseg.eval.preset.Preset` record (:mod:`gemseg.eval.presets`) holding its
settings, per-dataset values and published numbers, each with its source; :func:`describe` prints them.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..backbones.base import POS_EMBED_MODES
from ..methods import get_method
from ..refiners import list_refiners
from ..segment import LabelRule
from ..segmenter import INTERPOLATIONS, MODES, InputRule
from ..transforms import RESIZES
from .datasets import DatasetSpec, read_class_file, read_templates
from .preset import Preset
from .presets import BUILTIN

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
    refine: tuple = ()  # refiners after PAMR: gemseg.refiners names or (name, {settings}) (the lposs presets:
    #                     ("lposs",); trident: (("sam-prompts", {"coarse_thresh": ...}),))
    mask_refine: bool = False  # CorrCLIP's map correction (refiner "masks") after the scores; needs --masks
    point_threshold: float = 0.5  # point labels: a point is predicted positive where the normalized score >= this
    point_normalize: str = "minmax"  # point labels: "minmax" per image and class, or "none" (raw cosine)
    pos_embed: str = "bicubic-aa"  # position-embedding resampling of the model (POS_EMBED_MODES): gem-torch's
    #                                antialiased bicubic by size; "bicubic-scale" SCLIP's family; "bicubic"
    #                                MaskCLIP's; "bilinear" CLIP Surgery's
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
        object.__setattr__(self, "refine", _protocol_refiners(self.refine))
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
    ``active`` classes if given; the label rule; the input rule; PAMR as the ``"pamr"`` refiner, then the
    protocol's ``refine``, then the map correction as the ``"masks"`` refiner."""
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
        "refine": ([("pamr", {"steps": p.pamr_steps, "dilations": p.pamr_dilations})] if p.pamr_steps else [])
        + list(p.refine) + (["masks"] if p.mask_refine else []),
        "pos_embed": p.pos_embed,
    }


def _protocol_refiners(refine) -> tuple:
    """A protocol's ``refine`` -> a tuple of names and ``(name, {settings})`` pairs (a JSON list of either
    reads back the same), every name registered."""
    items = (refine,) if isinstance(refine, str) or (isinstance(refine, (tuple, list)) and len(refine) == 2
                                                     and isinstance(refine[1], Mapping)) else tuple(refine)
    out = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping):
            name, settings = item[0], dict(item[1])
            if not all(isinstance(k, str) for k in settings):
                raise TypeError(f"refiner {name!r}: settings need string keys, got {sorted(map(repr, settings))}")
            out.append((name, settings))
        elif isinstance(item, str):
            name = item
            out.append(item)
        else:
            raise TypeError(f"a protocol refiner is a name or (name, {{settings}}), got {item!r}")
        if name not in list_refiners():
            raise ValueError(f"unknown refiner {name!r} in the protocol; registered: {', '.join(list_refiners())}")
    return tuple(out)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Protocol)}
_SETTINGS = frozenset(_DEFAULTS) - {"preset"}

# name -> record; the built-in ones are registered below, one block each in gemseg/eval/presets.py
PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to :data:`PRESETS` (``--preset NAME``) after checking that its settings and its
    per-dataset values are valid :class:`Protocol` settings; returns it."""
    if preset.name in PRESETS:
        raise ValueError(f"a preset named {preset.name!r} exists already")
    for where, values in (("settings", preset.values()),
                          *((f"per_dataset[{d!r}]", preset.dataset_values(d)) for d in preset.per_dataset)):
        unknown = sorted(set(values) - _SETTINGS)
        if unknown:
            raise ValueError(f"preset {preset.name}: unknown protocol settings {unknown} in {where}")
    for dataset in (None, *preset.per_dataset):
        Protocol(**{**_DEFAULTS, **preset.values(), **(preset.dataset_values(dataset) if dataset else {})})
    _check_method_settings(preset)
    PRESETS[preset.name] = preset
    return preset


def _check_method_settings(preset: Preset) -> None:
    """A preset's method settings must be settings of its method, and build them on every dataset."""
    if not preset.method_settings and not preset.per_dataset_method:
        return
    from ..methods import get_method

    kind = getattr(get_method(preset.method), "settings_type", None)
    if kind is None:
        raise ValueError(f"preset {preset.name}: method {preset.method!r} has no settings of its own")
    names = {f.name for f in dataclasses.fields(kind)}
    for dataset in (None, *preset.per_dataset_method):
        unknown = sorted(set(preset.method_values(dataset)) - names)
        if unknown:
            raise ValueError(f"preset {preset.name}: {kind.__name__} has no setting(s) {', '.join(unknown)}")
        kind(**preset.method_values(dataset))


for _preset in BUILTIN:
    register_preset(_preset)


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The record of preset ``name`` (settings, per-dataset values, published numbers, sources)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(list_presets())}")
    return PRESETS[name]


def resolve_protocol(preset: str = "gem", spec: DatasetSpec | None = None,
                     **overrides: Any) -> tuple[Protocol, dict[str, str]]:
    """The protocol a run uses, and where each setting came from.

    Args:
        preset: a name from :data:`PRESETS`.
        spec: the dataset; the preset's values for it (and a custom dataset's ``presets[preset]``
            metadata) apply on top of the preset.
        overrides: explicit settings (a key given with ``None`` sets ``None``, e.g. no threshold).
    Returns:
        ``(protocol, source)`` with ``source[setting]`` one of ``"preset <name>"``,
        ``"dataset <name>"``, ``"override"`` (:func:`describe` adds each value's citation).
    """
    record = get_preset(preset)
    values = {**_DEFAULTS, **record.values(), "preset": preset}
    source = {k: f"preset {preset}" for k in values}
    layers = [({**record.dataset_values(spec.name), **spec.presets.get(preset, {})},
               f"dataset {spec.name}")] if spec is not None else []
    layers.append((overrides, "override"))
    for layer, origin in layers:
        unknown = sorted(set(layer) - _SETTINGS)
        if unknown:
            raise ValueError(f"unknown protocol settings {unknown} ({origin}); valid: {sorted(_SETTINGS)}")
        for key, value in layer.items():
            values[key] = tuple(value) if isinstance(value, list) else value
            source[key] = origin
    return Protocol(**values), source


def _citation(preset: Preset | None, key: str, origin: str) -> str:
    """``origin`` ("preset X", "dataset Y", "override") with the cited source of the value."""
    if preset is None or origin == "override":
        return origin
    if origin.startswith("dataset "):
        dataset = origin[len("dataset "):]
        cited = preset.per_dataset.get(dataset, {}).get(key)
        return f"{origin}: {cited.source}" if cited else f"{origin}: the dataset's metadata (presets)"
    cited = preset.settings.get(key)
    return f"{origin}: {cited.source}" if cited else f"{origin}: gemseg's default (not a setting of this protocol)"


def describe(protocol: Protocol, source: dict[str, str] | None = None) -> str:
    """Every setting of ``protocol``, one per line, with where it came from and, for a preset's value,
    its citation (``owner/repo@commit:file:line``, a paper table, or "our choice")."""
    lines = []
    preset = PRESETS.get(protocol.preset)
    for key, value in protocol.to_dict().items():
        text = f"{key:<20} {value!r}" if value is None or isinstance(value, str) else f"{key:<20} {value}"
        if source and key in source and key != "preset":
            text = f"{text:<44} # {_citation(preset, key, source[key])}"
        lines.append(text)
    return "\n".join(lines)


def _published_cell(preset: Preset, dataset: str) -> str:
    number = preset.published_for(dataset)
    if number is None:
        return dataset
    return f"{dataset} ({number.miou:.2f}{'*' if number.second_hand else ''})"


def preset_table() -> str:
    """Every preset, the paper table it reproduces, its model, method and proxy, the datasets it covers
    with the published number (``*``: second-hand) and where the numbers come from, one block per
    preset (``gemseg eval --list-presets``)."""
    blocks = []
    for name in list_presets():
        p = PRESETS[name]
        flags = f"--model {p.model} --pretrained {p.pretrained} --method {p.method}"
        flags += f" --proxy {p.proxy.value}" if p.proxy is not None else ""
        flags += " --masks SOURCE (docs/reproduce.md)" if "masks" in get_method(p.method).needs else ""
        sources = sorted({re.sub(r"(\.md):\d+", r"\1", n.source) for n in p.published})  # one line per file
        blocks.append("\n".join([
            f"{name:<10} {p.paper}", f"  model      {flags}",
            f"  datasets   {', '.join(_published_cell(p, d) for d in p.datasets)}",
            *(f"  published  {s}" for s in sources or ["none recorded (docs/reproduce.md)"]),
            f"  settings   `gemseg eval --show-preset {name}` (each value with its source)"]))
    return "\n".join(blocks)
