"""How a method's last block attends, as the method declares it (:attr:`gemseg.methods.Method.attention`),
so that a plug-in can rewrite that attention (ResCLIP, :mod:`.resclip`) without knowing the method's name.

Every declared base computes, in the backbone's last block, one effective attention map ``A`` [B, heads,
N, N] that weights the values, ``A v``; the two kinds differ in how ``A`` is formed and where ``O(A v)`` goes:

- :class:`LastBlockAttention` (``sclip``, ``clearclip``, ``naclip``, ``clip``): the last block re-run with
  ``A = Σ_t softmax(L_t + ω)`` over its similarity logits ``L_t = s a bᵀ`` (``s = d**-0.5``), output
  ``O(A v)`` alone or ``x + O(A v)`` then ``+ F(.)``.
- :class:`SelfSelfAttention` (``gem``, ``vv``): GEM's parallel path through the last ``depth - 1``
  blocks; in the last one ``A = mean_p softmax(L_p)`` over the projections ``p`` with
  ``L_p = t x̂_p x̂_pᵀ``, ``x̂_p`` the projection after GEM's iterations (which stay as they are), output
  ``x_gem + O(A v)`` (then ``+ F(.)`` with ``gem_mlp``). GEM's output is ``mean_p (A_p v) = (mean_p A_p) v``,
  so this is GEM's own map, made explicit.

:meth:`enter` runs the encoder up to the last block and returns a :class:`LastBlock`, whose ``run`` computes
the last block with two optional hooks: ``logits(L)`` on each term's logits [B, heads, N, N] before the
softmax (and before ``ω``), ``attention(A)`` on the effective map before it weights the values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..backbones.base import Backbone
from ..config import GEMConfig
from ..gem import check_depth, gem_block, inv_temp
from .baselines import NACLIP_STD, neighbourhood_bias, token_grid
from .purify import block_with_attention

Hook = Optional[Callable[[torch.Tensor], torch.Tensor]]  # [B, heads, N, N] -> [B, heads, N, N]


@dataclass(frozen=True)
class LastBlock:
    """A base's last block, ready to run: what :meth:`LastBlockAttention.enter` and
    :meth:`SelfSelfAttention.enter` return."""

    x: torch.Tensor  # [B, N, C] the unmodified encoder's tokens entering the last block
    qk: torch.Tensor | None  # [B, heads, N, N] the mean of softmax(s q kᵀ) over the blocks asked for, or None
    run: Callable[..., torch.Tensor]  # run(*, logits: Hook = None, attention: Hook = None) -> [B, N, C], before the head


def trunk_with_attention(backbone: Backbone, images: torch.Tensor, layers: tuple[int, ...] | None):
    """Tokens entering the last block [B, N, C] and (``layers`` given) the mean of those blocks' q-k
    attention [B, heads, N, N]; the blocks run unmodified."""
    x, total = backbone.embed(images), 0
    for i, blk in enumerate(backbone.blocks[:-1]):
        if layers is not None and i in layers:
            x, attn = block_with_attention(blk, x)
            total = total + attn
        else:
            x = blk.plain(x)
    return x, (None if layers is None else total / len(layers))


@dataclass(frozen=True)
class LastBlockAttention:
    """A base that re-runs the last block with ``A = Σ_t softmax(L_t + ω)``."""

    terms: tuple[str, ...]  # similarity logits softmaxed and summed: "qq", "kk", "qk"
    neighbourhood: bool  # NACLIP's Gaussian ω added to each term's logits
    residual: bool  # True: x + O(A v), then + F(.); False: O(A v) alone

    def enter(self, backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
              layers: tuple[int, ...] | None = None, neighbourhood_std: float = NACLIP_STD) -> LastBlock:
        """The last block of ``images`` [B, 3, H, W]; ``layers``: the blocks whose q-k attention to average;
        ``neighbourhood_std``: ω's standard deviation in patches (with ``neighbourhood``)."""
        x, qk = trunk_with_attention(backbone, images, layers)
        grid = token_grid(backbone, images, x.shape[1])
        bias = (neighbourhood_bias(grid, std=neighbourhood_std, num_prefix_tokens=backbone.num_prefix_tokens,
                                   device=x.device) if self.neighbourhood else None)
        blk = backbone.blocks[-1]

        def run(*, logits: Hook = None, attention: Hook = None) -> torch.Tensor:
            q, k, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
            src, scale, attn = {"q": q, "k": k}, q.shape[-1] ** -0.5, 0
            for t in self.terms:
                lg = src[t[0]] @ src[t[1]].transpose(-2, -1) * scale  # (B, heads, N, N)
                lg = logits(lg) if logits is not None else lg
                lg = lg + bias.to(lg.dtype) if bias is not None else lg
                attn = attn + lg.softmax(dim=-1)
            attn = attention(attn) if attention is not None else attn
            out = blk.attn_out(attn @ v)
            if not self.residual:
                return out
            z = x + out
            return z + blk.mlp_residual(z)

        return LastBlock(x, qk, run)


