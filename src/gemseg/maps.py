"""Patch-grid maps and padding: the small tensor steps between a backbone's tokens and pixel maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F

def pad_to_multiple(images: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    H, W = images.shape[-2:]
    pad_h, pad_w = -H % patch[0], -W % patch[1]
    return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images


def upsample_to(sims: torch.Tensor, size: tuple[int, int], patch: tuple[int, int],
                full: tuple[int, int] | None = None) -> torch.Tensor:
    """Patch-grid maps [B, P, gh, gw] -> [B, P, H, W], bilinear. The grid covers ``full`` pixels
    (default ``(gh * ph, gw * pw)``, the padded input); the padding is cropped off."""
    gh, gw = sims.shape[-2:]
    full = full or (gh * patch[0], gw * patch[1])
    out = F.interpolate(sims, size=full, mode="bilinear", align_corners=False)
    return out[..., : size[0], : size[1]]


def min_max(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalize each map of [..., H, W] to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(dim=-1, keepdim=True).values.unsqueeze(-1)
    hi = flat.max(dim=-1, keepdim=True).values.unsqueeze(-1)
    return (maps - lo) / (hi - lo).clamp_min(eps)
