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

    Each image's projections run as one batched fused attention (``scaled_dot_product_attention``)
    with its temperature as the kernel's scale, so no [N, N] matrix is kept. Returns [B, h, N, d].
    """
    src = {"q": q, "k": k, "v": v}
    P, B = len(projections), q.shape[0]
    if not isinstance(inv_temp, torch.Tensor):
        temps = [float(inv_temp)] * B
    elif inv_temp.device.type == "cpu" and not inv_temp.requires_grad:
        temps = inv_temp.reshape(-1).expand(B).tolist()  # plain kernel scales, no pass over the queries
    else:  # 0-d tensors: no host sync on an accelerator, and gradients reach the temperature
        temps = list(inv_temp.reshape(-1).expand(B).unbind())
    x = torch.stack([src[p] for p in projections], dim=1)  # (B, P, h, N, d), a fresh buffer
    if l2_normalize:
        x = _unit(x)
    outs = []
    # One kernel call per image: its temperature is a plain scale, the values are v[b] broadcast over
    # the projections without a copy, and (on CPU) the smaller calls keep the keys in cache.
    for b, t in enumerate(temps):
        xb = x[b]  # (P, h, N, d)
        for _ in range(iterations):
            xb = _attend(xb, xb, t)  # softmax(t * x̂ x̂ᵀ) x̂
            if l2_normalize:
                xb = _unit(xb)
        o = _attend(xb, v[b].expand(P, *v.shape[1:]), t)  # (P, h, N, d)
        # average in the kernel's (N, h, d) memory layout, which the output projection reads copy-free
        outs.append(o[0].transpose(0, 1) if P == 1 else o.transpose(1, 2).mean(dim=0))  # (N, h, d)
    return torch.stack(outs).transpose(1, 2)  # (B, h, N, d)


def _attend(x: torch.Tensor, values: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``softmax(t * x xᵀ) values`` for x, values [P, h, N, d]; t a float or a 0-d tensor."""
    if isinstance(t, torch.Tensor):
        return F.scaled_dot_product_attention(x * t.to(x.dtype), x, values, scale=1.0)
    return F.scaled_dot_product_attention(x, x, values, scale=t)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x / max(||x||, 1e-12)`` over the last dim (as ``F.normalize``); in place unless autograd
    tracks ``x``. Only call it on buffers this module allocated."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x / norm if x.requires_grad else x.div_(norm)


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
