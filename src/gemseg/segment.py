"""Segmentation rules: the background choice of class names, the one rule from query scores to labels,
and the result with per-class statistics.

:class:`gemseg.Segmenter` is the predictor (``GEMModel.segment`` is its one-call form); it uses
:func:`background_rule` (label 0 is background and labels ``1..C`` are the classes in the order given),
:class:`LabelRule` / :func:`apply_rule` and returns a :class:`Segmentation`. The query->class reduction is
:func:`gemseg.postprocess.class_probabilities` (default ``"softmax_then_max"``, the order of the official
SCLIP/ClearCLIP/NACLIP code).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from .postprocess import DEFAULT_REDUCTION, class_probabilities, reduce_queries

# Generic scene "stuff" that competes with the classes as background under background="auto"; a class
# the user names is taken out of it. Chosen by hand (our choice), not tuned on any benchmark.
AUTO_BACKGROUND = ("sky", "wall", "floor", "ceiling", "ground", "road", "grass", "tree", "building", "water")
DEFAULT_THRESHOLD = 0.5  # a pixel keeps its class only if the class holds at least half the probability
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained logit scale: softmax(100 * cosine)


@dataclass(frozen=True)
class Background:
    """How pixels become background (label 0); build it with :func:`background_rule`."""

    rule: str  # "auto", "prompts" or "none"
    prompts: tuple[str, ...]  # background queries, all scoring label 0
    threshold: float | None  # pixels whose top class probability is below it become background; None: off
    logit_scale: float  # probabilities are softmax(logit_scale * cosine)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "prompts": list(self.prompts), "threshold": self.threshold,
                "logit_scale": self.logit_scale}


def clean_prompts(prompts: Sequence[str], what: str = "prompt", *, unique: bool = True) -> list[str]:
    """The one prompt validator: a list of strings, each with its whitespace collapsed; an empty one or a
    non-string is refused (``ValueError``/``TypeError`` naming it, counted from 1). With ``unique``, exact
    duplicates are used once, with a warning (``GEMModel.encode_text`` keeps them: one row per prompt)."""
    if isinstance(prompts, str):
        raise TypeError(f"{what}s must be a list of strings, not a single string; wrap it: [{what}]")
    out: list[str] = []
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise TypeError(f"{what} {i} is a {type(p).__name__}, expected a string")
        text = " ".join(p.split())
        if not text:
            raise ValueError(f"{what} {i} is empty; remove it or give it text")
        if unique and text in out:
            warnings.warn(f"{what} {text!r} is given more than once; using it once", stacklevel=2)
            continue
        out.append(text)
    if not out:
        raise ValueError(f"the {what} list is empty; give at least one {what}")
    return out


def background_rule(background: str | Sequence[str] | None, classes: Sequence[str], *,
                    threshold: float | None = None, logit_scale: float = DEFAULT_LOGIT_SCALE) -> Background:
    """Resolve a background rule against ``classes``.

    Args:
        background: ``"auto"`` (:data:`AUTO_BACKGROUND` minus any class named), ``"none"`` or ``None``
            (no background prompts), a comma-separated string or a list of background prompts.
        threshold: pixels whose top class probability is below it become background. ``None``:
            :data:`DEFAULT_THRESHOLD` with background prompts, off without; ``0``: off.
        logit_scale: probabilities are ``softmax(logit_scale * cosine)``; must be > 0.
    Raises:
        ValueError: a threshold outside [0, 1], ``logit_scale <= 0``, or no background prompt left.
    """
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale:g}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (0 turns it off), got {threshold:g}")
    taken = {c.lower() for c in classes}
    key = background.strip().lower() if isinstance(background, str) else background
    if key is None or key == "none":
        return Background("none", (), threshold or None, float(logit_scale))
    thr = DEFAULT_THRESHOLD if threshold is None else (threshold or None)
    if key == "auto":
        return Background("auto", tuple(p for p in AUTO_BACKGROUND if p not in taken), thr, float(logit_scale))
    prompts = clean_prompts(background.split(",") if isinstance(background, str) else list(background),
                            "background prompt")
    clash = [p for p in prompts if p.lower() in taken]
    if clash:
        warnings.warn(f"background prompt(s) {', '.join(clash)} are also classes; they stay classes", stacklevel=2)
        prompts = [p for p in prompts if p.lower() not in taken]
    if not prompts:
        raise ValueError("no background prompts left; use background 'none' for no background")
    return Background("prompts", tuple(prompts), thr, float(logit_scale))


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
