"""Evaluation datasets as metadata: class names, palette, label decoding and on-disk layout.

A dataset is one small JSON file (the built-in ones are ``gemseg/data/datasets/*.json``; the keys are
documented in docs/evaluation.md). Adding a dataset means writing such a file, not code. Nothing here
downloads anything: a dataset is read from its standard layout under a root folder.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..files import read_json
from ..templates import check_template

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATASETS_DIR = DATA_DIR / "datasets"
TEMPLATES_DIR = DATA_DIR / "templates"

_DENSE_KEYS = {"classes", "synonyms", "background", "ignore_index", "label_offset", "ignore_labels",
               "label_map", "label_pattern", "split_file", "palette"}
_POINT_KEYS = {"points_csv", "classes_csv"}
_COMMON_KEYS = {"name", "title", "type", "image_pattern", "root", "num_images", "presets", "sources"}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything gemseg needs to know about a dataset, read from its metadata JSON.

    Label decoding (dense datasets), applied to the raw values of a label PNG: ``ignore_index`` and
    every value in ``ignore_labels`` become ``ignore_index``; with ``label_map`` a raw value becomes
    ``label_map[raw]`` (values not in the map are ignored); otherwise ``raw + label_offset``, which
    must land in ``[0, num_classes)`` (anything else is an error, so a wrong layout cannot pass
    silently).
    """

    name: str
    type: str  # "dense" (label maps) or "points" (Open Images style point labels)
    path: str  # the metadata file
    image_pattern: str  # image path under the root; "{id}" is the image id (may contain "/")
    title: str = ""
    classes: tuple[tuple[str, ...], ...] = ()  # per class: display name first, then synonyms
    synonyms: tuple[tuple[str, ...], ...] = ()  # per class: the queries of the "synonyms" vocabulary
    background: int | None = None  # index of the background class, if the dataset has one
    ignore_index: int = 255  # label value that is not scored
    label_offset: int = 0  # added to raw label values (-1 for "reduce zero label" datasets)
    ignore_labels: tuple[int, ...] = ()  # raw values that are not scored (e.g. ADE20K's 0)
    label_map: dict[int, int] | None = None  # raw value -> class index (overrides label_offset)
    label_pattern: str | None = None  # label path under the root, with "{id}"
    split_file: str | None = None  # file listing the image ids (else: every label matching the pattern)
    palette: tuple[tuple[int, int, int], ...] = ()  # RGB colour per class, for visualizations
    root: str | None = None  # the conventional root folder name (documentation only)
    num_images: int | None = None  # expected size of the split; a full run warns when it differs
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # a custom dataset's per-preset protocol
    #                                     values (built-in datasets have none: their values live in the preset records)
    sources: tuple[str, ...] = ()  # where the data and the preset values come from
    points_csv: str | None = None  # points: the point-label CSV under the root
    classes_csv: str | None = None  # points: the class descriptions CSV (LabelName, DisplayName)

    @property
    def class_names(self) -> list[str]:
        return [c[0] for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label_lut(self, size: int = 256) -> np.ndarray:
        """Lookup table raw value -> class index / ``ignore_index``, ``-1`` where a value is invalid."""
        lut = np.full(size, -1, dtype=np.int64)
        if self.label_map is not None:
            lut[:] = self.ignore_index
            for raw, value in self.label_map.items():
                if raw < size:
                    lut[raw] = value
        else:
            value = np.arange(size) + self.label_offset
            ok = (value >= 0) & (value < self.num_classes)
            lut[ok] = value[ok]
        for raw in (*self.ignore_labels, self.ignore_index):
            if 0 <= raw < size:
                lut[raw] = self.ignore_index
        return lut

    def decode_label(self, raw: np.ndarray, *, where: str = "label") -> np.ndarray:
        """Raw label array -> int64 class indices with ``ignore_index`` where not scored."""
        raw = np.asarray(raw)
        if raw.dtype.kind not in "ui":
            raise ValueError(f"{where}: label values must be integers, got {raw.dtype}")
        if raw.size and raw.min() < 0:
            raise ValueError(f"{where}: negative label values")
        lut = self.label_lut(max(256, int(raw.max(initial=0)) + 1))
        out = lut[raw]
        if (out < 0).any():
            bad = sorted(set(np.unique(raw[out < 0]).tolist()))
            raise ValueError(f"{where}: label values {bad[:8]} are not valid for {self.name} ({self.num_classes} "
                             f"classes, offset {self.label_offset}, ignore {self.ignore_index}); is this the "
                             "converted label layout described in docs/evaluation.md?")
        return out


def list_datasets() -> list[str]:
    """Names of the built-in dataset metadata files."""
    return sorted(p.stem for p in DATASETS_DIR.glob("*.json"))


def load_dataset_spec(name_or_path: str | os.PathLike) -> DatasetSpec:
    """A built-in dataset by name (``"voc21"``) or a user's metadata file (``"my_data.json"``)."""
    path = Path(name_or_path)
    if path.suffix != ".json" or not path.exists():
        builtin = DATASETS_DIR / f"{name_or_path}.json"
        if not builtin.exists():
            raise ValueError(f"unknown dataset {str(name_or_path)!r}: give a metadata .json file or one of "
                             f"{', '.join(list_datasets())}")
        path = builtin
    meta = read_json(path, "dataset metadata")
    if not isinstance(meta, dict):
        raise ValueError(f"dataset metadata {path} holds a JSON {type(meta).__name__}, not an object")
    return _spec_from_meta(meta, path)


def _spec_from_meta(meta: dict, path: Path) -> DatasetSpec:
    kind = meta.get("type", "dense")
    if kind not in ("dense", "points"):
        raise ValueError(f"{path}: type must be 'dense' or 'points', got {kind!r}")
    allowed = _COMMON_KEYS | (_DENSE_KEYS if kind == "dense" else _POINT_KEYS)
    unknown = sorted(k for k in meta if k not in allowed and not k.startswith("_"))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed for a {kind} dataset: {sorted(allowed)}")
    for key in ("name", "image_pattern") + (("classes", "label_pattern") if kind == "dense" else
                                            ("points_csv", "classes_csv")):
        if key not in meta:
            raise ValueError(f"{path}: missing key {key!r}")
    if "{id}" not in meta["image_pattern"] or (kind == "dense" and "{id}" not in meta["label_pattern"]):
        raise ValueError(f"{path}: image_pattern and label_pattern need an '{{id}}' placeholder")
    kw: dict[str, Any] = {k: meta[k] for k in ("title", "root", "num_images", "image_pattern", "label_pattern",
                                                "split_file", "points_csv", "classes_csv") if k in meta}
    kw["presets"] = dict(meta.get("presets") or {})
    kw["sources"] = tuple(meta.get("sources") or ())
    if kind == "dense":
        classes = read_class_file(path.parent / meta["classes"])
        synonyms = read_class_file(path.parent / meta["synonyms"]) if meta.get("synonyms") else classes
        if len(synonyms) != len(classes):
            raise ValueError(f"{path}: {meta['synonyms']} has {len(synonyms)} classes, {meta['classes']} "
                             f"has {len(classes)}")
        palette = meta.get("palette") or default_palette(len(classes))
        if len(palette) < len(classes) or any(len(c) != 3 for c in palette):
            raise ValueError(f"{path}: palette needs an [R, G, B] colour for each of the {len(classes)} classes")
        background = meta.get("background")
        if background is not None and not 0 <= background < len(classes):
            raise ValueError(f"{path}: background {background} is not a class index")
        label_map = meta.get("label_map")
        kw.update(classes=tuple(classes), synonyms=tuple(synonyms), background=background,
                  ignore_index=int(meta.get("ignore_index", 255)), label_offset=int(meta.get("label_offset", 0)),
                  ignore_labels=tuple(int(v) for v in meta.get("ignore_labels", ())),
                  label_map=None if label_map is None else {int(k): int(v) for k, v in label_map.items()},
                  palette=tuple(tuple(int(v) for v in c) for c in palette))
        if kw["label_map"] and not all(0 <= v < len(classes) or v == kw["ignore_index"]
                                       for v in kw["label_map"].values()):
            raise ValueError(f"{path}: label_map values must be class indices or the ignore index")
    return DatasetSpec(name=meta["name"], type=kind, path=str(path), **kw)


def read_class_file(path: str | os.PathLike) -> list[tuple[str, ...]]:
    """One class per line, comma-separated names (the first is the display name); ``#`` comments."""
    classes = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"class file {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read class file {path}: {e}") from e
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names = tuple(n.strip() for n in line.split(",") if n.strip())
        classes.append(names)
    if not classes:
        raise ValueError(f"{path}: no class names")
    return classes


