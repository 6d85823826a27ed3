"""Pixel-adaptive mask refinement (PAMR; Araslanov & Roth, "Single-stage semantic segmentation from image
labels", CVPR 2020), the optional refinement step of SCLIP/NACLIP-style protocols.

Each pixel's scores are repeatedly replaced by an affinity-weighted average of its neighbours' scores.
The neighbours are the 8 pixels around it at each dilation; the affinity of neighbour j of pixel i is
``softmax_j(-mean_channels(|I_i - I_j| / (1e-8 + 0.1 * sigma_i)))``, where ``sigma_i`` is the standard
deviation of the image over i's neighbourhoods (centre included once per dilation). Image borders are
replicated.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def _offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    return [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, H: int, W: int) -> torch.Tensor:
    return padded[..., pad + dy: pad + dy + H, pad + dx: pad + dx + W]


@torch.no_grad()
def pamr(image: torch.Tensor, scores: torch.Tensor, *, steps: int = 10,
         dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Refine ``scores`` [B, K, H, W] with the colours of ``image`` [B, 3, H, W] (same size; any
    normalization). Returns [B, K, H, W] float32; ``steps=0`` returns the scores unchanged."""
    if image.shape[0] != scores.shape[0] or image.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"image {list(image.shape)} and scores {list(scores.shape)} must share batch and size")
    scores = scores.float()
    if steps == 0:
        return scores
    H, W = image.shape[-2:]
    pad = max(dilations)
    image = image.float()
    img = F.pad(image, (pad,) * 4, mode="replicate")  # (B, 3, H + 2p, W + 2p)
    offsets = _offsets(dilations)
    neighbours = torch.stack([_shifted(img, pad, dy, dx, H, W) for dy, dx in offsets], dim=2)  # (B, 3, N, H, W)
    window = torch.cat([image.unsqueeze(2).expand(-1, -1, len(dilations), -1, -1), neighbours], dim=2)
    sigma = window.std(dim=2, keepdim=True)  # (B, 3, 1, H, W)
    affinity = -(neighbours - image.unsqueeze(2)).abs() / (1e-8 + 0.1 * sigma)
    affinity = affinity.mean(dim=1).softmax(dim=1)  # (B, N, H, W)
    del neighbours, window
    for _ in range(steps):
        padded = F.pad(scores, (pad,) * 4, mode="replicate")
        out = torch.zeros_like(scores)
        for n, (dy, dx) in enumerate(offsets):  # one neighbour at a time: memory stays O(K * H * W)
            out += affinity[:, n: n + 1] * _shifted(padded, pad, dy, dx, H, W)
        scores = out
    return scores
