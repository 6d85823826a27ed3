"""Per-label-type counting for :func:`~gemseg.eval.evaluate`: what one image adds to a run's counts (a
confusion matrix for dense labels, per-class point counts for point labels), and the metrics of the
summed counts. The resumable, data-parallel loop over the images is :func:`~gemseg.eval.runner.count_images`;
the report is written by the runner. (The split of mmsegmentation's metrics: ``process`` per batch,
``compute_metrics`` once.)"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..segmenter import Segmenter
from .datasets import DatasetSpec
from .metrics import confusion_matrix, pointwise_metrics, segmentation_metrics
from .pointwise import PointLabels, PointsDataset, score_points, scored_classes
from .protocols import Protocol
from .visualize import save_label_png, save_visualization


class DenseCounter:
    """One confusion matrix per image (``{"confusion": int64 [C, C]}``), and mIoU of their sum.

    Args:
        save_preds: image ids whose label maps and visualizations are saved under ``out_dir``.
    """

    keys = ("confusion",)

    def __init__(self, model, spec: DatasetSpec, protocol: Protocol, *, crop_batch: int = 8,
                 text_cache: dict | None = None, out_dir: str | Path | None = None,
                 save_preds: Sequence[str] = (), refine=None):
        self.spec, self.class_names = spec, list(spec.class_names)
        self.seg = Segmenter.from_dataset(model, spec, protocol, crop_batch=crop_batch, text_cache=text_cache,
                                          refine=refine)
        self.out_dir, self.save_preds = (Path(out_dir) if out_dir is not None else None), set(save_preds)

    def count(self, image_id: str, image: np.ndarray, target: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 RGB [H, W, 3] and its label map [h, w] -> this image's counts."""
        # masks (corrclip, refiner "masks") are found by the image's id: mask files are named <id stem>.npz
        pred = self.seg.labels(self.seg.scores(image, out_size=target.shape, paths=[image_id]))[0][0]  # (h, w)
        cm = confusion_matrix(pred, torch.from_numpy(target).to(pred.device), self.spec.num_classes,
                              ignore_index=self.spec.ignore_index)
        if image_id in self.save_preds and self.out_dir is not None:
            spec, out, pred_np = self.spec, self.out_dir, pred.cpu().numpy()
            save_label_png(out / "preds" / f"{image_id}.png", pred_np, spec.palette)
            save_visualization(out / "vis" / f"{image_id}.png", image, target, pred_np, spec.palette,
                               ignore_index=spec.ignore_index, class_names=self.class_names)
        return {"confusion": cm}

    def zeros(self) -> dict[str, torch.Tensor]:
        return {"confusion": torch.zeros((self.spec.num_classes,) * 2, dtype=torch.long)}

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict:
        return segmentation_metrics(totals["confusion"], self.class_names)


class PointsCounter:
    """Per-class TP/FP/FN/TN point counts per image (``{"tp", "fp", "fn", "tn"}``, int64 [C]), and
    p-mIoU of their sum. The classes scored in an image follow ``protocol.point_classes``."""

    keys = ("tp", "fp", "fn", "tn")

    def __init__(self, model, dataset: PointsDataset, protocol: Protocol, ids: Sequence[str], *,
                 crop_batch: int = 8, text_cache: dict | None = None, refine=None):
        self.protocol, self.class_names = protocol, dataset.class_names
        self.seg = Segmenter.from_dataset(model, dataset.spec, protocol, classes=list(dataset.classes),
                                          active=dataset.classes_in(ids), crop_batch=crop_batch,
                                          text_cache=text_cache, refine=refine)

    def count(self, image_id: str, image: np.ndarray, target: PointLabels) -> dict[str, torch.Tensor]:
        classes = scored_classes(target, self.protocol.point_classes)
        if not classes:  # nothing to score in this image (e.g. only "no" points under "present")
            return self.zeros()
        scores = self.seg.class_scores(image, classes, out_size=image.shape[:2])[0]  # (len(classes), H, W)
        return score_points(scores, classes, target, len(self.class_names), threshold=self.protocol.point_threshold,
                            normalize=self.protocol.point_normalize)

    def zeros(self) -> dict[str, torch.Tensor]:
        return {k: torch.zeros(len(self.class_names), dtype=torch.long) for k in self.keys}

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict:
        return pointwise_metrics(totals, self.class_names)
