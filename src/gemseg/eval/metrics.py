"""Segmentation metrics from counts accumulated over a whole dataset.

Dense datasets: one confusion matrix ``[C, C]`` (rows: ground truth, columns: prediction) summed over
every scored pixel of every image; IoU and accuracy are computed once from it, never averaged over
images. Point labels: per-class true positive / false positive / false negative point counts, likewise
summed over the dataset. All metrics are in percent; a class whose union (or ground truth) is empty
has no value (``NaN``, ``null`` in JSON) and is left out of the means.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def confusion_matrix(pred, gt, num_classes: int, *, ignore_index: int = 255) -> torch.Tensor:
    """Count (ground truth, prediction) pairs over the pixels whose ground truth is not ``ignore_index``.

    Args:
        pred, gt: integer label maps of the same shape (torch tensors or numpy arrays). Scored
            ground truth values must lie in ``[0, num_classes)``, and so must every prediction at a
            scored pixel.
    Returns:
        int64 [num_classes, num_classes] on ``pred``'s device, ``cm[g, p]`` = pixels of class g
        predicted as p.
    """
    pred, gt = _tensor(pred), _tensor(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {list(pred.shape)} and ground truth {list(gt.shape)} shapes differ")
    gt = gt.to(pred.device).long().flatten()
    pred = pred.long().flatten()
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    for name, values in (("ground truth", gt), ("prediction", pred)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)].unique()[:8].tolist()
            raise ValueError(f"{name} values {bad} are outside [0, {num_classes}) and not the ignore index "
                             f"{ignore_index}")
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _pct(x: float) -> float | None:
    return None if math.isnan(x) else 100.0 * x


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def segmentation_metrics(cm, class_names: Sequence[str] | None = None) -> dict:
    """mIoU, mean class accuracy, pixel accuracy and a per-class table from a confusion matrix.

    ``IoU_c = cm[c, c] / (sum_p cm[c, p] + sum_g cm[g, c] - cm[c, c])``; ``Acc_c = cm[c, c] / sum_p cm[c, p]``;
    ``aAcc = trace / total``. Classes with an empty union (never in the ground truth, never predicted)
    get no IoU and are left out of the mean, as in mmsegmentation.
    """
    cm = np.asarray(torch.as_tensor(cm).cpu(), dtype=np.float64)
    C = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    if len(names) != C:
        raise ValueError(f"{len(names)} class names for a {C}-class confusion matrix")
    inter = np.diag(cm)
    gt_px, pred_px = cm.sum(1), cm.sum(0)
    union = gt_px + pred_px - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(gt_px > 0, inter / gt_px, np.nan)
    total = cm.sum()
    per_class = [{"name": n, "iou": _pct(iou[c]), "acc": _pct(acc[c]), "gt_pixels": int(gt_px[c]),
                  "pred_pixels": int(pred_px[c])} for c, n in enumerate(names)]
    return {"mIoU": _pct(_nanmean(iou)), "mAcc": _pct(_nanmean(acc)),
            "aAcc": _pct(float(inter.sum() / total)) if total else None,
            "scored_pixels": int(total), "classes_scored": int((~np.isnan(iou)).sum()), "per_class": per_class}


def point_counts(predicted: torch.Tensor, positive: torch.Tensor, classes: torch.Tensor,
                 num_classes: int) -> dict[str, torch.Tensor]:
    """True positive / false positive / false negative counts per class for one image's points.

    Args:
        predicted: bool [N], the model says the point's class is at the point.
        positive: bool [N], the ground truth says "yes" (else "no"; "unsure" points are not passed).
        classes: int [N], the class each point was asked about.
    Returns:
        ``{"tp", "fp", "fn", "tn"}``, each int64 [num_classes] (true negatives are not in the IoU).
    """
    predicted, positive, classes = predicted.bool().cpu(), positive.bool().cpu(), classes.long().cpu()

    def count(mask):
        return torch.bincount(classes[mask], minlength=num_classes)

    return {"tp": count(predicted & positive), "fp": count(predicted & ~positive), "fn": count(~predicted & positive),
            "tn": count(~predicted & ~positive)}


def pointwise_metrics(counts: dict, class_names: Sequence[str] | None = None) -> dict:
    """p-mIoU from :func:`point_counts` summed over a dataset: per class
    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``, then the mean over the classes where that is defined."""
    tp, fp, fn, tn = (np.asarray(torch.as_tensor(counts[k]).cpu(), dtype=np.float64) for k in ("tp", "fp", "fn", "tn"))
    denom = tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    per_class = [{"name": n, "iou": _pct(iou[c]), "tp": int(tp[c]), "fp": int(fp[c]), "fn": int(fn[c])}
                 for c, n in enumerate(names)]
    return {"p-mIoU": _pct(_nanmean(iou)), "classes_scored": int((denom > 0).sum()),
            "scored_points": int(tp.sum() + fp.sum() + fn.sum() + tn.sum()), "per_class": per_class}
