"""Segmentation rules: the background choice of class names (:mod:`gemseg.prompts`, re-exported here),
the one rule from query scores to labels, and the result with per-class statistics.

:class:`gemseg.Segmenter` is the predictor (``GEMModel.segment`` is its one-call form); it uses
:func:`background_rule` (label 0 is background and labels ``1..C`` are the classes in the order given),
:class:`LabelRule` / :func:`apply_rule` and returns a :class:`Segmentation`. The query->class reduction is
:func:`gemseg.postprocess.class_probabilities` (default ``"softmax_then_max"``, the order of the official
SCLIP/ClearCLIP/NACLIP code).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .postprocess import DEFAULT_REDUCTION, class_probabilities, reduce_queries
from .prompts import (AUTO_BACKGROUND, DEFAULT_LOGIT_SCALE, DEFAULT_THRESHOLD, Background,  # noqa: F401
                      background_rule, clean_prompts)  # the pure-Python rules, re-exported here


@dataclass
class Segmentation:
    """Label maps and per-class maps of a batch; index 0 is background, ``k`` is ``names[k]``."""

    labels: torch.Tensor  # [B, H, W] long: 0 background, k = classes[k - 1]
    probabilities: torch.Tensor  # [B, 1 + C, H, W] class probabilities (row 0 is 0 without background prompts)
    scores: torch.Tensor  # [B, 1 + C, H, W] cosine of each class, max over its queries (row 0 NaN without prompts)
    confidence: torch.Tensor  # [B, H, W] probability of each pixel's label; NaN where the threshold alone made it 0
    names: tuple[str, ...]  # ("background", *classes)
    background: Background | None  # the background rule of class names (Segmenter.from_classes); None otherwise
    reduction: str  # query->class reduction used (see gemseg.postprocess.class_probabilities)

    @property
    def areas(self) -> torch.Tensor:
        """[B, 1 + C] long: pixels of each label per image."""
        n = len(self.names)
        return torch.stack([torch.bincount(lab.flatten(), minlength=n) for lab in self.labels.cpu()])

    def stats(self, index: int = 0) -> list[dict]:
        """Per label of image ``index``: ``{"index", "name", "pixels", "fraction", "mean_score",
        "mean_probability"}`` (means over the label's pixels, rounded to 6 digits; None when it has none)."""
        labels, scores = self.labels[index].cpu(), self.scores[index].cpu()
        conf = self.confidence[index].cpu()
        total = labels.numel()
        out = []
        for k, name in enumerate(self.names):
            mask = labels == k
            n = int(mask.sum())
            out.append({"index": k, "name": name, "pixels": n, "fraction": round(n / total, 6),
                        "mean_score": _mean(scores[k][mask]), "mean_probability": _mean(conf[mask])})
        return out


def _mean(values: torch.Tensor) -> float | None:
    if not values.numel():
        return None
    m = float(values.double().mean())
    return None if m != m else round(m, 6)  # NaN (no probability recorded) -> None


@dataclass(frozen=True)
class LabelRule:
    """The one rule from query scores to labels (:meth:`gemseg.Segmenter.labels`).

    ``softmax(logit_scale * cosine)`` over all queries reduced to one probability per label (``reduction``,
    see :func:`gemseg.postprocess.class_probabilities`; a label without queries, e.g. background without
    background prompts, gets probability 0); then the area rule, the argmax, and the probability threshold.
    """

    background: int | None = 0  # the background label (where thresholds send pixels); None: no background
    logit_scale: float = DEFAULT_LOGIT_SCALE  # probabilities are softmax(logit_scale * cosine)
    prob_threshold: float | None = None  # pixels whose top probability is below it become background; None: off
    area_threshold: float | None = None  # labels covering at most this fraction of an image's foreground
    #                                      pixels are dropped (SCLIP's area_thd); None: off
    reduction: str = DEFAULT_REDUCTION  # queries -> label probabilities (gemseg.postprocess.REDUCTIONS)

    def __post_init__(self):
        from .postprocess import REDUCTIONS

        object.__setattr__(self, "logit_scale", float(self.logit_scale))
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale:g}")
        for name in ("prob_threshold", "area_threshold"):
            value = getattr(self, name)
            if value is None:
                continue
            object.__setattr__(self, name, float(value))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1] or be None, got {value:g}")
            if self.background is None:
                raise ValueError(f"{name} sends pixels to background, and there is no background label")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")


def apply_rule(scores: torch.Tensor, query_to_class: torch.Tensor, num_labels: int,
               rule: LabelRule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query scores [B, Q, H, W] -> ``(labels [B, H, W] long, top [B, H, W], probabilities [B, K, H, W])``
    by ``rule``; ``query_to_class`` [Q] gives each query's label in ``[0, K)``, ``K = num_labels``.
    ``top`` is each pixel's highest probability before the threshold (after the area rule)."""
    owner = query_to_class.to(scores.device)
    scored = torch.unique(owner)  # sorted labels that have queries; the others get probability 0
    B, _, H, W = scores.shape
    probs = scores.new_zeros((B, num_labels, H, W), dtype=torch.float32)  # (B, K, H, W)
    probs[:, scored] = class_probabilities(scores, torch.searchsorted(scored, owner), len(scored),
                                           logit_scale=rule.logit_scale, reduction=rule.reduction)
    if rule.area_threshold is not None:
        for b in range(B):
            pred = probs[b].argmax(0)  # (H, W)
            fg = pred != rule.background
            area = torch.bincount(pred[fg], minlength=num_labels)
            keep = area > rule.area_threshold * fg.sum()
            keep[rule.background] = True
            probs[b] = probs[b] * keep.to(probs.dtype)[:, None, None]
    top, labels = probs.max(1)  # (B, H, W)
    if rule.prob_threshold is not None:
        labels = torch.where(top < rule.prob_threshold, torch.full_like(labels, rule.background), labels)
    return labels, top, probs


def label_scores(scores: torch.Tensor, query_to_class: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per label, the max over its queries' cosines: [B, Q, H, W] -> [B, K, H, W] (NaN for a label
    without queries)."""
    owner = query_to_class.to(scores.device)
    scored = torch.unique(owner)
    if len(scored) == num_labels:
        return reduce_queries(scores.float(), owner, num_labels)
    out = torch.full((scores.shape[0], num_labels, *scores.shape[2:]), float("nan"), device=scores.device)
    out[:, scored] = reduce_queries(scores.float(), torch.searchsorted(scored, owner), len(scored))
    return out


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps [..., h, w] -> [..., H, W] at ``size = (H, W)``, bilinear (``align_corners=False``)."""
    import torch.nn.functional as F

    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(1, -1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


__all__ = ["AUTO_BACKGROUND", "DEFAULT_THRESHOLD", "DEFAULT_LOGIT_SCALE", "Background", "Segmentation", "LabelRule",
           "apply_rule", "label_scores", "background_rule", "clean_prompts", "resize_maps"]
