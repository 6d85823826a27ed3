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

    The projections run as batched fused attention (``scaled_dot_product_attention``), so no [N, N]
    matrix is kept: on CPU one call per image, with its temperature as the kernel's scale (the smaller
    calls keep each image's keys in cache, and the values are broadcast without a copy); on other
    devices one call for the whole batch. Returns [B, h, N, d].
    """
    src = {"q": q, "k": k, "v": v}
    B = q.shape[0]
    x = torch.stack([src[p] for p in projections], dim=1)  # (B, P, h, N, d), a fresh buffer
    if l2_normalize:
        x = _unit(x)
    per_image = x.device.type == "cpu"
    if isinstance(inv_temp, torch.Tensor):
        temps = inv_temp.reshape(-1).expand(B)  # (B,)
        if per_image and not temps.requires_grad:
            temps = temps.tolist()  # plain kernel scales, no pass over the queries
        # else a tensor: no host sync on an accelerator, and gradients reach the temperature
    else:
        temps = [float(inv_temp)] * B
    groups = [slice(b, b + 1) for b in range(B)] if per_image else [slice(0, B)]
    outs = []
    for g in groups:
        # a float (per image, or one fixed value for all) or the group's tensor of temperatures [G]
        t = temps[g] if isinstance(temps, torch.Tensor) else temps[g.start]
        xg, vg = x[g], v[g].unsqueeze(1)  # (G, P, h, N, d), (G, 1, h, N, d)
        for _ in range(iterations):
            xg = _attend(xg, xg, t)  # softmax(t * x̂ x̂ᵀ) x̂
            if l2_normalize:
                xg = _unit(xg)
        o = _attend(xg, vg, t)  # (G, P, h, N, d), laid out as (G, P, N, h, d)
        # average in the kernel's (N, h, d) layout, which the output projection reads without a copy
        outs.append(o.transpose(2, 3).mean(dim=1))  # (G, N, h, d)
    return (outs[0] if len(outs) == 1 else torch.cat(outs)).transpose(1, 2)  # (B, h, N, d)


def _attend(x: torch.Tensor, values: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``softmax(t * x xᵀ) values`` per image and projection: x (G, P, h, N, d), values (G, P or 1, h, N, d),
    t a float or a tensor [G] (one temperature per image). Returns (G, P, h, N, d)."""
    G, P = x.shape[:2]
    flat = x.flatten(0, 1)  # (G*P, h, N, d), a view
    vals = values.expand(G, P, *values.shape[2:]).reshape(G * P, *values.shape[2:])  # a view when G == 1
    if isinstance(t, torch.Tensor):
        q = flat * t.to(x.dtype).repeat_interleave(P).view(G * P, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, flat, vals, scale=1.0)
    else:
        out = F.scaled_dot_product_attention(flat, flat, vals, scale=t)
    return out.unflatten(0, (G, P))


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x / max(||x||, 1e-12)`` over the last dim (as ``F.normalize``); in place unless autograd
    tracks ``x``. Only call it on buffers this module allocated."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x / norm if x.requires_grad else x.div_(norm)


def adaptive_inv_temp(h: torch.Tensor, head_dim: int) -> torch.Tensor:
    """GEM's adaptive inverse temperature: mean token norm of ``h`` [B, N, C] times ``d**-0.5``. -> [B]."""
    return h.norm(dim=-1).mean(dim=-1) * head_dim ** -0.5


def inv_temp(h: torch.Tensor, head_dim: int, config: GEMConfig) -> torch.Tensor | float:
    """The inverse temperature of a GEM block: ``config.temperature``, or (None) the adaptive one [B]
    of its input ``h = ln_1(x)`` [B, N, C]."""
    return config.temperature if config.temperature is not None else adaptive_inv_temp(h, head_dim)


def gem_block(blk: ViTBlock, x_gem: torch.Tensor, h: torch.Tensor, qkv: tuple[torch.Tensor, ...],
              config: GEMConfig) -> torch.Tensor:
    """One block of the GEM path: ``x_gem + O(SS(q, k, v))`` (then ``+ F(.)`` with ``gem_mlp``), with
    ``h = ln_1(x)`` [B, N, C] and ``qkv`` = (q, k, v) [B, heads, N, d] of the original path's tokens x.
    x_gem [B, N, C] -> [B, N, C]."""
    q, k, v = qkv
    ss = self_self_attention(q, k, v, inv_temp=inv_temp(h, q.shape[-1], config), iterations=config.iterations,
                             projections=config.projections, l2_normalize=config.l2_normalize)
    x_gem = x_gem + blk.attn_out(ss)
    return x_gem + blk.mlp_residual(x_gem) if config.gem_mlp else x_gem


def check_depth(backbone: Backbone, config: GEMConfig) -> None:
    """The one check that ``config.depth`` fits ``backbone`` (at most its number of blocks + 1)."""
    n = len(backbone.blocks)
    if config.num_blocks > n:
        raise ValueError(f"GEM depth {config.depth} needs {config.num_blocks} blocks but {backbone.name} has "
                         f"{n}; use depth <= {n + 1}")


def gem_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, return_ori: bool = False,
               return_intermediates: bool = False):
    """Run the image encoder with the GEM path.

    Args:
        images: [B, 3, H, W], normalized; H and W multiples of the patch size.
        return_ori: also return the original path's final tokens.
        return_intermediates: also return every block's output on both paths (the idea of timm's
            ``forward_intermediates``), for per-layer analyses.
    Returns:
        ``(gem, ori)``: tokens after the final norm and projection, [B, N, D] each, for the GEM path
        and (only with ``return_ori``, else ``None``) the original path. With no GEM block the two
        are the base model's tokens. With ``return_intermediates``: ``(gem, ori, layers)``, ``ori``
        always computed and ``layers = {"gem": [...], "ori": [...]}``, L tensors [B, N, D] per path:
        ``head`` of the tokens after blocks 1..L. Before the first GEM block the GEM path is the
        original one (the same tensors); the last entries are ``gem`` and ``ori``.
    """
    check_depth(backbone, config)
    blocks = backbone.blocks
    n_gem = config.num_blocks
    keep_ori = return_ori or return_intermediates
    layers = {"gem": [], "ori": []} if return_intermediates else None
    x = backbone.embed(images)  # (B, N, C)
    first = len(blocks) - n_gem
    for blk in blocks[:first]:
        x = blk.plain(x)
        if layers is not None:
            out = backbone.head(x)  # (B, N, D)
            layers["ori"].append(out)
            layers["gem"].append(out)
    x_gem = x
    for i, blk in enumerate(blocks[first:]):
        h = blk.ln_1(x)
        q, k, v = blk.qkv(h)  # (B, heads, N, d) each, shared by both paths
        x_gem = gem_block(blk, x_gem, h, (q, k, v), config)
        if keep_ori or i < n_gem - 1:  # the original path's last block only feeds return_ori
            x = x + blk.attn_out(F.scaled_dot_product_attention(q, k, v))
            x = x + blk.mlp_residual(x)
        if layers is not None:
            layers["gem"].append(backbone.head(x_gem))
            layers["ori"].append(backbone.head(x))
    if layers is not None:
        return layers["gem"][-1], layers["ori"][-1], layers
    gem = backbone.head(x_gem)
    if not return_ori:
        return gem, None
    return gem, (gem if n_gem == 0 else backbone.head(x))
