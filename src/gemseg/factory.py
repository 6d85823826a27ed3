"""``create_model``: the one entry point that builds a :class:`GEMModel`."""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from .backbones import create_backbone
from .config import GEMConfig
from .model import GEMModel


_GEM = GEMConfig()  # the GEM defaults, written once in GEMConfig


def create_model(model: str = "ViT-B-16", *, pretrained: str | None = None, checkpoint: str | None = None,
                 backend: str = "auto", device: str | torch.device = "cpu", precision: str = "fp32",
                 cache_dir: str | None = None, depth: int = _GEM.depth, iterations: int = _GEM.iterations,
                 temperature: float | None = _GEM.temperature, projections: Sequence[str] = _GEM.projections,
                 l2_normalize: bool = _GEM.l2_normalize, gem_mlp: bool = _GEM.gem_mlp,
                 method: str = "gem", pos_embed: str = "bicubic-aa", proxy=None,
                 proxy_weights: str = "pretrained", proxy_settings=None, method_settings=None, masks=None,
                 mask_settings=None, mask_cache: str | None = None, mask_weights: str = "pretrained") -> GEMModel:
    """Build a GEM model.

    Args:
        model: open_clip name (``"ViT-B-16"``, ``"ViT-B/16"``, ``"hf-hub:org/repo"``), path of an
            open_clip model config ``.json``, Hugging Face ``CLIPModel``/``BlipModel``/``SiglipModel``
            id or local folder, or a name added with :func:`gemseg.register_model`.
        pretrained: open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b88k"``, ...) or a
            checkpoint path. ``None`` with no ``checkpoint``: random weights (a warning says so); the
            weights the CLI picks when none are named are
            ``gemseg.backbones.default_pretrained(model, backend)``.
        checkpoint: local open_clip weights (``.pt``/``.bin`` loaded with ``weights_only=True``, or
            ``.safetensors``); names and shapes must match the model exactly.
        backend: ``"auto"`` (from the name or the folder's ``model_type``), ``"open_clip"``, ``"hf"``
            (CLIP), ``"hf-blip"`` or ``"hf-siglip"`` (see docs/methods.md for their dense projections).
        device: where the model runs.
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast (weights stay fp32).
        cache_dir: where hub downloads are cached (default: the libraries' own cache).
        depth, iterations, temperature, projections, l2_normalize, gem_mlp: GEM settings, see
            :class:`gemseg.GEMConfig`.
        method: the dense method: ``"gem"`` (default), ``"clip"``, ``"maskclip"``, ``"maskclip-vproj"``, ``"vv"``,
            ``"sclip"``, ``"clearclip"``, ``"naclip"``, ``"proxyclip"``, ``"sc-clip"``, ``"sfp"``, ``"cass"``, a base with a
            plug-in (``"naclip+resclip"``, also on ``sclip``, ``clearclip``, ``clip``, ``gem``, ``vv``) or one added with
            :func:`gemseg.register_method` (docs/methods.md).
        pos_embed: how position embeddings are resampled to other grids: ``"bicubic-aa"`` (default,
            gem-torch), ``"bicubic-scale"`` (SCLIP/ClearCLIP/NACLIP), ``"bicubic"`` (MaskCLIP) or ``"bilinear"``
            (CLIP Surgery); see
            :func:`gemseg.backbones.base.resample_pos_embed`.
        proxy: ``method="proxyclip"`` / ``"cass"`` / ``"corrclip"`` only: the vision foundation model, a name
            from ``gemseg models`` (``"dinov2-b14"``; default ``"dino-b8"``, the official defaults), a timm
            name or folder, or a :class:`~gemseg.backbones.vfm.VisionBackbone`.
        proxy_weights: its weights: ``"pretrained"`` (hub/cache), ``"random"`` or a checkpoint file.
        proxy_settings: :class:`gemseg.methods.ProxyCLIPConfig` / :class:`gemseg.methods.CASSConfig` /
            :class:`gemseg.methods.CorrCLIPConfig` (default: the official values).
        method_settings: the method's own settings, for methods that have them: a
            :class:`gemseg.methods.SCCLIPConfig` (``sc-clip``), :class:`~gemseg.methods.SFPConfig` (``sfp``),
            :class:`~gemseg.methods.ResCLIPConfig` (``<base>+resclip``) or a dict of its fields
            (default: the official values).
        masks: where class-agnostic masks come from, for ``method="corrclip"`` and the ``"masks"`` refiner: a
            SAM / SAM 2 name (``"sam2-hiera-l"``, ``gemseg models --backend masks``), hub id or folder, a
            folder of mask files (``"files:FOLDER"``), or a source from :func:`gemseg.masks.create_mask_source`.
        mask_settings: the generator's :class:`gemseg.masks.AMGConfig`, or a dict of the fields that differ
            from the default, :data:`gemseg.masks.CORRCLIP_AMG` (CorrCLIP's run-time generator: every consumer
            of masks here is CorrCLIP's scope or map correction; 8 x 8 points, thresholds 0.4, one mask each).
        mask_cache: a folder where generated masks are kept by image content and settings.
        mask_weights: a generator's weights, ``"pretrained"`` or ``"random"`` (demos and tests).
    """
    config = GEMConfig(depth=depth, iterations=iterations, temperature=temperature,
                       projections=tuple(projections), l2_normalize=l2_normalize, gem_mlp=gem_mlp)
    backbone = create_backbone(model, backend=backend, pretrained=pretrained, checkpoint=checkpoint,
                               device=device, cache_dir=cache_dir)
    if backbone.pretrained is None:
        warnings.warn(f"{model}: no pretrained weights given; the model has random weights "
                      "(pass pretrained= or checkpoint=)", stacklevel=2)
    if isinstance(masks, str):
        from .masks import CORRCLIP_AMG, create_mask_source

        masks = create_mask_source(masks, device=device, settings=mask_settings, defaults=CORRCLIP_AMG,
                                   cache=mask_cache, cache_dir=cache_dir, weights=mask_weights)
        if mask_weights == "random" and masks.describe().get("kind") == "generator":
            warnings.warn(f"{masks.describe().get('model')}: the mask generator has random weights", stacklevel=2)
    elif mask_settings is not None or mask_cache is not None:
        raise ValueError("mask_settings and mask_cache apply to masks given by name; pass masks='sam2-hiera-l'")
    return GEMModel(backbone, config=config, precision=precision, method=method, pos_embed=pos_embed,
                    proxy=_proxy(method, proxy, proxy_weights, proxy_settings, device, cache_dir),
                    method_settings=method_settings, masks=masks)


def _proxy(method, proxy, weights, settings, device, cache_dir):
    """The proxy ``method`` needs, its ``proxy_type`` around the VFM (None for the CLIP-only methods; a given
    proxy is then ignored)."""
    from .methods import ProxyAttention, get_method
    from .backbones.vfm import VisionBackbone, create_vfm

    if "proxy" not in get_method(method).needs:
        if proxy is not None or settings is not None:
            warnings.warn(f"method {method!r} uses no proxy VFM; proxy/proxy_settings are ignored", stacklevel=3)
        return None
    fn = get_method(method)
    make = getattr(fn, "make_proxy", None)  # a method with its own kind of proxy (trident)
    if make is not None:
        return make(proxy, settings, weights=weights, device=device, cache_dir=cache_dir)
    if not isinstance(proxy, VisionBackbone):
        proxy = create_vfm(proxy or fn.default_proxy, weights=weights, device=device, cache_dir=cache_dir)
        if weights == "random":
            warnings.warn(f"{proxy.name}: the proxy VFM has random weights", stacklevel=3)
    return getattr(fn, "proxy_type", ProxyAttention)(proxy.to(device), settings)
