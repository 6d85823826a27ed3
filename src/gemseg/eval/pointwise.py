"""Open Images V7 point labels and their per-image scoring for the point-wise mIoU (p-mIoU).

The point-label CSV (``oidv7-val-annotations-point-labels.csv``) has one row per point with the columns
``ImageId, X, Y, Label, EstimatedYesNo, Source, YesVotes, NoVotes, UnsureVotes, TextLabel``: ``X``/``Y``
are normalized to [0, 1], ``Label`` is a class MID (``/m/...``) and ``EstimatedYesNo`` is ``yes``,
``no`` or ``unsure``. Class names come from ``oidv7-class-descriptions.csv`` (``LabelName,DisplayName``).

Definition (docs/evaluation.md): only ``yes`` and ``no`` points count, ``unsure`` points are dropped.
For every image and every class it scores (``point_classes``: "present", the classes with at least
one ``yes`` point in the image; "annotated", every class with a ``yes`` or ``no`` point in it), the
class's score map is computed at the image's resolution, min-max normalized (``point_normalize``) and binarized at ``point_threshold``. A ``yes``
point inside the mask is a true positive, outside a false negative; a ``no`` point inside is a false
positive. Counts are summed per class over the dataset; ``IoU_c = TP / (TP + FP + FN)`` and p-mIoU is
the mean over the classes with a non-empty denominator.
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import min_max
from .datasets import DatasetSpec, check_id, load_rgb
from .metrics import point_counts

_REQUIRED = ("ImageId", "X", "Y", "Label", "EstimatedYesNo")


@dataclass
class PointLabels:
    """The scored points of one image: class index, normalized x and y, yes (True) / no (False)."""

    classes: np.ndarray  # int64 [N]
    x: np.ndarray  # float32 [N], in [0, 1]
    y: np.ndarray  # float32 [N], in [0, 1]
    positive: np.ndarray  # bool [N]


def read_class_descriptions(path: str | os.PathLike) -> dict[str, str]:
    """MID -> display name, from ``LabelName,DisplayName`` rows (a header row is optional)."""
    names = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[:2] != ["LabelName", "DisplayName"]:
                names[row[0]] = row[1]
    return names


class PointsDataset:
    """Images and point labels of an Open Images style dataset under ``root``.

    The vocabulary is every class with at least one yes/no point in the whole CSV, sorted by MID; a
    ``limit`` takes the first images (ids sorted) but keeps that vocabulary, so class indices never
    depend on the limit.
    """

    def __init__(self, spec: DatasetSpec, root: str | os.PathLike, *, limit: int | None = None):
        if spec.type != "points":
            raise ValueError(f"{spec.name} is a {spec.type} dataset")
        self.spec, self.root = spec, Path(root)
        csv_path, names_path = self.root / spec.points_csv, self.root / spec.classes_csv
        for p in (csv_path, names_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist (see docs/evaluation.md for the Open Images layout)")
        names = read_class_descriptions(names_path)
        image_index: dict[str, int] = {}
        class_index: dict[str, int] = {}
        img, cls, xs, ys, pos = [], [], [], [], []
        self.unsure_points = 0
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            missing = [c for c in _REQUIRED if c not in header]
            if missing:
                raise ValueError(f"{csv_path}: missing columns {missing} (found {header})")
            col = {c: header.index(c) for c in _REQUIRED}
            for row in reader:
                answer = row[col["EstimatedYesNo"]].strip().lower()
                if answer not in ("yes", "no"):
                    if answer != "unsure":
                        raise ValueError(f"{csv_path}: EstimatedYesNo {answer!r} is not yes/no/unsure")
                    self.unsure_points += 1
                    continue
                img.append(image_index.setdefault(row[col["ImageId"]], len(image_index)))
                cls.append(class_index.setdefault(row[col["Label"]], len(class_index)))
                xs.append(float(row[col["X"]]))
                ys.append(float(row[col["Y"]]))
                pos.append(answer == "yes")
        mids = sorted(class_index)
        remap = np.empty(len(mids), dtype=np.int64)
        for new, mid in enumerate(mids):
            remap[class_index[mid]] = new
        unnamed = [m for m in mids if m not in names]
        if unnamed:
            warnings.warn(f"{len(unnamed)} classes have no name in {names_path.name} (e.g. {unnamed[0]}); "
                          "their MID is used as the prompt", stacklevel=2)
        self.mids = mids
        self.classes = tuple((names.get(m, m),) for m in mids)  # one query per class: its display name
        image_ids = sorted(image_index)
        for image_id in image_ids:
            check_id(image_id, str(csv_path))
        order_of = np.empty(len(image_ids), dtype=np.int64)
        for new, image_id in enumerate(image_ids):
            order_of[image_index[image_id]] = new
        img_arr = order_of[np.asarray(img, dtype=np.int64)]
        sort = np.argsort(img_arr, kind="stable")
        self._img = img_arr[sort]
        self._cls = remap[np.asarray(cls, dtype=np.int64)][sort]
        self._x = np.asarray(xs, dtype=np.float32)[sort]
        self._y = np.asarray(ys, dtype=np.float32)[sort]
        self._pos = np.asarray(pos, dtype=bool)[sort]
        self._index = {image_id: i for i, image_id in enumerate(image_ids)}
        self.ids = image_ids[:limit] if limit is not None else image_ids

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def class_names(self) -> list[str]:
        return [c[0] for c in self.classes]

    def image_path(self, image_id: str) -> Path:
        return self.root / self.spec.image_pattern.replace("{id}", image_id)

    def points(self, image_id: str) -> PointLabels:
        i = self._index[image_id]
        lo, hi = np.searchsorted(self._img, [i, i + 1])
        return PointLabels(self._cls[lo:hi], self._x[lo:hi], self._y[lo:hi], self._pos[lo:hi])

    def classes_in(self, ids) -> list[int]:
        """The class indices asked about in these images (what a run must encode)."""
        wanted = np.isin(self._img, [self._index[i] for i in ids])
        return sorted(set(self._cls[wanted].tolist()))

    def load(self, image_id: str) -> tuple[np.ndarray, PointLabels]:
        return load_rgb(self.image_path(image_id)), self.points(image_id)


def scored_classes(points: PointLabels, rule: str = "present") -> list[int]:
    """The classes of one image that are scored, sorted: with ``rule`` "present" those with at least one
    ``yes`` point, with "annotated" those with any ``yes`` or ``no`` point."""
    if rule == "present":
        return sorted(set(points.classes[points.positive].tolist()))
    if rule == "annotated":
        return sorted(set(points.classes.tolist()))
    raise ValueError(f"point_classes must be 'present' or 'annotated', got {rule!r}")


def score_points(scores: torch.Tensor, classes: list[int], points: PointLabels, num_classes: int, *,
                 threshold: float = 0.5, normalize: str = "minmax") -> dict[str, torch.Tensor]:
    """Per-class TP/FP/FN/TN counts of one image.

    Args:
        scores: [k, H, W] score maps of ``classes`` (the classes scored in the image, see
            :func:`scored_classes`) at the image's resolution.
        points: the image's yes/no points; those of classes not in ``classes`` are not counted. A
            point at normalized (x, y) reads pixel ``(min(floor(y * H), H - 1), min(floor(x * W), W - 1))``.
    """
    keep = np.isin(points.classes, np.asarray(list(classes), dtype=np.int64))
    points = PointLabels(points.classes[keep], points.x[keep], points.y[keep], points.positive[keep])
    if normalize == "minmax":
        scores = min_max(scores)
    mask = scores >= threshold  # (k, H, W)
    H, W = mask.shape[-2:]
    row_of = {c: i for i, c in enumerate(classes)}
    rows = torch.tensor([row_of[int(c)] for c in points.classes], dtype=torch.long, device=mask.device)
    px = torch.from_numpy(np.minimum((points.x * W).astype(np.int64), W - 1)).to(mask.device)
    py = torch.from_numpy(np.minimum((points.y * H).astype(np.int64), H - 1)).to(mask.device)
    predicted = mask[rows, py.clamp_min(0), px.clamp_min(0)]
    return point_counts(predicted, torch.from_numpy(points.positive), torch.from_numpy(points.classes), num_classes)
