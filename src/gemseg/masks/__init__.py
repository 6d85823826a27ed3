"""Class-agnostic masks: one small interface, ``source(image, path=None) -> MaskSet`` (masks [M, H, W] bool,
scores [M]), with three sources: SAM / SAM 2 / 2.1 automatic mask generation (:class:`MaskGenerator`,
the official generator's algorithm in :mod:`.amg` on ``transformers`` models, :mod:`.sam`), label maps
read from files (:class:`FileMasks`, CorrCLIP's published format), and a disk cache in front of a
generator (:class:`CachedMasks`). :func:`create_mask_source` builds any of them from one string.
"""
from __future__ import annotations

import os

from ..backbones.sam import list_sam_models
from .amg import CORRCLIP_AMG, AMGConfig, amg_settings, generate_masks
from .base import MaskError, MaskSet, resize_label_map
from .sam import MASK_MODELS, MaskModelEntry, SamPrompter, load_prompter, resolve_mask_model
from .sources import CachedMasks, FileMasks, MaskGenerator, label_maps


def list_mask_models() -> list[MaskModelEntry]:
    """The SAM-family checkpoints known by short name (:func:`gemseg.backbones.sam.list_sam_models`; any
    ``transformers`` SAM / SAM 2 id or folder works)."""
    return list_sam_models()


def create_mask_source(spec: str, *, device="cpu", settings: AMGConfig | dict | None = None,
                       defaults: AMGConfig = AMGConfig(), cache: str | os.PathLike | None = None,
                       cache_dir: str | None = None, weights: str = "pretrained"):
    """A mask source from one string.

    Args:
        spec: a generator (a short name of :data:`MASK_MODELS` such as ``"sam-vit-b"`` or
            ``"sam2-hiera-l"``, a Hugging Face id, or a folder saved with ``save_pretrained()``), or a
            folder of label maps (``files:FOLDER``, or any folder without ``config.json``).
        settings: the generator's :class:`AMGConfig`, or a dict of the fields that differ from ``defaults``.
        defaults: what a generator runs with where ``settings`` says nothing (default: the official
            generators' defaults; :func:`gemseg.create_model` passes :data:`CORRCLIP_AMG`).
        cache: a folder where generated masks are kept by image content and settings (files are not cached).
        cache_dir: the Hugging Face hub cache to load checkpoints from.
        weights: a generator's weights: ``"pretrained"`` or ``"random"`` (:func:`load_prompter`: a short
            name's family default config or a folder's own; for demos and tests); files ignore it.
    """
    if not isinstance(spec, str) or not spec:
        raise TypeError("a mask source must be a non-empty string: a SAM name, hub id or folder")
    folder = spec.removeprefix("files:")
    if spec.startswith("files:") or (os.path.isdir(spec) and not os.path.isfile(os.path.join(spec, "config.json"))):
        if settings is not None:
            raise ValueError("generator settings do not apply to masks read from files; drop them")
        return FileMasks(folder)
    settings = amg_settings(settings, defaults=defaults)
    prompter = load_prompter(spec, device=device, cache_dir=cache_dir, dynamic_multimask=settings.dynamic_multimask,
                             weights=weights)
    source = MaskGenerator(prompter, settings)
    return CachedMasks(source, cache) if cache is not None else source


__all__ = ["MaskSet", "MaskError", "AMGConfig", "CORRCLIP_AMG", "MaskGenerator", "FileMasks", "CachedMasks", "SamPrompter", "MASK_MODELS",
           "MaskModelEntry", "amg_settings", "create_mask_source", "list_mask_models", "load_prompter", "generate_masks",
           "resolve_mask_model", "resize_label_map", "label_maps"]