def list_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.txt"))


def read_templates(name_or_path: str) -> list[str]:
    """A built-in template set (``"single"``, ``"imagenet80"``) or a text file, one template a line."""
    path = Path(name_or_path)
    if not path.is_file():
        path = TEMPLATES_DIR / f"{name_or_path}.txt"
        if not path.is_file():
            raise ValueError(f"unknown templates {name_or_path!r}: give a file or one of {', '.join(list_templates())}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read templates file {path}: {e}") from e
    templates = [check_template(t.strip(), str(path)) for t in lines if t.strip() and not t.startswith("#")]
    if not templates:
        raise ValueError(f"{path}: no templates; write one a line with a '{{}}' where the class name goes")
    return templates


def default_palette(n: int) -> list[list[int]]:
    """The PASCAL VOC colour map (bit-interleaved), extended to ``n`` colours."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


def ids_from_pattern(root: Path, pattern: str) -> list[str]:
    """Every id for which ``root / pattern`` exists (``{id}`` may span folders), sorted."""
    head, tail = pattern.split("{id}", 1)
    base = root / os.path.dirname(head)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} does not exist (looking for {pattern} under {root})")
    regex = re.compile(re.escape(head) + "(.+)" + re.escape(tail) + r"\Z")
    ids = []
    for folder, _, files in os.walk(base):
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
            m = regex.match(rel)
            if m:
                ids.append(m.group(1))
    return sorted(ids)


def check_id(image_id: str, where: str) -> str:
    """``image_id`` if it names a file under the dataset root; one line naming ``where`` otherwise
    (absolute ids, ``..`` or empty parts, backslashes: ids that could reach outside the root or, with
    ``--save-preds``, outside the output folder)."""
    parts = image_id.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in image_id or "\0" in image_id \
            or any(ord(c) < 32 for c in image_id):
        raise ValueError(f"{where}: image id {image_id[:80]!r} is not a relative path inside the dataset "
                         "(no '..', leading '/', empty parts, backslashes or control characters)")
    return image_id


def read_split(path: Path) -> list[str]:
    """The ids listed in a split file, one a line, in order. An id listed twice is kept once, with one
    warning (counting an image twice would weigh it double); every id is checked by :func:`check_id`."""
    if path.is_dir():
        raise ValueError(f"split file {path} is a folder; give the file listing the image ids")
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read split file {path}: {e}") from e
    ids = [check_id(line.strip(), str(path)) for line in lines if line.strip()]
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        repeated = next(i for i in unique if ids.count(i) > 1)
        warnings.warn(f"{path}: {len(ids) - len(unique)} repeated ids (e.g. {repeated!r}) counted once",
                      stacklevel=3)
    return unique


def _open_image(path: str | os.PathLike, what: str):
    """``Image.open`` with the file fully decoded, or one line naming the file."""
    try:
        im = Image.open(path)
        im.load()
        return im
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} {path} does not exist") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"{what} {path}: refused by PIL's decompression-bomb guard ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # not an image, truncated, corrupt chunks
        raise ValueError(f"{what} {path} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         ) from e


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (stored orientation; EXIF rotation is not applied)."""
    with _open_image(path, "image") as im:
        return np.array(im.convert("RGB"))  # a writable copy


