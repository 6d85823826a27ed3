"""SAM's image encoder as Trident reads it: the neck features, and the attention probabilities and values of
its last (global) block, through Hugging Face ``transformers``' ``SamModel`` (the same weights as the
official ``sam_vit_{b,l,h}`` checkpoints, with the prompt encoder and mask decoder alongside).

The official Trident code (YuHengsss/Trident, ``segment_anything/modeling/image_encoder.py``) patches SAM's
blocks to keep the last block's softmax attention ``[B * heads, N, N]`` (relative positions included) and
its values ``[B, heads, h, w, d]``. Here the last block is recomputed from the layer's public modules
(``layer_norm1``, ``attn.qkv``, ``attn.get_decomposed_rel_pos``, ``attn.proj``, ``layer_norm2``, ``mlp``)
instead; ``transformers`` itself is never modified. ``gemseg.backbones.vfm``'s ``sam-b16`` (timm) has the
same encoder but no prompt decoder, which Trident's refinement needs from the same model.

This module is also gemseg's one registry of SAM / SAM 2 / 2.1 checkpoints (:data:`SAM_MODELS`) and its one
loader of them (:func:`load_sam_model`): Trident's encoder, the ``"sam-prompts"`` refiner and the mask
generators of :mod:`gemseg.masks` all get their ``transformers`` model from it, so that one checkpoint is
read once however many of them use it.
"""
from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn



@dataclass(frozen=True)
class SamEntry:
    """A known SAM-family checkpoint: short name, Hugging Face id, family."""

    name: str
    hub_id: str
    family: str  # "sam" (SamModel) or "sam2" (Sam2Model, SAM 2 and 2.1)


SAM_MODELS: dict[str, SamEntry] = {e.name: e for e in (
    SamEntry("sam-vit-b", "facebook/sam-vit-base", "sam"),  # Trident's default (configs/base_config.py:16)
    SamEntry("sam-vit-l", "facebook/sam-vit-large", "sam"),
    SamEntry("sam-vit-h", "facebook/sam-vit-huge", "sam"),
    SamEntry("sam2-hiera-t", "facebook/sam2-hiera-tiny", "sam2"),
    SamEntry("sam2-hiera-s", "facebook/sam2-hiera-small", "sam2"),
    SamEntry("sam2-hiera-b+", "facebook/sam2-hiera-base-plus", "sam2"),
    SamEntry("sam2-hiera-l", "facebook/sam2-hiera-large", "sam2"),  # CorrCLIP's sam2_hiera_large
    SamEntry("sam2.1-hiera-t", "facebook/sam2.1-hiera-tiny", "sam2"),
    SamEntry("sam2.1-hiera-s", "facebook/sam2.1-hiera-small", "sam2"),
    SamEntry("sam2.1-hiera-b+", "facebook/sam2.1-hiera-base-plus", "sam2"),
    SamEntry("sam2.1-hiera-l", "facebook/sam2.1-hiera-large", "sam2"),
)}
SAM_ALIASES = {"sam-b": "sam-vit-b", "sam-l": "sam-vit-l", "sam-h": "sam-vit-h"}  # the names Trident's encoder had first
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


def list_sam_models() -> list[SamEntry]:
    """The SAM-family checkpoints known by short name (any ``transformers`` SAM / SAM 2 id or folder works;
    the aliases of :data:`SAM_ALIASES` are not listed)."""
    return list(SAM_MODELS.values())


def resolve_sam(name: str) -> tuple[str, str | None]:
    """A short name (:data:`SAM_MODELS`, or an alias of :data:`SAM_ALIASES`), a Hugging Face id or a local
    folder -> ``(id or folder, family)`` (family ``None``: read from the checkpoint's config)."""
    if not isinstance(name, str) or not name:
        raise TypeError("a SAM name must be a non-empty string, e.g. 'sam-vit-b' or 'sam2-hiera-t'")
    entry = SAM_MODELS.get(SAM_ALIASES.get(name, name))
    if entry is not None:
        return entry.hub_id, entry.family
    if os.path.isdir(name) and not os.path.isfile(os.path.join(name, "config.json")):
        raise ValueError(f"{name} has no config.json; save the model with save_pretrained()")
    return name, None


class _Loaded:
    """The checkpoints read so far that something still holds (weakly: a model nobody uses is freed)."""

    def __init__(self):
        self.models: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.loads = self.hits = 0
        self.lock = threading.Lock()


_LOADED = _Loaded()


