"""CASS's object-presence prior (Kim et al., CVPR 2025, arXiv 2411.17150, Sec. 3.3; MICV-yonsei/CASS
cass_segmentor.py ``hierarchical_clustering``, ``hierarchical_prompt`` and ``forward_feature``).

The queries are grouped once by Ward linkage on their cosine distances, cut at ``h_threshold``. Per image,
with ``g`` the cosine of the image's class token with each query (the object-presence likelihood):

- in each group only the query with the highest ``g`` is adjusted: its text embedding ``t`` becomes
  ``normalize((1 − β) t + β m)``, ``m`` the normalized mean of the ``topk`` patch features most similar
  to ``t`` (``β`` = ``mean_vector_weight``);
- the patch scores are ``(1 − γ) f·t' + γ g`` (``γ`` = ``global_semantics_weight``).

With both weights 0 (the defaults) the scores are the plain cosines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ward_clusters(text: torch.Tensor, threshold: float) -> list[int]:
    """Flat clusters of the queries ``text`` [Q, D] (L2-normalized): Ward linkage on the cosine distances
    ``1 − tᵢ·tⱼ`` (the Lance–Williams update scipy's ``linkage(method='ward')`` applies to a given distance
    matrix), cut so that no merge above ``threshold`` is made (``fcluster(criterion='distance')``).
    Returns a cluster index per query, clusters numbered in order of their first query."""
    Q = text.shape[0]
    t = text.detach().double()
    d = (1 - t @ t.T).clamp(min=0)
    d.fill_diagonal_(float("inf"))
    size = torch.ones(Q, dtype=torch.float64, device=t.device)
    root = list(range(Q))  # root[q]: the cluster (its surviving row) of query q
    alive = torch.ones(Q, dtype=torch.bool, device=t.device)
    for _ in range(Q - 1):
        flat = int(d.argmin())
        x, y = divmod(flat, Q)
        best = float(d[x, y])
        if best > threshold:
            break
        x, y = min(x, y), max(x, y)
        nx, ny = size[x], size[y]
        n = size + nx + ny
        new = ((size + nx) * d[x] ** 2 + (size + ny) * d[y] ** 2 - size * best ** 2) / n
        new = new.clamp(min=0).sqrt()  # (Q,): Ward's distance of x ∪ y to every cluster
        new[~alive] = float("inf")
        new[x] = float("inf")
        d[x], d[:, x] = new, new
        d[y], d[:, y] = float("inf"), float("inf")
        alive[y] = False
        size[x] = nx + ny
        root = [x if r == y else r for r in root]
    label: dict[int, int] = {}
    return [label.setdefault(r, len(label)) for r in root]


def adjusted_text(feats: torch.Tensor, text: torch.Tensor, presence: torch.Tensor, clusters: list[int], *,
                  weight: float, topk: int = 2) -> torch.Tensor:
    """One image: patch features ``feats`` [N, D] and queries ``text`` [Q, D] (both L2-normalized), the
    presence ``presence`` [Q] -> text embeddings [Q, D] with each cluster's most present query adjusted."""
    out = text.clone()
    sims = feats @ text.T  # (N, Q)
    k = min(topk, feats.shape[0])
    for c in sorted(set(clusters)):
        idx = torch.tensor([q for q, g in enumerate(clusters) if g == c], device=text.device)
        q = int(idx[presence[idx].argmax()])
        top = sims[:, q].topk(k).indices
        m = F.normalize(feats[top].mean(dim=0), dim=0)
        out[q] = F.normalize((1 - weight) * text[q] + weight * m, dim=0)
    return out


def presence_scores(feats: torch.Tensor, global_emb: torch.Tensor, text: torch.Tensor, settings,
                    clusters: list[int] | None = None) -> torch.Tensor:
    """CASS's patch scores with its object-presence prior.

    Args:
        feats: [B, D, h, w] L2-normalized patch embeddings (CASS's tokens).
        global_emb: [B, D] L2-normalized image embeddings (the unmodified class token).
        text: [Q, D] L2-normalized query embeddings.
        settings: a :class:`gemseg.methods.cass.CASSConfig` (its weights, ``h_threshold`` and ``topk``).
        clusters: :func:`ward_clusters` of ``text`` (computed here when ``None``).
    Returns:
        [B, Q, h, w] scores ``(1 − γ) f·t' + γ g``.
    """
    if clusters is None and settings.mean_vector_weight:
        clusters = ward_clusters(text, settings.h_threshold)
    B, D, h, w = feats.shape
    flat = feats.flatten(2).transpose(1, 2)  # (B, N, D)
    presence = global_emb @ text.T  # (B, Q)
    gsw = settings.global_semantics_weight
    out = []
    for b in range(B):
        t = text
        if settings.mean_vector_weight:
            t = adjusted_text(flat[b], text, presence[b], clusters, weight=settings.mean_vector_weight,
                              topk=settings.topk)
        out.append((1 - gsw) * (flat[b] @ t.T) + gsw * presence[b])  # (N, Q)
    return torch.stack(out).transpose(1, 2).reshape(B, -1, h, w)
