"""Score saved label maps of any method against a dataset's ground truth (``gemseg score``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from .datasets import DatasetSpec, default_palette, load_raw_label
from .metrics import confusion_matrix, segmentation_metrics
from .report import software_versions


def adhoc_spec(num_classes: int, *, ignore_index: int = 255, gt_suffix: str = ".png",
               class_names: Sequence[str] | None = None) -> DatasetSpec:
    """A dataset spec for label maps that already hold class indices (no offset, no map)."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    classes = tuple((n,) for n in names)
    return DatasetSpec(name="labels", type="dense", path="", image_pattern="{id}", classes=classes, synonyms=classes,
                       ignore_index=ignore_index, label_pattern="{id}" + gt_suffix,
                       palette=tuple(tuple(c) for c in default_palette(num_classes)))


def gt_suffix(spec: DatasetSpec) -> str:
    """The file-name ending of the dataset's label files (what follows ``{id}`` in ``label_pattern``)."""
    return spec.label_pattern.split("{id}", 1)[1]


def score_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, spec: DatasetSpec, *,
                  ids: Sequence[str] | None = None) -> dict:
    """Confusion matrix and metrics of ``pred_dir/<id>.png`` against ``gt_dir/<id><suffix>``.

    Predictions hold class indices in ``[0, num_classes)`` (an indexed PNG as ``gemseg eval
    --save-preds`` writes, or a grayscale one); ground truth is decoded as the dataset says (offsets,
    ignored values). ``ids``: the images to score (default: every prediction); each must have a
    prediction and a ground truth. Returns a result dict like ``gemseg eval``'s.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    suffix = gt_suffix(spec)
    if ids is None:
        ids = sorted(p.relative_to(pred_dir).as_posix()[: -len(".png")] for p in pred_dir.rglob("*.png"))
        if not ids:
            raise FileNotFoundError(f"no .png predictions under {pred_dir}")
    missing = [i for i in ids if not (pred_dir / f"{i}.png").is_file() or not (gt_dir / f"{i}{suffix}").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images lack a prediction or a ground truth, e.g. "
                                f"{pred_dir / (missing[0] + '.png')} / {gt_dir / (missing[0] + suffix)}")
    cm = torch.zeros(spec.num_classes, spec.num_classes, dtype=torch.long)
    for i in ids:
        gt = spec.decode_label(load_raw_label(gt_dir / f"{i}{suffix}"), where=str(gt_dir / f"{i}{suffix}"))
        pred = load_raw_label(pred_dir / f"{i}.png", "prediction")
        if pred.shape != gt.shape:
            raise ValueError(f"{i}: prediction {pred.shape} and ground truth {gt.shape} sizes differ")
        cm += confusion_matrix(torch.from_numpy(pred.astype("int64")), torch.from_numpy(gt), spec.num_classes,
                               ignore_index=spec.ignore_index)
    gt_files = sum(1 for _ in gt_dir.rglob("*" + suffix))
    return {
        "dataset": {"name": spec.name, "title": spec.title, "type": "dense", "metadata": spec.path,
                    "num_images": len(ids), "gt_files_without_prediction": gt_files - len(ids),
                    "num_classes": spec.num_classes},
        "predictions": str(pred_dir.resolve()), "ground_truth": str(gt_dir.resolve()),
        "model": {"name": f"predictions in {pred_dir.name}"}, "protocol": {}, "speed": {},
        "metrics": segmentation_metrics(cm, spec.class_names), "software": software_versions(),
    }
