"""The record of one evaluation preset: its settings, per-dataset values and published numbers, each
with the source it was read from (``owner/repo@commit:path:line``, a paper's table, or "our choice").

The records themselves are in :mod:`gemseg.eval.presets`, one block per paper; :mod:`gemseg.eval.protocols`
resolves them into a :class:`~gemseg.eval.protocols.Protocol`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

OUR_CHOICE = "our choice"


@dataclass(frozen=True)
class Cited:
    """A setting's value and where it comes from."""

    value: Any  # the value, in the type Protocol takes (a tuple for a list)
    source: str  # "owner/repo@commit:path:line (what the line says)", a paper table, or "our choice: why"


def cite(value: Any, source: str) -> Cited:
    if not source.strip():
        raise ValueError(f"a preset value ({value!r}) needs its source")
    return Cited(tuple(value) if isinstance(value, list) else value, source)


@dataclass(frozen=True)
class Published:
    """A published mIoU (or p-mIoU) of the preset's paper on one dataset."""

    dataset: str  # gemseg's dataset name
    miou: float  # the number as printed, in percent
    source: str  # where it is printed: repository file, or paper and table
    second_hand: bool = False  # True: tabulated by another paper (or re-run by another codebase), not the authors'
    note: str = ""  # e.g. "their re-implementation, under their protocol"


@dataclass(frozen=True)
class Preset:
    """One paper's evaluation protocol.

    ``settings`` hold the preset's own values (Protocol fields); ``per_dataset[name]`` the values that
    replace them on one dataset; both cite their source. Settings a preset does not list keep
    :class:`~gemseg.eval.protocols.Protocol`'s default and are shown as such.
    """

    name: str  # the --preset name
    paper: str  # authors, venue, arXiv id
    method: str  # the gemseg --method of the paper's table
    settings: Mapping[str, Cited]  # Protocol field -> cited value
    datasets: tuple[str, ...]  # the datasets of the paper's table, in its column order
    model: str = "ViT-B/16"  # the table's CLIP model
    pretrained: str = "openai"  # and its weights
    proxy: Cited | None = None  # method="proxyclip": the vision foundation model of the table (gemseg name)
    per_dataset: Mapping[str, Mapping[str, Cited]] = field(default_factory=dict)  # dataset -> field -> value
    published: tuple[Published, ...] = ()  # every published number read, first-hand or second-hand
    not_reproduced: tuple[str, ...] = ()  # what the official code does that gemseg does not
    method_settings: Mapping[str, Cited] = field(default_factory=dict)  # the method's own settings (its
    #                                   settings_type fields, e.g. ResCLIPConfig's), given to the model
    per_dataset_method: Mapping[str, Mapping[str, Cited]] = field(default_factory=dict)  # dataset -> those

    def __post_init__(self):
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "per_dataset",
                           MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.per_dataset.items()}))
        object.__setattr__(self, "method_settings", MappingProxyType(dict(self.method_settings)))
        object.__setattr__(self, "per_dataset_method", MappingProxyType(
            {k: MappingProxyType(dict(v)) for k, v in self.per_dataset_method.items()}))
        for where, values in (("settings", self.settings), ("method_settings", self.method_settings), *(
                (f"per_dataset[{d!r}]", v) for d, v in self.per_dataset.items()), *(
                (f"per_dataset_method[{d!r}]", v) for d, v in self.per_dataset_method.items())):
            bad = [k for k, v in values.items() if not isinstance(v, Cited)]
            if bad:
                raise TypeError(f"preset {self.name}: {where} {bad} must be cite(value, source)")
        unknown = sorted({p.dataset for p in self.published} - set(self.datasets))
        if unknown:
            raise ValueError(f"preset {self.name}: published numbers for {unknown}, not among its datasets")

    def values(self) -> dict[str, Any]:
        """The preset's own setting values (without per-dataset values)."""
        return {k: c.value for k, c in self.settings.items()}

    def dataset_values(self, dataset: str) -> dict[str, Any]:
        """The values that replace the preset's on ``dataset`` (empty if none)."""
        return {k: c.value for k, c in self.per_dataset.get(dataset, {}).items()}

    def method_values(self, dataset: str | None = None) -> dict[str, Any]:
        """The method's own settings of this preset (``method_settings``), the dataset's replacing them."""
        values = {k: c.value for k, c in self.method_settings.items()}
        values.update({k: c.value for k, c in self.per_dataset_method.get(dataset, {}).items()} if dataset else {})
        return values

    def source_of(self, key: str, dataset: str | None = None) -> str | None:
        """The source of setting ``key``: the dataset's value if it has one, else the preset's."""
        cited = self.per_dataset.get(dataset, {}).get(key) if dataset else None
        cited = cited or self.settings.get(key)
        return None if cited is None else cited.source

    def published_for(self, dataset: str) -> Published | None:
        """The number to compare with on ``dataset``: the first first-hand one, else the first listed."""
        numbers = [p for p in self.published if p.dataset == dataset]
        first_hand = [p for p in numbers if not p.second_hand]
        return (first_hand or numbers or [None])[0]


EIGHT = ("voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k", "coco_stuff")  # the common eight
# OV-Stitcher (Moon, Oh, Ro, arXiv 2604.08110) Table 1, an image in its README: the per-dataset rows of the
# 2025 methods whose own tables could not be read here (second-hand; columns VOC21 ... Stuff, with Avg.)
OV_STITCHER_TABLE1 = "atw617/OV-Stitcher@270b85a2f3ee:assets/quantitative.png (README.md:40; OV-Stitcher, " \
                     "arXiv 2604.08110, Table 1, OpenAI CLIP ViT-B/16 rows)"
_CV2 = "(mmseg's Resize: cv2 bilinear, not antialiased)"


def mmseg_resize(repo: str, where: str, short: int) -> dict:
    """resize/size/max_long_side/interpolation of an mmseg ``Resize(scale=(2048, short), keep_ratio=True)``
    read at ``repo:where``, each cited."""
    line = f"{repo}:{where} Resize(scale=(2048, {short}), keep_ratio=True)"
    return {"resize": cite("short_side", line), "size": cite(short, line), "max_long_side": cite(2048, line),
            "interpolation": cite("bilinear-cv2", f"{line} {_CV2}")}


def published_numbers(source: str, values: dict[str, float], **kw) -> tuple[Published, ...]:
    """One :class:`Published` per ``dataset: mIoU`` of ``values``, all from ``source``."""
    return tuple(Published(d, v, source, **kw) for d, v in values.items())
