"""SAM's image encoder as Trident reads it: the neck features, and the attention probabilities and values of
its last (global) block, through Hugging Face ``transformers``' ``SamModel`` (the same weights as the
official ``sam_vit_{b,l,h}`` checkpoints, with the prompt encoder and mask decoder alongside).

The official Trident code (YuHengsss/Trident, ``segment_anything/modeling/image_encoder.py``) patches SAM's
blocks to keep the last block's softmax attention ``[B * heads, N, N]`` (relative positions included) and
its values ``[B, heads, h, w, d]``. Here the last block is recomputed from the layer's public modules
(``layer_norm1``, ``attn.qkv``, ``attn.get_decomposed_rel_pos``, ``attn.proj``, ``layer_norm2``, ``mlp``)
instead; ``transformers`` itself is never modified. ``gemseg.backbones.vfm``'s ``sam-b16`` (timm) has the
same encoder but no prompt decoder, which Trident's refinement needs from the same model.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

SAM_MODELS = {"sam-b": "facebook/sam-vit-base", "sam-l": "facebook/sam-vit-large", "sam-h": "facebook/sam-vit-huge"}
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # segment_anything/modeling/sam.py Sam.pixel_mean, RGB in [0, 255]
SAM_PIXEL_STD = (58.395, 57.12, 57.375)  # segment_anything/modeling/sam.py Sam.pixel_std


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(h, w)`` with the longer side scaled to ``long_side`` (SAM's ``ResizeLongestSide.get_preprocess_shape``:
    ``int(side * scale + 0.5)``)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class SamEncoder(nn.Module):
    """A Hugging Face ``SamModel`` seen as Trident uses it.

    Attributes:
        name: the name it was created from; ``pretrained``: where the weights came from (``None``: random).
        image_size: SAM's square input (1024 for the released models); ``patch_size``: 16 for them.
        heads: attention heads of the image encoder.
        model: the ``transformers`` ``SamModel`` (read through its public modules, never modified).
    """

    def __init__(self, model: nn.Module, *, name: str, pretrained: str | None):
        super().__init__()
        self.model = model.eval()
        self.name, self.pretrained = name, pretrained
        vc = model.config.vision_config
        self.image_size, self.patch_size, self.heads = int(vc.image_size), int(vc.patch_size), int(vc.num_attention_heads)
        if vc.window_size and (vc.num_hidden_layers - 1) not in tuple(vc.global_attn_indexes):
            raise ValueError(f"{name}: the last block of SAM's encoder must be a global-attention block")

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """Pixels ``(h, w)`` an image of ``height`` x ``width`` covers in SAM's padded square input."""
        return preprocess_shape(height, width, self.image_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """SAM's valid feature grid ``(h // 16, w // 16)`` for an image of ``height`` x ``width``."""
        h, w = self.input_shape(height, width)
        return h // self.patch_size, w // self.patch_size

    def prepare(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] [B, 3, H, W] -> SAM's input [B, 3, S, S]: longer side resized to ``S`` (bicubic,
        antialiased, as the PIL resize of ``ResizeLongestSide.apply_image``), scaled to [0, 255], normalized
        with SAM's mean and std, zero-padded right and bottom."""
        h, w = self.input_shape(*rgb.shape[-2:])
        x = F.interpolate(rgb.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0, 1) * 255.0
        mean = torch.tensor(SAM_PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAM's input [B, 3, S, S] -> ``(features [B, 256, S/16, S/16], attn [B, heads, n, n], v [B, heads,
        S/16, S/16, d])``: the neck output, and the last block's softmax attention (relative positions
        added) and values, ``n = (S/16)²``."""
        enc = self.model.vision_encoder
        x = enc.patch_embed(pixels)  # (B, g, g, C)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for layer in enc.layers[:-1]:
            x = layer(x)
            x = x[0] if isinstance(x, tuple) else x
        last = enc.layers[-1]
        attn_mod = last.attn
        B, g1, g2, C = x.shape
        h = last.layer_norm1(x)
        qkv = attn_mod.qkv(h).reshape(B, g1 * g2, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, n, d)
        q, k, v = qkv.reshape(3, B * self.heads, g1 * g2, -1).unbind(0)  # (B*heads, n, d)
        logits = (q * attn_mod.scale) @ k.transpose(-2, -1)  # (B*heads, n, n)
        if attn_mod.use_rel_pos:
            rel = attn_mod.get_decomposed_rel_pos(q, attn_mod.rel_pos_h, attn_mod.rel_pos_w, (g1, g2), (g1, g2))
            logits = logits + rel.reshape_as(logits)
        attn = logits.softmax(dim=-1)
        out = (attn @ v).reshape(B, self.heads, g1, g2, -1).permute(0, 2, 3, 1, 4).reshape(B, g1, g2, C)
        x = x + attn_mod.proj(out)
        x = x + last.mlp(last.layer_norm2(x))
        feats = enc.neck(x)  # (B, 256, g, g)
        return feats, attn.reshape(B, self.heads, g1 * g2, g1 * g2), v.reshape(B, self.heads, g1, g2, -1)


def create_sam(name: str = "sam-b", *, weights: str = "pretrained", device: str | torch.device = "cpu",
               cache_dir: str | None = None, config=None) -> SamEncoder:
    """Build a :class:`SamEncoder`.

    Args:
        name: ``"sam-b"``, ``"sam-l"``, ``"sam-h"`` (:data:`SAM_MODELS`), a hub id (``facebook/sam-vit-base``)
            or a local folder saved with ``SamModel.save_pretrained``.
        weights: ``"pretrained"`` (the hub cache, downloaded when online) or ``"random"`` (with ``config``,
            a ``transformers.SamConfig``, for tiny test models).
    """
    try:
        from transformers import SamConfig, SamModel
    except ImportError as e:
        raise ImportError("SAM needs transformers: `pip install transformers`") from e
    if not isinstance(name, str) or not name:
        raise TypeError("a SAM name must be a non-empty string, e.g. 'sam-b'")
    source = SAM_MODELS.get(name, name)
    if weights == "random":
        torch_config = config if config is not None else SamConfig()
        return SamEncoder(SamModel(torch_config), name=name, pretrained=None).to(device)
    if weights != "pretrained":
        raise ValueError(f"SAM weights must be 'pretrained' or 'random', got {weights!r}")
    try:
        model = SamModel.from_pretrained(source, cache_dir=cache_dir, attn_implementation="eager")
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = " (offline mode is on: HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        from ..errors import WeightsUnavailableError

        raise WeightsUnavailableError(
            f"cannot load SAM {name} ({source}){offline}: {first[:200]}. Put the Hugging Face weights in the hub "
            "cache (HF_HOME) or pass a folder saved with SamModel.save_pretrained()") from e
    return SamEncoder(model, name=name, pretrained=source).to(device)
