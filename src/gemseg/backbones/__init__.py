"""Backbone registry: which models exist, and one factory that builds any of them.

Backends are data (:data:`BACKENDS`): each names its factory as ``"module:function"``, imported on first
use, and the optional packages it needs; a missing one says what to ``pip install``. A new backend is
one entry (or :func:`register_backend`).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

from ..files import read_json
from .base import Backbone, Preprocess, ViTBlock, lazy_import, resample_pos_embed

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


@dataclass(frozen=True)
class BackendSpec:
    """One backend of :func:`create_backbone`.

    The factory is called as ``factory(name, *, device, cache_dir)``, plus ``pretrained`` and
    ``checkpoint`` when ``weights_args``, and returns a :class:`Backbone`.
    """

    factory: str  # "module:function", imported on first use
    requires: tuple[tuple[str, str], ...]  # (module, pip package) pairs the factory needs
    extra: str  # the gemseg[extra] that installs them
    weights_args: bool = False  # takes pretrained=/checkpoint=; False: the weights come with the id or folder
    default_pretrained: str | None = None  # weights used when none are given (see default_pretrained)
    models: tuple[str, ...] | str = ()  # known names, or "module:function" giving (name, tag) pairs


BACKENDS: dict[str, BackendSpec] = {
    "open_clip": BackendSpec("gemseg.backbones.open_clip:create_open_clip", (("open_clip", "open_clip_torch"),),
                             "openclip", weights_args=True, default_pretrained="openai",
                             models="gemseg.backbones.open_clip:list_open_clip_models"),
    "hf": BackendSpec("gemseg.backbones.hf_clip:create_hf_clip", (("transformers", "transformers"),), "hf",
                      models=HF_MODELS),
    "hf-blip": BackendSpec("gemseg.backbones.hf_blip:create_hf_blip", (("transformers", "transformers"),), "hf",
                           models=HF_BLIP_MODELS),
    "hf-siglip": BackendSpec("gemseg.backbones.hf_siglip:create_hf_siglip", (("transformers", "transformers"),),
                             "hf", models=HF_SIGLIP_MODELS),
}


def register_backend(kind: str, spec: BackendSpec, *, overwrite: bool = False) -> None:
    """Add the backend ``kind`` (selectable with ``backend=kind``; ``"auto"`` does not pick it)."""
    if not isinstance(kind, str) or not kind or kind in ("auto", "user"):
        raise ValueError(f"a backend name must be a non-empty string other than auto/user, got {kind!r}")
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"spec must be a BackendSpec, got {type(spec).__name__}")
    if kind in BACKENDS and not overwrite:
        raise ValueError(f"backend {kind!r} is already registered; pass overwrite=True to replace it")
    BACKENDS[kind] = spec


def _load(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _factory(kind: str) -> Callable[..., Backbone]:
    """The backend's factory, after its optional packages (ImportError with the pip command if missing)."""
    spec = BACKENDS[kind]
    for module, pip_name in spec.requires:
        lazy_import(module, spec.extra, pip_name)
    return _load(spec.factory)


def _choices() -> str:
    return ", ".join(BACKENDS)


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


def list_models(backend: str | None = None) -> list[ModelEntry]:
    """Models GEM can run: each backend's known models (open_clip: every class-token ViT with each
    pretrained tag, when ``open_clip_torch`` is installed), and models added with :func:`register_model`."""
    if backend not in (None, *BACKENDS, "user"):
        raise ValueError(f"backend must be one of {_choices()} or user, got {backend!r}")
    entries = [ModelEntry("user", name) for name in _USER_MODELS] if backend in (None, "user") else []
    for kind, spec in BACKENDS.items():
        if backend not in (None, kind):
            continue
        if isinstance(spec.models, str):
            entries += [ModelEntry(kind, m, t) for m, t in _load(spec.models)()]
        else:
            entries += [ModelEntry(kind, m) for m in spec.models]
    return entries


def resolve_backend(name: str, backend: str = "auto") -> str:
    """Which backend loads ``name``: a folder with ``config.json`` or an ``org/name`` id -> ``hf``
    (``hf-blip``/``hf-siglip`` when the folder's ``model_type`` or the id names BLIP/SigLIP); open_clip
    names (``ViT-B-16``, ``ViT-B/16``, ``hf-hub:...``) and ``*.json`` configs -> ``open_clip``."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from auto, {_choices()}")
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
    cfg = read_json(os.path.join(folder, "config.json"), "model config")
    if not isinstance(cfg, dict):
        raise ValueError(f"model config {folder}/config.json is not a JSON object")
    return str(cfg.get("model_type", ""))


def _hf_family(text: str) -> str:
    """``hf-siglip`` for SigLIP/SigLIP 2, ``hf-blip`` for BLIP, else ``hf`` (CLIP), from a model type or id."""
    if "siglip" in text:
        return "hf-siglip"
    if text.startswith("blip") or "-blip" in text or "_blip" in text:
        return "hf-blip"
    return "hf"


def default_pretrained(name: str, backend: str = "auto") -> str | None:
    """The weights gemseg picks for ``name`` when the caller names none, as the CLI does: open_clip model
    names get the ``openai`` tag (the GEM paper's weights); config ``.json`` files (they need a checkpoint),
    ``hf-hub:`` repos and Hugging Face ids or folders (they carry their weights) and registered models get
    ``None``. :func:`gemseg.create_model` itself never picks weights: ``pretrained=None`` there means random
    weights, with a warning."""
    which = resolve_backend(name, backend)
    if which == "user" or name.endswith(".json") or name.startswith("hf-hub:"):
        return None
    return BACKENDS[which].default_pretrained


def create_backbone(name: str, *, backend: str = "auto", pretrained: str | None = None,
                    checkpoint: str | None = None, device="cpu", cache_dir: str | None = None) -> Backbone:
    """Build the backbone ``name`` (see :func:`gemseg.create_model`)."""
    which = resolve_backend(name, backend)
    if which == "user":
        return _USER_MODELS[name](pretrained=pretrained, checkpoint=checkpoint, device=device, cache_dir=cache_dir)
    spec = BACKENDS[which]
    if spec.weights_args:
        return _factory(which)(name, pretrained=pretrained, checkpoint=checkpoint, device=device,
                               cache_dir=cache_dir)
    if pretrained or checkpoint:
        raise ValueError(f"{name}: the {which} backend takes the weights from the hub id or folder itself; "
                         "drop pretrained/checkpoint")
    return _factory(which)(name, device=device, cache_dir=cache_dir)


__all__ = ["Backbone", "ViTBlock", "Preprocess", "ModelEntry", "BackendSpec", "BACKENDS", "HF_MODELS",
           "HF_BLIP_MODELS", "HF_SIGLIP_MODELS", "list_models", "register_model", "register_backend",
           "resolve_backend", "default_pretrained", "create_backbone", "resample_pos_embed"]