def sam_cache_info() -> dict:
    """How :func:`load_sam_model` has answered so far: ``{"loads": checkpoints read, "hits": loads answered
    with a model already in memory, "alive": models in memory}``."""
    return {"loads": _LOADED.loads, "hits": _LOADED.hits, "alive": len(_LOADED.models)}


def load_sam_model(name: str, *, weights: str = "pretrained", device: str | torch.device = "cpu",
                   cache_dir: str | None = None, config=None, dynamic_multimask: bool | None = None) -> nn.Module:
    """The ``transformers`` ``SamModel`` / ``Sam2Model`` of ``name`` (:func:`resolve_sam`), in eval mode on
    ``device``. A checkpoint is read once: while any caller holds its model, loading the same name (or
    alias, hub id, folder) with the same ``device``, ``cache_dir`` and ``dynamic_multimask`` returns that
    very model (:func:`sam_cache_info` counts the reads).

    Args:
        weights: ``"pretrained"`` (the hub cache, downloaded when online, or the folder) or ``"random"``
            (built from ``config``, a ``SamConfig`` or ``Sam2Config``, default ``SamConfig()``; never shared).
        dynamic_multimask: overrides SAM 2's ``mask_decoder_config.dynamic_multimask_via_stability`` (the
            official builder sets it only with ``apply_postprocessing=True``; CorrCLIP builds with
            ``False``); SAM has no such setting, so it is ignored there.
    """
    try:
        import transformers
    except ImportError as e:
        raise ImportError("SAM and SAM 2 need transformers: pip install 'gemseg[hf]'") from e
    source, _ = resolve_sam(name)
    if weights == "random":
        config = config if config is not None else transformers.SamConfig()
        cls = transformers.SamModel if config.model_type == "sam" else transformers.Sam2Model
        return cls(config).to(device).eval()
    if weights != "pretrained":
        raise ValueError(f"SAM weights must be 'pretrained' or 'random', got {weights!r}")
    where = (os.path.abspath(source) if os.path.isdir(source) else source, str(torch.device(device)), cache_dir)
    with _LOADED.lock:
        plain = _LOADED.models.get((*where, None))  # SAM (no dynamic_multimask to override) is kept under None
        model = plain if plain is not None and plain.config.model_type == "sam" else \
            _LOADED.models.get((*where, dynamic_multimask))
        if model is not None:
            _LOADED.hits += 1
            return model
        model = _read(name, source, cache_dir, dynamic_multimask).to(device).eval()
        _LOADED.models[(*where, None if model.config.model_type == "sam" else dynamic_multimask)] = model
        _LOADED.loads += 1
        return model


def _read(name: str, source: str, cache_dir: str | None, dynamic_multimask: bool | None) -> nn.Module:
    import transformers

    from .weights import weights_unavailable

    try:
        config = transformers.AutoConfig.from_pretrained(source, cache_dir=cache_dir)
        if config.model_type == "sam":  # transformers' default attention: SamEncoder recomputes the last block itself
            return transformers.SamModel.from_pretrained(source, config=config, cache_dir=cache_dir)
        if dynamic_multimask is not None and hasattr(config, "mask_decoder_config"):
            config.mask_decoder_config.dynamic_multimask_via_stability = bool(dynamic_multimask)
        return transformers.Sam2Model.from_pretrained(source, config=config, cache_dir=cache_dir)
    except (OSError, ValueError) as e:  # not cached offline / not on the hub / unreadable folder
        raise weights_unavailable(f"SAM model {name} ({source})", "hf", e) from e


def create_sam(name: str = "sam-vit-b", *, weights: str = "pretrained", device: str | torch.device = "cpu",
               cache_dir: str | None = None, config=None) -> SamEncoder:
    """A :class:`SamEncoder` on the model :func:`load_sam_model` gives for ``name`` (a SAM, not SAM 2:
    ``"sam-vit-b"``, ``"sam-vit-l"``, ``"sam-vit-h"``, their aliases ``"sam-b"``, ``"sam-l"``, ``"sam-h"``,
    a hub id or a folder saved with ``SamModel.save_pretrained``); ``weights="random"`` with ``config`` (a
    ``transformers.SamConfig``) for tiny test models."""
    model = load_sam_model(name, weights=weights, device=device, cache_dir=cache_dir, config=config)
    if model.config.model_type != "sam":
        raise ValueError(f"{name} is a SAM 2 checkpoint; Trident's encoder and the 'sam-prompts' refiner need a "
                         "SAM one (sam-vit-b, sam-vit-l, sam-vit-h)")
    return SamEncoder(model, name=name, pretrained=None if weights == "random" else resolve_sam(name)[0])
