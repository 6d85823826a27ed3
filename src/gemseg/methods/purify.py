"""Pieces shared by SC-CLIP and SFP: outlier ("anomaly") patch detection and repair, affinity-weighted
aggregation of patch tokens, and the last block re-run with a similarity-based attention.

All tensors are batch-first. ``x`` [B, n, C] are patch tokens (no prefix tokens) in row-major order
on a ``(gh, gw)`` grid; masks [B, n] are boolean. Every function works image by image where the
official code (written for one image at a time) takes a statistic over the whole tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones.base import ViTBlock


def block_with_attention(blk: ViTBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block as its model runs it (``x + attn``, then ``+ mlp``), also returning its attention
    probabilities ``softmax(s q kᵀ)``: x [B, N, C] -> (y [B, N, C], attn [B, heads, N, N])."""
    q, k, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
    attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, heads, N, N)
    y = x + blk.attn_out(attn @ v)
    return y + blk.mlp_residual(y), attn


def lof_scores(x: torch.Tensor, n_neighbors: int) -> torch.Tensor:
    """SC-CLIP's local outlier factor of each token of x [B, n, C] -> [B, n].

    As SC-CLIP's ``lof_pytorch``: squared Euclidean distances, the ``k = n_neighbors`` nearest other
    tokens, reachability ``max(d(i, j), kdist(i))`` with ``kdist(i)`` the query token's own k-distance,
    ``lrd(i) = k / mean_j reach(i, j)``, ``LOF(i) = mean_j lrd(j) / lrd(i)`` over i's neighbours j.
    """
    n = x.shape[1]
    if not 0 < n_neighbors < n:
        raise ValueError(f"LOF needs 0 < n_neighbors < the number of patches ({n}), got {n_neighbors}; "
                         "use a larger image or fewer neighbours")
    dist = torch.cdist(x.float(), x.float(), compute_mode="donot_use_mm_for_euclid_dist") ** 2  # (B, n, n)
    knn_d, knn_i = torch.topk(dist, k=n_neighbors + 1, dim=-1, largest=False)
    knn_d, knn_i = knn_d[..., 1:], knn_i[..., 1:]  # the first is the token itself, (B, n, k)
    reach = torch.maximum(knn_d, knn_d[..., -1:].expand_as(knn_d))
    lrd = n_neighbors / torch.nan_to_num(reach.mean(dim=-1), nan=1e-6)  # (B, n)
    return (torch.gather(lrd, 1, knn_i.flatten(1)).view_as(knn_i) / lrd[..., None]).mean(dim=-1)


def lof_outliers(x: torch.Tensor, *, n_neighbors: int = 30, contamination: float = 0.05) -> torch.Tensor:
    """Tokens whose LOF exceeds its ``1 - contamination`` quantile (linear interpolation), per image:
    x [B, n, C] -> mask [B, n]."""
    scores = lof_scores(x, n_neighbors)
    threshold = torch.quantile(scores, 1 - contamination, dim=-1, keepdim=True)
    return scores > threshold


def top_outliers(values: torch.Tensor, count: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """The ``count`` largest ``values`` [B, n] per image (among ``candidates`` [B, n] where given) -> mask [B, n]."""
    if candidates is not None:
        values = values.masked_fill(~candidates, float("-inf"))
    idx = values.topk(min(count, values.shape[-1]), dim=-1).indices
    mask = torch.zeros_like(values, dtype=torch.bool).scatter_(1, idx, True)
    return mask if candidates is None else mask & candidates


def fill_outliers(x: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Replace each outlier token by the mean of its non-outlier 8-neighbours on the grid (SC-CLIP's and
    SFP's ``mean_interpolation``); an outlier with none keeps its value. x [B, n, C], mask [B, n]."""
    B, n, C = x.shape
    gh, gw = grid
    keep = (~mask).to(x.dtype).view(B, 1, gh, gw)
    fmap = x.transpose(1, 2).reshape(B, C, gh, gw) * keep
    kernel = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)
    kernel[..., 1, 1] = 0
    sums = F.conv2d(fmap.reshape(B * C, 1, gh, gw), kernel, padding=1).view(B, C, gh, gw)
    count = F.conv2d(keep, kernel, padding=1)  # (B, 1, gh, gw)
    mean = (sums / count.clamp_min(1)).flatten(2).transpose(1, 2)  # (B, n, C)
    update = mask & (count.flatten(1) > 0)  # (B, n)
    return torch.where(update[..., None], mean, x)


def cosine_affinity(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of tokens: x [B, n, C] -> [B, n, n]."""
    u = x / x.norm(dim=-1, keepdim=True)
    return u @ u.transpose(1, 2)


def thresholded(sim: torch.Tensor, beta: float) -> torch.Tensor:
    """``sim`` with entries below ``beta`` set to 0 (a new tensor)."""
    return sim.masked_fill(sim < beta, 0.0)


def aggregate(x: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Each token becomes the affinity-weighted mean of all tokens, rows normalized by their sum + 1e-6
    (``adaptively_aggregate``): x [B, n, C], affinity [B, n, n] -> [B, n, C]."""
    return (affinity / (affinity.sum(dim=-1, keepdim=True) + 1e-6)) @ x


def similarity_attention(sim: torch.Tensor, gamma: float) -> torch.Tensor:
    """An attention from a similarity [B, n, n]: ``softmax(mask(gamma * (sim - mean(sim))))``, entries
    below 0 masked out; the mean is over each image's whole matrix. A row with every entry masked
    (the official code gives NaN there) attends to itself (our fallback). -> [B, n, n]"""
    logits = (sim - sim.mean(dim=(1, 2), keepdim=True)) * gamma
    masked = logits < 0
    dead = masked.all(dim=-1)  # (B, n)
    if dead.any():
        masked.diagonal(dim1=1, dim2=2).logical_and_(~dead)
    return logits.masked_fill(masked, float("-inf")).softmax(dim=-1)


def mixed_attention_output(blk: ViTBlock, x: torch.Tensor, sim_attn: torch.Tensor,
                           terms: tuple[str, ...]) -> torch.Tensor:
    """The block's attention branch on tokens x [B, n, C] with the attention ``(Σ_t softmax(s t tᵀ) +
    sim_attn) / (len(terms) + 1)`` for ``t`` in ``terms`` (``"q"``, ``"k"``), ``sim_attn`` [B, n, n]
    shared by the heads: ``O(A v)`` [B, n, C] (no residual, no MLP)."""
    q, k, v = blk.qkv(blk.ln_1(x))  # (B, heads, n, d)
    src, s = {"q": q, "k": k}, q.shape[-1] ** -0.5
    attn = sim_attn[:, None].to(v.dtype)
    for t in terms:
        attn = attn + (src[t] @ src[t].transpose(-2, -1) * s).softmax(dim=-1)
    return blk.attn_out(attn / (len(terms) + 1) @ v)
