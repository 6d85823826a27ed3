"""Segmentation from similarity maps: background rules, label maps and per-class statistics.

:meth:`gemseg.GEMModel.segment` is the one-call API; the pieces here serve it, ``gemseg segment`` and
the web demo. Label 0 is background and labels ``1..C`` are the classes in the order given. The
query->class reduction is :func:`gemseg.postprocess.class_probabilities` (default
``"softmax_then_max"``, the order of the official SCLIP/ClearCLIP/NACLIP code).
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


def clean_prompts(prompts: Sequence[str], what: str = "prompt") -> list[str]:
    """Collapse whitespace; refuse empty prompts (``ValueError``); drop exact duplicates with a warning."""
    if isinstance(prompts, str):
        raise TypeError(f"{what}s must be a list of strings, not a single string; wrap it: [{what}]")
    out: list[str] = []
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise TypeError(f"{what} {i} is a {type(p).__name__}, expected a string")
        text = " ".join(p.split())
        if not text:
            raise ValueError(f"{what} {i} is empty; remove it or give it text")
        if text in out:
            warnings.warn(f"{what} {text!r} is given more than once; using it once", stacklevel=2)
            continue
        out.append(text)
    if not out:
        raise ValueError(f"no {what}s given")
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
    background: Background
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


def segment_maps(sims: torch.Tensor, classes: Sequence[str], background: Background, *,
                 reduction: str = DEFAULT_REDUCTION) -> Segmentation:
    """Query similarities -> :class:`Segmentation` at the same size.

    Args:
        sims: [B, C + P, H, W] cosines of the ``C`` classes first, then the ``P = len(background.prompts)``
            background prompts (the order :meth:`GEMModel.segment` encodes them in).
        classes: the ``C`` class names.
        reduction: ``"softmax_then_max"`` or ``"max_then_softmax"`` (see
            :func:`gemseg.postprocess.class_probabilities`).
    """
    C, P = len(classes), len(background.prompts)
    if sims.ndim != 4 or sims.shape[1] != C + P:
        raise ValueError(f"sims must be [B, {C + P}, H, W] ({C} classes + {P} background prompts), "
                         f"got {list(sims.shape)}")
    sims = sims.float()
    scale, thr = background.logit_scale, background.threshold
    if P:
        q2c = list(range(1, C + 1)) + [0] * P
        probs = class_probabilities(sims, q2c, C + 1, logit_scale=scale, reduction=reduction)  # (B, 1+C, H, W)
        scores = reduce_queries(sims, q2c, C + 1)  # (B, 1+C, H, W)
        conf, labels = probs.max(dim=1)  # (B, H, W)
        if thr is not None:
            labels = torch.where(conf < thr, torch.zeros_like(labels), labels)
        confidence = probs.gather(1, labels[:, None])[:, 0]
    else:
        probs_c = class_probabilities(sims, list(range(C)), C, logit_scale=scale, reduction=reduction)
        probs = torch.cat([torch.zeros_like(probs_c[:, :1]), probs_c], dim=1)  # (B, 1+C, H, W)
        scores = torch.cat([torch.full_like(sims[:, :1], float("nan")), sims], dim=1)
        conf, labels = probs_c.max(dim=1)
        labels = labels + 1
        confidence = conf
        if thr is not None:
            drop = conf < thr
            labels = torch.where(drop, torch.zeros_like(labels), labels)
            confidence = torch.where(drop, torch.full_like(conf, float("nan")), conf)
    return Segmentation(labels, probs, scores, confidence, ("background", *classes), background, reduction)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps [..., h, w] -> [..., H, W] at ``size = (H, W)``, bilinear (``align_corners=False``)."""
    import torch.nn.functional as F

    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(1, -1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


__all__ = ["AUTO_BACKGROUND", "DEFAULT_THRESHOLD", "DEFAULT_LOGIT_SCALE", "Background", "Segmentation",
           "background_rule", "clean_prompts", "segment_maps", "resize_maps"]