def load_raw_label(path: str | os.PathLike, what: str = "label") -> np.ndarray:
    """A label PNG's raw values [H, W] (palette PNGs give indices, not colours)."""
    with _open_image(path, what) as im:
        if im.mode in ("RGB", "RGBA"):
            raise ValueError(f"{path} is an {im.mode} colour image; labels must be single-channel or palette PNGs "
                             "of class values (see docs/evaluation.md for the conversions)")
        return np.asarray(im)


class DenseDataset:
    """Images and label maps of a dense dataset under ``root``, in a fixed order of ids."""

    def __init__(self, spec: DatasetSpec, root: str | os.PathLike, *, limit: int | None = None):
        if spec.type != "dense":
            raise ValueError(f"{spec.name} is a {spec.type} dataset")
        self.spec, self.root = spec, Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist" +
                                    (f" (conventionally a folder named {spec.root})" if spec.root else ""))
        if spec.split_file:
            ids = read_split(self.root / spec.split_file)
        else:
            ids = ids_from_pattern(self.root, spec.label_pattern)
        if not ids:
            raise FileNotFoundError(f"no images found for {spec.name} under {self.root} ({spec.label_pattern})")
        if limit is None and spec.num_images is not None and len(ids) != spec.num_images:
            warnings.warn(f"{spec.name}: found {len(ids)} images, the standard split has {spec.num_images}",
                          stacklevel=2)
        self.ids = ids[:limit] if limit is not None else ids
        missing = [i for i in self.ids if not self.image_path(i).is_file() or not self.label_path(i).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} ids lack an image or label, e.g. {self.image_path(missing[0])} / "
                                    f"{self.label_path(missing[0])}")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, image_id: str) -> Path:
        return self.root / self.spec.image_pattern.replace("{id}", image_id)

    def label_path(self, image_id: str) -> Path:
        return self.root / self.spec.label_pattern.replace("{id}", image_id)

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 [H, W, 3], label int64 [H, W])`` with labels decoded (see :class:`DatasetSpec`)."""
        image = load_rgb(self.image_path(image_id))
        label = self.spec.decode_label(load_raw_label(self.label_path(image_id)), where=str(self.label_path(image_id)))
        if label.shape != image.shape[:2]:
            raise ValueError(f"{image_id}: label {label.shape} and image {image.shape[:2]} sizes differ")
        return image, label
