"""Backbone registry: which models exist, and one factory that builds any of them.

Backends are imported lazily; a missing one says what to ``pip install``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .base import Backbone, Preprocess, ViTBlock, resample_pos_embed

BACKENDS = ("open_clip", "hf")

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
    return entries


def resolve_backend(name: str, backend: str = "auto") -> str:
    """Which backend loads ``name``: a folder with ``config.json`` or an ``org/name`` id -> ``hf``;
    open_clip names (``ViT-B-16``, ``ViT-B/16``, ``hf-hub:...``) and ``*.json`` configs -> ``open_clip``."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend must be auto, {' or '.join(BACKENDS)}, got {backend!r}")
        return backend
    if name in _USER_MODELS:
        return "user"
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "config.json")):
            return "hf"
        raise ValueError(f"{name} is a folder without config.json; give a Hugging Face model folder "
                         "saved with save_pretrained(), or an open_clip model name with --checkpoint")
    if name.endswith(".json") or name.startswith("hf-hub:"):
        return "open_clip"
    if "/" in name and not name.split("/")[0].lower().startswith(("vit", "rn", "convnext", "eva")):
        return "hf"
    return "open_clip"


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
        raise ValueError(f"{name}: the hf backend takes the weights from the hub id or folder itself; "
                         "drop pretrained/checkpoint")
    from .hf_clip import create_hf_clip

    return create_hf_clip(name, device=device, cache_dir=cache_dir)


__all__ = ["Backbone", "ViTBlock", "Preprocess", "ModelEntry", "BACKENDS", "HF_MODELS", "list_models",
           "register_model", "resolve_backend", "create_backbone", "resample_pos_embed"]
