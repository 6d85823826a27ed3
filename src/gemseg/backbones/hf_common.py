"""What the Hugging Face transformers backends share: the lazily imported ``transformers``, config
loading, the ``q_proj``/``k_proj``/``v_proj`` block adapter, structural checks, the common
:class:`HFBackbone` base, the position-grid resize of the transformers models and the reading of a
checkpoint's ``preprocessor_config.json``. ``hf_clip``, ``hf_blip`` and ``hf_siglip`` import from here
and never from each other.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..files import read_json
from .base import Backbone, Preprocess, ViTBlock, lazy_import
from .weights import weights_unavailable


def import_transformers():
    """The ``transformers`` module, or an ImportError with the pip command."""
    return lazy_import("transformers", "hf", "transformers")


def load_hf_config(name: str, cache_dir: str | None):
    """A hub id's or folder's ``AutoConfig``; missing offline -> the one-line weights error."""
    try:
        return import_transformers().AutoConfig.from_pretrained(name, cache_dir=cache_dir)
    except (OSError, ValueError) as e:
        raise weights_unavailable(name, "hf", e) from e


class HFQKVBlock(ViTBlock):
    """A transformers encoder layer with ``self_attn.{q,k,v,out}_proj`` and ``layer_norm1/2`` (CLIP, SigLIP)."""

    def __init__(self, layer: nn.Module):
        attn = layer.self_attn
        super().__init__(ln_1=layer.layer_norm1, ln_2=layer.layer_norm2, mlp=layer.mlp,
                         out_proj=attn.out_proj, num_heads=attn.num_heads)
        self.attn = attn

    def project_qkv(self, h):
        a = self.attn
        return a.q_proj(h), a.k_proj(h), a.v_proj(h)


def check_qkv_layers(name: str, layers) -> None:
    """Every layer must have a ``self_attn`` with separate q/k/v projections and an out projection."""
    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
            raise ValueError(f"{name}: layer {i} has no standard q/k/v attention")


def check_embeddings(name: str, emb: nn.Module, attrs: tuple[str, ...], kind: str) -> None:
    """The vision embeddings module must have each of ``attrs``, else ``name`` is not a ``kind``."""
    for attr in attrs:
        if not hasattr(emb, attr):
            raise ValueError(f"{name}: vision embeddings have no {attr}; not a {kind}")


class HFBackbone(Backbone):
    """What the transformers backbones share: the model, its tokenizer, patch size and width read from
    ``model.config.vision_config``, and a conv patch embedding."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, pretrained: str | None):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name, self.pretrained = name, pretrained
        vcfg = model.config.vision_config
        p = vcfg.patch_size
        self.patch_size = (p, p) if isinstance(p, int) else tuple(p)
        self.width = vcfg.hidden_size
        s = getattr(vcfg, "image_size", None)  # (H, W) the weights were trained at; None: flexible (NaFlex)
        self.native_size = (s, s) if isinstance(s, int) else tuple(s) if s is not None else None

    def _patch_embed(self, images):
        emb = self.model.vision_model.embeddings.patch_embedding
        return emb(images.to(emb.weight.dtype))


def resize_pos_grid(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], *,
                    mode: str = "bicubic", antialias: bool = False) -> torch.Tensor:
    """Position embeddings of a patch grid [gh * gw, C] -> [h * w, C], resized the way the Hugging Face
    models do it (``F.interpolate``, ``align_corners=False``, computed in float32); unchanged on the
    native grid."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    C = pos.shape[-1]
    grid = pos.float().reshape(1, *old_grid, C).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=False, antialias=antialias)
    return grid.reshape(C, -1).transpose(0, 1).to(pos.dtype)  # (h*w, C)


def read_preprocess(folder_or_id: str, image_size: int) -> Preprocess:
    """Mean/std from ``preprocessor_config.json`` when it is in the folder or the hub cache, else
    OpenAI's statistics; ``image_size`` is the model's native side."""
    path = os.path.join(folder_or_id, "preprocessor_config.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(folder_or_id, "preprocessor_config.json")
            path = cached if isinstance(cached, str) else None
        except Exception:  # no hub client or malformed id: keep the CLIP defaults
            path = None
    defaults = Preprocess(image_size=(image_size, image_size))
    if not path:
        return defaults
    cfg = read_json(path, "preprocessor config")
    if not isinstance(cfg, dict):
        raise ValueError(f"preprocessor config {path} is not a JSON object")
    return Preprocess(mean=tuple(cfg.get("image_mean", defaults.mean)), std=tuple(cfg.get("image_std", defaults.std)),
                      image_size=defaults.image_size)


__all__ = ["import_transformers", "load_hf_config", "HFQKVBlock", "check_qkv_layers", "check_embeddings",
           "HFBackbone", "resize_pos_grid", "read_preprocess"]
