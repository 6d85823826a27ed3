"""Training-free dense baselines on the :class:`~gemseg.backbones.base.Backbone` interface.

Every function here has the signature of :func:`gemseg.gem.gem_tokens`: ``(backbone, images [B, 3, H, W],
config, *, return_ori=False) -> (tokens [B, N, D], original tokens [B, N, D] or None)``, tokens after the
final norm and projection. ``images`` are normalized and their sides are multiples of the patch size
(:class:`~gemseg.GEMModel` pads them). The original tokens are always the unmodified encoder's.

Notation: ``x`` [B, N, C] are the tokens entering the last block, ``h = ln_1(x)``, ``q, k, v`` its
per-head projections [B, heads, N, d], ``s = d**-0.5``, ``O(.)`` the block's output projection and layer
scale (:meth:`~gemseg.backbones.base.ViTBlock.attn_out`), ``F(.)`` its MLP residual branch and
``head`` the final norm and projection. ``docs/methods.md`` has the papers and the reasoning.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..backbones.base import Backbone, ViTBlock
from ..config import GEMConfig
from ..gem import gem_tokens

NACLIP_STD = 5.0  # NACLIP's Gaussian standard deviation, in patches


def trunk(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """Tokens entering the last block, [B, N, C]: every block but the last, unmodified."""
    x = backbone.embed(images)  # (B, N, C)
    for blk in backbone.blocks[:-1]:
        x = blk.plain(x)
    return x


def _finish(backbone: Backbone, x: torch.Tensor, y: torch.Tensor,
            return_ori: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``head(y)``, and with ``return_ori`` the unmodified last block's ``head`` of ``x``."""
    ori = backbone.head(backbone.blocks[-1].plain(x)) if return_ori else None
    return backbone.head(y), ori


