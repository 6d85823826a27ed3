"""The GEM computation on a :class:`~gemseg.backbones.base.Backbone`: tensors in, tensors out.

Notation: B images, N tokens (class token + patches), C width, h heads, d = C / h.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .backbones.base import Backbone, ViTBlock
from .config import GEMConfig


def self_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, inv_temp: torch.Tensor | float,
                        iterations: int = 1, projections: tuple[str, ...] = ("v", "k", "q"),
                        l2_normalize: bool = True) -> torch.Tensor:
    """GEM's self-self attention ensemble.

    For each selected projection ``x`` in {q, k, v} ([B, h, N, d]): ``iterations`` times
    ``x <- softmax(t * x̂ x̂ᵀ) x̂`` with ``x̂ = x / ||x||`` per head and token; then the final
    similarity weights the values, ``softmax(t * x̂ x̂ᵀ) v``. The outputs are averaged over the
    projections. ``inv_temp`` is a float or a per-image tensor [B].

    All projections run as one batched fused attention (``scaled_dot_product_attention``), so no
    [N, N] matrix is kept. Returns [B, h, N, d].
    """
    src = {"q": q, "k": k, "v": v}
    P, B = len(projections), q.shape[0]
    x = torch.cat([src[p] for p in projections], dim=0)  # (P*B, h, N, d)
    if isinstance(inv_temp, torch.Tensor):
        t = inv_temp.to(x.dtype).reshape(1, B, 1, 1, 1).expand(P, B, 1, 1, 1).reshape(P * B, 1, 1, 1)
    else:
        t = float(inv_temp)
    for _ in range(iterations):
        if l2_normalize:
            x = F.normalize(x, dim=-1)
        # the temperature scales the query side: softmax(t * x x^T) with the kernel's own scale set to 1
        x = F.scaled_dot_product_attention(x * t, x, x, scale=1.0)
    if l2_normalize:
        x = F.normalize(x, dim=-1)
    values = v.repeat(P, 1, 1, 1)  # (P*B, h, N, d)
    out = F.scaled_dot_product_attention(x * t, x, values, scale=1.0)  # (P*B, h, N, d)
    return out.unflatten(0, (P, B)).mean(dim=0)  # (B, h, N, d)


def adaptive_inv_temp(h: torch.Tensor, head_dim: int) -> torch.Tensor:
    """GEM's adaptive inverse temperature: mean token norm of ``h`` [B, N, C] times ``d**-0.5``. -> [B]."""
    return h.norm(dim=-1).mean(dim=-1) * head_dim ** -0.5


def _block(blk: ViTBlock, x: torch.Tensor) -> torch.Tensor:
    """A plain pre-norm block: x + attn(ln_1 x), then + mlp(ln_2 x). [B, N, C] -> [B, N, C]."""
    q, k, v = blk.qkv(blk.ln_1(x))
    x = x + blk.attn_out(F.scaled_dot_product_attention(q, k, v))
    return x + blk.mlp_residual(x)


def gem_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
               return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the image encoder with the GEM path.

    Args:
        images: [B, 3, H, W], normalized; H and W multiples of the patch size.
    Returns:
        ``(gem, ori)``: tokens after the final norm and projection, [B, N, D] each, for the GEM path
        and (only with ``return_ori``, else ``None``) the original path. With no GEM block the two
        are the base model's tokens.
    """
    blocks = backbone.blocks
    n_gem = config.num_blocks
    if n_gem > len(blocks):
        raise ValueError(f"GEM depth {config.depth} needs {n_gem} blocks but {backbone.name} has "
                         f"{len(blocks)}; use depth <= {len(blocks) + 1}")
    x = backbone.embed(images)  # (B, N, C)
    first = len(blocks) - n_gem
    for blk in blocks[:first]:
        x = _block(blk, x)
    x_gem = x
    for i, blk in enumerate(blocks[first:]):
        h = blk.ln_1(x)
        q, k, v = blk.qkv(h)  # (B, heads, N, d) each, shared by both paths
        t = config.temperature if config.temperature is not None else adaptive_inv_temp(h, q.shape[-1])
        ss = self_self_attention(q, k, v, inv_temp=t, iterations=config.iterations,
                                 projections=config.projections, l2_normalize=config.l2_normalize)
        x_gem = x_gem + blk.attn_out(ss)
        if config.gem_mlp:
            x_gem = x_gem + blk.mlp_residual(x_gem)
        if return_ori or i < n_gem - 1:  # the original path's last block only feeds return_ori
            x = x + blk.attn_out(F.scaled_dot_product_attention(q, k, v))
            x = x + blk.mlp_residual(x)
    gem = backbone.head(x_gem)
    if not return_ori:
        return gem, None
    return gem, (gem if n_gem == 0 else backbone.head(x))
