"""The names the registries hold, as plain data: what ``gemseg COMMAND --help`` lists and what the command
line checks before torch is imported (importing the registries themselves imports torch and the methods).

Each list here equals its registry's (tests/test_cli_light.py compares them with the real ones): a name
added to a built-in registry is added here too. Names registered at run time (:func:`gemseg.register_method`,
:func:`gemseg.refiners.register_refiner`) are known to the registries only.
"""
from __future__ import annotations

# gemseg.postprocess: the query -> class reductions; the default is the order of the official
# SCLIP/ClearCLIP/NACLIP code (see gemseg.postprocess)
REDUCTIONS = ("softmax_then_max", "max_then_softmax")
DEFAULT_REDUCTION = "softmax_then_max"

# gemseg.methods: each built-in method and what it needs besides the backbone (Method.needs), in
# registration order
METHOD_NEEDS: dict[str, tuple[str, ...]] = {
    "gem": (), "clip": (), "maskclip": (), "maskclip-vproj": (), "vv": (), "sclip": (), "clearclip": (),
    "naclip": (), "proxyclip": ("proxy",), "trident": ("proxy",), "corrclip": ("proxy", "masks"), "sc-clip": (),
    "sfp": (), "cass": ("proxy",),
}
# gemseg.methods.PLUGINS: plug-in -> (the built-in bases it composes with, those declaring its capability
# (Method.attention), in registration order; what "<base>+<plug-in>" needs)
PLUGINS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "resclip": (("gem", "clip", "vv", "sclip", "clearclip", "naclip"), ("text", "refine")),
}

# the proxy VFM each proxy method builds when --proxy is not given (its function's default_proxy; trident
# builds its own pair of DINO and SAM and is not listed), and gemseg.backbones.vfm.VFM_MODELS: short name ->
# timm name (timm's weights of each are in the hub repo timm/<timm name>)
DEFAULT_PROXIES = {"proxyclip": "dino-b8", "corrclip": "dino-b8", "cass": "dino-b8"}
VFMS = {
    "dino-s8": "vit_small_patch8_224.dino", "dino-b8": "vit_base_patch8_224.dino",
    "dino-s16": "vit_small_patch16_224.dino", "dino-b16": "vit_base_patch16_224.dino",
    "dinov2-s14": "vit_small_patch14_dinov2.lvd142m", "dinov2-b14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2-l14": "vit_large_patch14_dinov2.lvd142m", "dinov2-s14-reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2-b14-reg": "vit_base_patch14_reg4_dinov2.lvd142m", "dinov2-l14-reg": "vit_large_patch14_reg4_dinov2.lvd142m",
    "sam-b16": "samvit_base_patch16.sa1b", "mae-b16": "vit_base_patch16_224.mae",
}

# gemseg.refiners: the built-in refiners of refine= / --refine, in registration order
REFINERS = ("pamr", "sam-prompts", "lposs", "lposs+", "masks")

# gemseg.eval.protocols: the protocol presets (sorted) and the protocol settings' choices
PRESETS = ("cass", "clearclip", "corrclip", "gem", "lposs", "lposs+", "maskclip", "naclip", "proxyclip", "resclip",
           "resclip-clearclip", "resclip-sclip", "sc-clip", "sclip", "sfp", "trident")
RESIZES = ("fixed", "short_side", "none")  # gemseg.transforms
INTERPOLATIONS = ("bicubic", "bilinear", "bilinear-cv2")  # gemseg.segmenter
MODES = ("whole", "slide")  # gemseg.segmenter
POINT_CLASSES = ("present", "annotated")
POINT_NORMALIZATIONS = ("minmax", "none")
POS_EMBED_MODES = ("bicubic-aa", "bicubic-scale", "bicubic", "bilinear")  # gemseg.backbones.base


def method_names() -> list[str]:
    """What :func:`gemseg.methods.list_methods` returns for the built-in methods: each method, then every
    ``<base>+<plug-in>`` composition."""
    return [*METHOD_NEEDS, *(f"{b}+{p}" for p, (bases, _) in PLUGINS.items() for b in bases)]


def method_needs(name: str) -> tuple[str, ...] | None:
    """``Method.needs`` of the built-in method or composition ``name``; None for a name not listed here."""
    if name in METHOD_NEEDS:
        return METHOD_NEEDS[name]
    base, _, plugin = name.rpartition("+")
    if plugin in PLUGINS and base in PLUGINS[plugin][0]:
        return PLUGINS[plugin][1]
    return None