def token_grid(backbone: Backbone, images: torch.Tensor, num_tokens: int) -> tuple[int, int]:
    """``(gh, gw)`` of the patch grid of ``images``, checked against the ``num_tokens`` tokens (prefix included)."""
    (ph, pw), (H, W) = backbone.patch_size, images.shape[-2:]
    grid = (H // ph, W // pw)
    assert backbone.num_prefix_tokens + grid[0] * grid[1] == num_tokens, "token count does not match the grid"
    return grid


# --- the modified last blocks: x [B, N, C] -> y [B, N, C] (before the head) ---------------------------
def maskclip_block(blk: ViTBlock, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP as released: ``z = x + O(v)``, then ``y = z + F(z)`` (each token attends only to itself;
    residual and MLP kept)."""
    _, _, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
    z = x + blk.attn_out(v)
    return z + blk.mlp_residual(z)


def maskclip_vproj_block(blk: ViTBlock, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP as ClearCLIP re-implements it: ``y = O(v)`` (no residual, no MLP)."""
    _, _, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
    return blk.attn_out(v)


def sclip_block(blk: ViTBlock, x: torch.Tensor) -> torch.Tensor:
    """SCLIP: ``z = x + O((softmax(s q qᵀ) + softmax(s k kᵀ)) v)``, then ``y = z + F(z)``."""
    q, k, v = blk.qkv(blk.ln_1(x))
    csa = F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)  # (B, heads, N, d)
    z = x + blk.attn_out(csa)
    return z + blk.mlp_residual(z)


def clearclip_block(blk: ViTBlock, x: torch.Tensor) -> torch.Tensor:
    """ClearCLIP: ``y = O(softmax(s q qᵀ) v)`` (no residual, no MLP)."""
    q, _, v = blk.qkv(blk.ln_1(x))
    return blk.attn_out(F.scaled_dot_product_attention(q, q, v))


def naclip_block(blk: ViTBlock, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """NACLIP: ``y = O(softmax(s k kᵀ + ω) v)`` with ``ω`` = ``bias`` [N, N] (no residual, no MLP)."""
    _, k, v = blk.qkv(blk.ln_1(x))
    return blk.attn_out(F.scaled_dot_product_attention(k, k, v, attn_mask=bias.to(k.dtype)))


def neighbourhood_bias(grid: tuple[int, int], *, std: float = NACLIP_STD, num_prefix_tokens: int = 1,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """NACLIP's neighbourhood term ``ω``: [N, N] with ``N = num_prefix_tokens + gh * gw``.

    For patches ``i, j`` at grid positions ``p_i, p_j`` (row, column), ``ω_ij = exp(-‖p_i − p_j‖² /
    (2 std²))`` (1 on the diagonal, unnormalized); rows and columns of prefix tokens are 0. Patches are
    in row-major order, as the backbones emit them.
    """
    if not std > 0:
        raise ValueError(f"the Gaussian std must be > 0, got {std!r}")
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=-1).float()  # (gh*gw, 2)
    d2 = (pos[:, None, :] - pos[None, :, :]).pow(2).sum(-1)  # (gh*gw, gh*gw)
    p = num_prefix_tokens
    bias = torch.zeros(p + gh * gw, p + gh * gw, device=device)
    bias[p:, p:] = torch.exp(-d2 / (2 * std ** 2))
    return bias


# --- methods -------------------------------------------------------------------------------------------
def clip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw CLIP: every token of the unmodified encoder, ``head(x_L)``. Equals ``gem`` with depth 0."""
    x = backbone.embed(images)
    for blk in backbone.blocks:
        x = blk.plain(x)
    out = backbone.head(x)
    return out, (out if return_ori else None)


def maskclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                    return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MaskCLIP (Zhou et al., ECCV 2022, arXiv 2112.01071) as its official code computes it: in the last
    block the attention output is replaced by the output projection of the value embeddings, with the
    residual and the MLP kept, ``z = x + O(v)``, ``head(z + F(z))`` (no key smoothing or prompt denoising)."""
    x = trunk(backbone, images)
    return _finish(backbone, x, maskclip_block(backbone.blocks[-1], x), return_ori)


def maskclip_vproj_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                          return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MaskCLIP as re-implemented in ClearCLIP's code (``model_type='MaskCLIP'``, ``ignore_residual=True``):
    ``head(O(v))``, the value embeddings through the output projection, with no residual and no MLP."""
    x = trunk(backbone, images)
    return _finish(backbone, x, maskclip_vproj_block(backbone.blocks[-1], x), return_ori)


def vv_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
              return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CLIP Surgery-style value-value attention (Li et al., arXiv 2304.05653): a parallel path through
    the last ``config.depth - 1`` blocks, ``x' <- x' + O(softmax(s v vᵀ) v)`` with q, k, v from the
    original path, no MLP. This is GEM with ``projections=("v",)``, 0 iterations, no L2 normalization
    and the fixed temperature ``s``; only ``depth`` is read from ``config``. (CLIP Surgery's feature
    surgery, which subtracts features shared by all prompts, is a text-side step not applied here.)"""
    return gem_tokens(backbone, images, vv_settings(backbone, config), return_ori=return_ori)


def vv_settings(backbone: Backbone, config: GEMConfig) -> GEMConfig:
    """The GEM settings ``vv`` runs with: ``config``'s depth, ``projections=("v",)``, 0 iterations, no L2
    normalization, the fixed temperature ``s = d**-0.5``, no MLP."""
    head_dim = backbone.width // backbone.blocks[-1].num_heads
    return dataclasses.replace(config, projections=("v",), iterations=0, l2_normalize=False,
                               temperature=head_dim ** -0.5, gem_mlp=False)


def sclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                 return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SCLIP (Wang et al., ECCV 2024, arXiv 2312.01597): correlative self-attention in the last block,
    ``z = x + O((softmax(s q qᵀ) + softmax(s k kᵀ)) v)``, ``head(z + F(z))`` — residual and MLP kept,
    as in SCLIP's released code."""
    x = trunk(backbone, images)
    return _finish(backbone, x, sclip_block(backbone.blocks[-1], x), return_ori)


def clearclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                     return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ClearCLIP (Lan et al., ECCV 2024, arXiv 2407.12442): query-query attention in the last block
    with the residual connection and the MLP removed, ``head(O(softmax(s q qᵀ) v))``."""
    x = trunk(backbone, images)
    return _finish(backbone, x, clearclip_block(backbone.blocks[-1], x), return_ori)


def naclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, return_ori: bool = False,
                  std: float = NACLIP_STD) -> tuple[torch.Tensor, torch.Tensor | None]:
    """NACLIP (Hajimiri et al., WACV 2025, arXiv 2404.08181): key-key attention plus a Gaussian
    neighbourhood term in a reduced last block (no residual, no MLP), ``head(O(softmax(s k kᵀ + ω) v))``
    with ``ω`` from :func:`neighbourhood_bias` (``std`` in patches, 5 in the paper)."""
    x = trunk(backbone, images)
    grid = token_grid(backbone, images, x.shape[1])
    bias = neighbourhood_bias(grid, std=std, num_prefix_tokens=backbone.num_prefix_tokens, device=x.device)
    return _finish(backbone, x, naclip_block(backbone.blocks[-1], x, bias), return_ori)
