"""From query similarities to class scores and probabilities: the query-to-class reduction.

A *query* is one text prompt; several queries can name one class (synonyms, or a set of background
prompts that all mean "background").

The reduction from queries to class probabilities has one default, ``"softmax_then_max"``: softmax of
``logit_scale * cosine`` over *all* queries, then each class's probability is the max over its queries.
This is what the official SCLIP, ClearCLIP and NACLIP segmentors do (``postprocess_result`` in
wangf3014/SCLIP ``clip_segmentor.py``, mc-lan/ClearCLIP ``clearclip_segmentor.py``, sinahmr/NACLIP
``naclip.py``). ``"max_then_softmax"`` (max of cosines per class, then softmax over classes; what
``gemseg segment`` did before ``--reduction`` existed) is the named alternative. Both orders give the same argmax; they
differ in the probabilities, hence in which pixels a probability threshold sends to background.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .names import DEFAULT_REDUCTION, REDUCTIONS  # noqa: F401  (plain data there: --help lists them without torch)


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


def class_probabilities(sims: torch.Tensor, query_to_class: Sequence[int] | torch.Tensor, num_classes: int, *,
                        logit_scale: float = 100.0, reduction: str = DEFAULT_REDUCTION) -> torch.Tensor:
    """Class probabilities from query similarities.

    ``"softmax_then_max"`` (default): ``p_q = softmax_q(logit_scale * sims)`` over all queries, then
    ``P_c = max_{q of c} p_q`` (rows need not sum to 1 when a class has several queries).
    ``"max_then_softmax"``: ``s_c = max_{q of c} sims_q``, then ``P_c = softmax_c(logit_scale * s_c)``.
    With one query per class both are the plain softmax.

    Args:
        sims: [B, Q, H, W] query similarities (cosines).
        query_to_class: [Q] class index of each query (see :func:`reduce_queries`).
    Returns:
        [B, C, H, W] float32 with ``C = num_classes``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale:g}")
    sims = sims.float()
    if reduction == "softmax_then_max":
        probs = torch.softmax(logit_scale * sims, dim=1)  # (B, Q, H, W)
        return reduce_queries(probs, query_to_class, num_classes)  # (B, C, H, W)
    return torch.softmax(logit_scale * reduce_queries(sims, query_to_class, num_classes), dim=1)