@dataclass(frozen=True)
class SelfSelfAttention:
    """A base on GEM's self-self path (``gem``, and ``vv`` through its GEM settings)."""

    settings: Callable[[Backbone, GEMConfig], GEMConfig] | None = None  # the GEM settings it runs with; None: config

    def enter(self, backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
              layers: tuple[int, ...] | None = None, neighbourhood_std: float = NACLIP_STD) -> LastBlock:
        """The last GEM block of ``images`` [B, 3, H, W] (``depth`` >= 2: GEM's path must reach it);
        ``layers``: the blocks whose q-k attention on the original path to average; ``neighbourhood_std``
        is not read (GEM has no ω)."""
        cfg = self.settings(backbone, config) if self.settings is not None else config
        check_depth(backbone, cfg)
        if cfg.num_blocks < 1:
            raise ValueError(f"depth {cfg.depth} puts no block on GEM's path, so it has no attention to rewrite; "
                             "use depth >= 2")
        blocks = backbone.blocks
        first = len(blocks) - cfg.num_blocks  # the first block on GEM's path
        x, x_gem, total = backbone.embed(images), None, 0
        for i, blk in enumerate(blocks[:-1]):
            if i >= first:  # GEM's path, q, k, v from the original one
                h = blk.ln_1(x)
                x_gem = gem_block(blk, x if x_gem is None else x_gem, h, blk.qkv(h), cfg)
            if layers is not None and i in layers:
                x, attn = block_with_attention(blk, x)
                total = total + attn
            else:
                x = blk.plain(x)
        x_gem = x if x_gem is None else x_gem  # depth 2: the path starts at the last block
        blk = blocks[-1]

        def run(*, logits: Hook = None, attention: Hook = None) -> torch.Tensor:
            h = blk.ln_1(x)
            q, k, v = blk.qkv(h)  # (B, heads, N, d)
            attn = self_self_map(q, k, v, inv_temp(h, q.shape[-1], cfg), cfg, logits)
            attn = attention(attn) if attention is not None else attn
            y = x_gem + blk.attn_out(attn @ v)
            return y + blk.mlp_residual(y) if cfg.gem_mlp else y

        return LastBlock(x, None if layers is None else total / len(layers), run)


def self_self_map(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float, config: GEMConfig,
                  logits: Hook = None) -> torch.Tensor:
    """GEM's effective attention ``mean_p softmax(logits(t x̂_p x̂_pᵀ))`` over ``config.projections``, with
    ``x̂_p`` after ``config.iterations`` steps ``x̂ <- unit(softmax(t x̂ x̂ᵀ) x̂)`` (``unit`` only with
    ``l2_normalize``): q, k, v [B, heads, N, d], ``t`` a float or [B] -> [B, heads, N, N]. ``A v`` is
    :func:`gemseg.gem.self_self_attention`'s output."""
    t = t.reshape(-1, 1, 1, 1) if isinstance(t, torch.Tensor) else t
    unit = (lambda y: torch.nn.functional.normalize(y, dim=-1)) if config.l2_normalize else (lambda y: y)
    src, total = {"q": q, "k": k, "v": v}, 0
    for p in config.projections:
        x = unit(src[p])
        for _ in range(config.iterations):
            x = unit((t * (x @ x.transpose(-2, -1))).softmax(dim=-1) @ x)
        lg = t * (x @ x.transpose(-2, -1))  # (B, heads, N, N)
        total = total + (logits(lg) if logits is not None else lg).softmax(dim=-1)
    return total / len(config.projections)


AttentionKind = (LastBlockAttention, SelfSelfAttention)  # the kinds a method can declare as its attention
