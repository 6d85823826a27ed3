"""Backbone registry: which models exist, and one factory that builds any of them.

Backends are imported lazily; a missing one says what to ``pip install``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

from .base import Backbone, Preprocess, ViTBlock, resample_pos_embed

BACKENDS = ("open_clip", "hf", "hf-blip", "hf-siglip")

# Hugging Face CLIPModel checkpoints known to work (any other CLIPModel id or folder works too).
HF_MODELS = (
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-base-patch16",
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-large-patch14-336",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "facebook/metaclip-b32-400m",
    "facebook/metaclip-b16-400m",
    "facebook/metaclip-l14-400m",
    "facebook/metaclip-b16-fullcc2.5b",
    "facebook/metaclip-l14-fullcc2.5b",
    "facebook/metaclip-h14-fullcc2.5b",
)

# BLIP image-text retrieval checkpoints (hf-blip) and SigLIP / SigLIP 2 checkpoints (hf-siglip)
HF_BLIP_MODELS = (
    "Salesforce/blip-itm-base-coco",
    "Salesforce/blip-itm-large-coco",
    "Salesforce/blip-itm-base-flickr",
    "Salesforce/blip-itm-large-flickr",
)
HF_SIGLIP_MODELS = (
    "google/siglip-base-patch16-224",
    "google/siglip-base-patch16-384",
    "google/siglip-large-patch16-384",
    "google/siglip-so400m-patch14-384",
    "google/siglip2-base-patch16-224",
    "google/siglip2-so400m-patch14-384",
    "google/siglip2-base-patch16-naflex",
)

_USER_MODELS: dict[str, Callable[..., Backbone]] = {}


@dataclass(frozen=True)
class ModelEntry:
    """One loadable model: ``backend``, ``name`` and (open_clip) ``pretrained`` tag."""

    backend: str
    name: str
    pretrained: str | None = None


def register_model(name: str, factory: Callable[..., Backbone]) -> None:
    """Make ``name`` loadable by :func:`gemseg.create_model`. ``factory`` is called with the keywords
    ``pretrained``, ``checkpoint``, ``device`` and ``cache_dir`` and returns a :class:`Backbone`."""
    if not callable(factory):
        raise TypeError("factory must be callable")
    _USER_MODELS[name] = factory


def _is_class_token_vit(cfg: dict) -> bool:
    vision = cfg.get("vision_cfg", {})
    custom = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn", "scale_fc", "scale_attn_inner")
    return (isinstance(vision.get("layers"), int) and "timm_model_name" not in vision
            and not vision.get("attentional_pool") and not vision.get("input_patchnorm")
            and not any(vision.get(k) for k in custom))


def list_models(backend: str | None = None) -> list[ModelEntry]:
    """Models GEM can run: open_clip class-token ViTs with each pretrained tag (needs
    ``open_clip_torch``), the known Hugging Face CLIP ids, and models added with :func:`register_model`."""
    if backend not in (None, *BACKENDS, "user"):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    entries = [ModelEntry("user", name) for name in _USER_MODELS] if backend in (None, "user") else []
    if backend in (None, "open_clip"):
        try:
            import open_clip
        except ImportError:
            open_clip = None
        if open_clip is not None:
            vits = {m for m in open_clip.list_models() if _is_class_token_vit(open_clip.get_model_config(m) or {})}
            entries += [ModelEntry("open_clip", m, t) for m, t in open_clip.list_pretrained() if m in vits]
    if backend in (None, "hf"):
        entries += [ModelEntry("hf", m) for m in HF_MODELS]
    if backend in (None, "hf-blip"):
        entries += [ModelEntry("hf-blip", m) for m in HF_BLIP_MODELS]
    if backend in (None, "hf-siglip"):
        entries += [ModelEntry("hf-siglip", m) for m in HF_SIGLIP_MODELS]
    return entries


def resolve_backend(name: str, backend: str = "auto") -> str:
    """Which backend loads ``name``: a folder with ``config.json`` or an ``org/name`` id -> ``hf``
    (``hf-blip``/``hf-siglip`` when the folder's ``model_type`` or the id names BLIP/SigLIP); open_clip
    names (``ViT-B-16``, ``ViT-B/16``, ``hf-hub:...``) and ``*.json`` configs -> ``open_clip``."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend must be auto, {' or '.join(BACKENDS)}, got {backend!r}")
        return backend
    if name in _USER_MODELS:
        return "user"
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "config.json")):
            return _hf_family(_folder_model_type(name))
        raise ValueError(f"{name} is a folder without config.json; give a Hugging Face model folder "
                         "saved with save_pretrained(), or an open_clip model name with --checkpoint")
    if name.endswith(".json") or name.startswith("hf-hub:"):
        return "open_clip"
    if "/" in name and not name.split("/")[0].lower().startswith(("vit", "rn", "convnext", "eva")):
        return _hf_family(name.split("/")[-1].lower())
    return "open_clip"


def _folder_model_type(folder: str) -> str:
    with open(os.path.join(folder, "config.json")) as f:
        return str(json.load(f).get("model_type", ""))


def _hf_family(text: str) -> str:
    """``hf-siglip`` for SigLIP/SigLIP 2, ``hf-blip`` for BLIP, else ``hf`` (CLIP), from a model type or id."""
    if "siglip" in text:
        return "hf-siglip"
    if text.startswith("blip") or "-blip" in text or "_blip" in text:
        return "hf-blip"
    return "hf"


def create_backbone(name: str, *, backend: str = "auto", pretrained: str | None = None,
                    checkpoint: str | None = None, device="cpu", cache_dir: str | None = None) -> Backbone:
    """Build the backbone ``name`` (see :func:`gemseg.create_model`)."""
    which = resolve_backend(name, backend)
    if which == "user":
        return _USER_MODELS[name](pretrained=pretrained, checkpoint=checkpoint, device=device, cache_dir=cache_dir)
    if which == "open_clip":
        from .open_clip import create_open_clip

        return create_open_clip(name, pretrained=pretrained, checkpoint=checkpoint, device=device,
                                cache_dir=cache_dir)
    if pretrained or checkpoint:
        raise ValueError(f"{name}: the {which} backend takes the weights from the hub id or folder itself; "
                         "drop pretrained/checkpoint")
    if which == "hf-blip":
        from .hf_blip import create_hf_blip

        return create_hf_blip(name, device=device, cache_dir=cache_dir)
    if which == "hf-siglip":
        from .hf_siglip import create_hf_siglip

        return create_hf_siglip(name, device=device, cache_dir=cache_dir)
    from .hf_clip import create_hf_clip

    return create_hf_clip(name, device=device, cache_dir=cache_dir)


__all__ = ["Backbone", "ViTBlock", "Preprocess", "ModelEntry", "BACKENDS", "HF_MODELS", "HF_BLIP_MODELS",
           "HF_SIGLIP_MODELS", "list_models", "register_model", "resolve_backend", "create_backbone",
           "resample_pos_embed"]
