"""From similarity maps to label maps: query-to-class reduction and background rules.

A *query* is one text prompt; several queries can name one class (synonyms, or a set of background
prompts that all mean "background").
"""
from __future__ import annotations

from typing import Sequence

import torch


def reduce_queries(sims: torch.Tensor, query_to_class: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class scores as the max over each class's queries.

    Args:
        sims: [B, Q, H, W] query similarities.
        query_to_class: [Q] class index of each query, in ``[0, num_classes)``; every class needs a query.
    Returns:
        [B, C, H, W] with ``C = num_classes``.
    """
    idx = torch.as_tensor(query_to_class, dtype=torch.long, device=sims.device)
    if idx.ndim != 1 or idx.numel() != sims.shape[1]:
        raise ValueError(f"query_to_class has {idx.numel()} entries for {sims.shape[1]} queries")
    if idx.numel() and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"query_to_class values must lie in [0, {num_classes})")
    missing = sorted(set(range(num_classes)) - set(idx.tolist()))
    if missing:
        raise ValueError(f"classes {missing[:5]} have no query")
    if idx.numel() == num_classes and torch.equal(idx, torch.arange(num_classes, device=idx.device)):
        return sims
    B, _, H, W = sims.shape
    out = sims.new_full((B, num_classes, H, W), float("-inf"))
    return out.scatter_reduce(1, idx.view(1, -1, 1, 1).expand_as(sims), sims, reduce="amax", include_self=True)


def predict_labels(scores: torch.Tensor, *, logit_scale: float = 100.0, prob_threshold: float | None = None,
                   background_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel argmax with an optional probability threshold for background.

    ``p = softmax(logit_scale * scores)`` over classes; a pixel whose top probability is below
    ``prob_threshold`` gets ``background_index``. (Thresholding *raw* similarities scaled by CLIP's
    logit scale works; thresholding a softmax of min-max normalized maps does not, because its values
    never exceed e / (e + C - 1).)

    Args:
        scores: [B, C, H, W] class similarities.
    Returns:
        ``(labels [B, H, W] long, confidence [B, H, W] float)``.
    """
    probs = torch.softmax(logit_scale * scores.float(), dim=1)
    conf, labels = probs.max(dim=1)
    if prob_threshold is not None:
        labels = torch.where(conf < prob_threshold, torch.full_like(labels, background_index), labels)
    return labels, conf
