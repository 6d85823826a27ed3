"""The one interface every backbone implements, and helpers shared by the backends."""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Defaults for CLIP-style preprocessing (OpenAI's statistics); backends override per checkpoint.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# How learned position embeddings are resampled to a grid other than the trained one (docs/evaluation.md):
# "bicubic-aa": bicubic, antialiased, by target size (gem-torch; the default);
# "bicubic-scale": bicubic, not antialiased, by scale factor (g + 0.1) / g0 per axis (SCLIP, ClearCLIP, NACLIP);
# "bicubic": bicubic, not antialiased, by target size (MaskCLIP's resize_pos_embed);
# "bilinear": bilinear, not antialiased, by target size (CLIP Surgery).
POS_EMBED_MODES = ("bicubic-aa", "bicubic-scale", "bicubic", "bilinear")


@dataclass(frozen=True)
class Preprocess:
    """How a checkpoint expects its pixels: RGB in [0, 1], then ``(x - mean) / std``."""

    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"  # resampling used to resize images
    image_size: tuple[int, int] = (224, 224)  # (H, W) the weights were trained at


class ViTBlock:
    """A read-only view of one pre-norm transformer block of a third-party model.

    It holds references to the block's own modules (no copies, nothing rebound) and exposes the
    pieces GEM needs. All tensors are batch-first: ``x`` is ``[B, N, C]``.
    """

    def __init__(self, *, ln_1: nn.Module, ln_2: nn.Module, mlp: nn.Module, out_proj: nn.Linear,
                 num_heads: int, ls_1: nn.Module | None = None, ls_2: nn.Module | None = None):
        self.ln_1, self.ln_2, self.mlp, self.out_proj = ln_1, ln_2, mlp, out_proj
        self.ls_1 = ls_1 if ls_1 is not None else nn.Identity()
        self.ls_2 = ls_2 if ls_2 is not None else nn.Identity()
        self.num_heads = num_heads

    def project_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h`` [B, N, C] -> q, k, v, each [B, N, C] (the block's own input projection)."""
        raise NotImplementedError

    def qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h`` [B, N, C] -> q, k, v, each [B, heads, N, C // heads]."""
        B, N, C = h.shape
        return tuple(t.reshape(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)
                     for t in self.project_qkv(h))

    def attn_out(self, o: torch.Tensor) -> torch.Tensor:
        """Per-head attention output ``o`` [B, heads, N, d] -> residual branch [B, N, C]
        (output projection, then layer scale)."""
        B, heads, N, d = o.shape
        return self.ls_1(self.out_proj(o.transpose(1, 2).reshape(B, N, heads * d)))

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, N, C] -> MLP residual branch ``ls_2(mlp(ln_2(x)))`` [B, N, C]."""
        return self.ls_2(self.mlp(self.ln_2(x)))

    def plain(self, x: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        """The block as its model runs it: ``x + attn(ln_1 x)``, then ``+ mlp(ln_2 x)``; ``causal`` masks
        later tokens (text towers). [B, N, C] -> [B, N, C]."""
        q, k, v = self.qkv(self.ln_1(x))
        x = x + self.attn_out(F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        return x + self.mlp_residual(x)


class Backbone(nn.Module):
    """A class-token ViT image encoder with its text encoder, seen through one small interface.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`_patch_embed`,
    :meth:`head` and :meth:`_encode_tokens`/:meth:`_tokenize`.

    Attributes:
        name: model name, e.g. ``"ViT-B-16"`` or a Hugging Face id.
        pretrained: pretrained tag, checkpoint path or hub id the weights came from (``None``: random).
        patch_size: ``(ph, pw)`` in pixels.
        num_prefix_tokens: tokens before the patch tokens (1: the class token).
        width: token width inside the transformer.
        embed_dim: width of the joint image-text space.
        context_length: longest tokenized prompt the text encoder accepts.
        preprocess: the checkpoint's pixel statistics and native size.
        blocks: the image transformer's blocks, first to last.
    """

    name: str
    pretrained: str | None
    patch_size: tuple[int, int]
    num_prefix_tokens: int = 1
    width: int
    embed_dim: int
    context_length: int
    preprocess: Preprocess
    blocks: Sequence[ViTBlock]
    pos_embed_mode: str = "bicubic-aa"  # see POS_EMBED_MODES; set for a call with :meth:`resampling`

    # --- image side ---------------------------------------------------------------------------
    def _patch_embed(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [B, 3, H, W] -> patch embeddings [B, C, H // ph, W // pw] (no position)."""
        raise NotImplementedError

    def _class_token(self) -> torch.Tensor:
        """The class embedding [C]."""
        raise NotImplementedError

    def _pos_embed(self) -> tuple[torch.Tensor, tuple[int, int]]:
        """Learned position embeddings [prefix + gh * gw, C] and their grid ``(gh, gw)``."""
        raise NotImplementedError

    def _pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [B, 3, H, W] (normalized) -> tokens [B, 1 + h * w, C] entering block 0.

        ``h, w = H // ph, W // pw``; the position embeddings are resampled to that grid the
        ``pos_embed_mode`` way.
        """
        x = self._patch_embed(images)  # (B, C, h, w)
        B, C, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        cls = self._class_token().to(x.dtype).expand(B, 1, C)
        pos, grid = self._pos_embed()
        pos = resample_pos_embed(pos, old_grid=grid, new_grid=(h, w), num_prefix_tokens=1, mode=self.pos_embed_mode)
        x = torch.cat([cls, x], dim=1) + pos.to(x.dtype)
        return self._pre_norm(x)

    @contextlib.contextmanager
    def resampling(self, mode: str):
        """Within the ``with`` block, :meth:`embed` resamples position embeddings the ``mode`` way (one of
        :data:`POS_EMBED_MODES`); the previous mode is restored on exit."""
        check_pos_embed_mode(mode)
        previous = self.pos_embed_mode
        self.pos_embed_mode = mode
        try:
            yield self
        finally:
            self.pos_embed_mode = previous

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and projection: tokens [B, N, C] -> [B, N, embed_dim]."""
        raise NotImplementedError

    # --- text side ----------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> tuple[list[int], dict]:
        """Tokenize ``texts``; returns the untruncated token count of each text and the model
        inputs (already truncated to ``context_length``)."""
        raise NotImplementedError

    def _encode_tokens(self, inputs: dict) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``texts`` (P strings) -> text embeddings [P, embed_dim], not normalized.

        Prompts longer than the text encoder's context are truncated with a warning.
        """
        texts = list(texts)
        lengths, inputs = self._tokenize(texts)
        too_long = [t for t, n in zip(texts, lengths) if n > self.context_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} prompt(s) exceed the text encoder's context of {self.context_length} "
                f"tokens and were truncated, e.g. {too_long[0][:60]!r}", stacklevel=3)
        return self._encode_tokens(inputs)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def check_pos_embed_mode(mode: str) -> str:
    if mode not in POS_EMBED_MODES:
        raise ValueError(f"pos_embed must be one of {', '.join(POS_EMBED_MODES)}, got {mode!r}")
    return mode


def resample_pos_embed(pos: torch.Tensor, *, old_grid: tuple[int, int], new_grid: tuple[int, int],
                       num_prefix_tokens: int = 1, mode: str = "bicubic-aa") -> torch.Tensor:
    """Resample position embeddings ``pos`` [prefix + gh * gw, C] to ``new_grid`` ``(h, w)``; the prefix
    tokens' embeddings are kept. Returns [prefix + h * w, C]; the trained grid is returned unchanged.

    ``mode`` (see :data:`POS_EMBED_MODES`), with ``align_corners=False`` throughout:

    - ``"bicubic-aa"``: bicubic, antialiased, to the target size (gem-torch's convention).
    - ``"bicubic-scale"``: bicubic without antialiasing, called with ``scale_factor = ((h + 0.1) / gh,
      (w + 0.1) / gw)``, so the output size is ``floor(g0 * (g + 0.1) / g0) = g`` while the sampling
      positions use that scale factor, not ``g / g0`` (``interpolate_pos_encoding`` of SCLIP, ClearCLIP
      and NACLIP; each axis with its own factor, so non-square grids are handled per axis).
    - ``"bicubic"``: bicubic without antialiasing, to the target size (``resize_pos_embed`` of MaskCLIP's
      ViT: ``F.interpolate(size=(h, w), mode="bicubic", align_corners=False)``, class token kept).
    - ``"bilinear"``: bilinear without antialiasing, to the target size (CLIP Surgery).
    """
    mode = check_pos_embed_mode(mode)
    if tuple(old_grid) == tuple(new_grid):
        return pos
    prefix, grid = pos[:num_prefix_tokens], pos[num_prefix_tokens:]
    if grid.shape[0] != old_grid[0] * old_grid[1]:
        raise ValueError(f"position embeddings hold {grid.shape[0]} patches, expected a "
                         f"{old_grid[0]}x{old_grid[1]} grid")
    C = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.float().reshape(1, *old_grid, C).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    if mode == "bicubic-scale":
        scale = tuple((n + 0.1) / o for n, o in zip(new_grid, old_grid))
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
        assert tuple(grid.shape[-2:]) == tuple(new_grid), "scale factor (g + 0.1) / g0 must give g rows"
    else:
        grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear" if mode == "bilinear" else "bicubic",
                             antialias=mode == "bicubic-aa", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(-1, C).to(dtype)  # (h*w, C)
    return torch.cat([prefix, grid], dim=0)


def square_grid(num_patches: int) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"cannot infer a square grid from {num_patches} position embeddings")
    return side, side


def lazy_import(module: str, extra: str, pip_name: str) -> Callable:
    """Import an optional backend, or fail with the exact install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"the {extra} backend needs `{module}`: pip install 'gemseg[{extra}]' (or pip install {pip_name})"
        ) from e
