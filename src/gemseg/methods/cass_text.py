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

from .cass import CASSConfig


def ward_clusters(text: torch.Tensor, threshold: float) -> list[int]:
    """Flat clusters of the queries ``text`` [Q, D] (L2-normalized): Ward linkage on the cosine distances
    ``1 − tᵢ·tⱼ`` (the Lance–Williams update scipy's ``linkage(method='ward')`` applies to a given distance
    matrix), cut so that no merge above ``threshold`` is made (``fcluster(criterion='distance')``).
    Returns a cluster index per query, clusters numbered in order of their first query."""
    Q = text.shape[0]
    dist = (1 - text.double() @ text.double().T).clamp(min=0)
    dist.fill_diagonal_(0)
    d = dist.tolist()
    members = {i: [i] for i in range(Q)}
    while len(members) > 1:
        ids = list(members)
        best, pair = float("inf"), None
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                if d[ids[a]][ids[b]] < best:
                    best, pair = d[ids[a]][ids[b]], (ids[a], ids[b])
        if best > threshold:
            break
        x, y = pair
        nx, ny = len(members[x]), len(members[y])
        for i in members:
            if i in (x, y):
                continue
            ni = len(members[i])
            t = 1.0 / (nx + ny + ni)
            new = ((ni + nx) * t * d[x][i] ** 2 + (ni + ny) * t * d[y][i] ** 2 - ni * t * d[x][y] ** 2)
            d[x][i] = d[i][x] = max(new, 0.0) ** 0.5
        members[x] += members.pop(y)
    label, out = {}, [0] * Q
    for q in range(Q):
        root = next(r for r, m in members.items() if q in m)
        out[q] = label.setdefault(root, len(label))
    return out


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


def presence_scores(feats: torch.Tensor, global_emb: torch.Tensor, text: torch.Tensor, settings: CASSConfig,
                    clusters: list[int] | None = None) -> torch.Tensor:
    """CASS's patch scores with its object-presence prior.

    Args:
        feats: [B, D, h, w] L2-normalized patch embeddings (CASS's tokens).
        global_emb: [B, D] L2-normalized image embeddings (the unmodified class token).
        text: [Q, D] L2-normalized query embeddings.
        clusters: :func:`ward_clusters` of ``text`` (computed here when ``None``).
    Returns:
        [B, Q, h, w] scores ``(1 − γ) f·t' + γ g``.
    """
    if clusters is None:
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
