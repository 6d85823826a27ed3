"""Training-free dense methods, selectable by name everywhere a model is (``create_model(method=)``,
``GEMModel(method=)``, ``--method``).

Each maps ``(backbone, images [B, 3, H, W], config, *, return_ori=False)`` to ``(tokens [B, N, D],
original tokens [B, N, D] or None)`` after the final norm and projection, so that all of them share the
preprocessing, the text encoding and the evaluation of :class:`~gemseg.GEMModel`. A method with the
attribute ``needs_proxy = True`` (``proxyclip``) also takes ``proxy=`` (the model's
:class:`ProxyAttention`) and returns tokens on the proxy's grid. ``docs/methods.md`` gives each
method's formula and paper.

====================  =======================================================================
``gem``               GEM (the default); its variants are :class:`~gemseg.GEMConfig` settings
``clip``              raw CLIP patch tokens
``maskclip``          MaskCLIP: value embeddings of the last block
``vv``                CLIP Surgery-style value-value attention path
``sclip``             SCLIP: correlative self-attention (q-q + k-k) in the last block
``clearclip``         ClearCLIP: q-q attention, no residual, no MLP in the last block
``naclip``            NACLIP: k-k attention + Gaussian neighbourhood, no residual, no MLP
``proxyclip``         ProxyCLIP: proxy attention from a vision foundation model (needs ``proxy=``)
====================  =======================================================================
"""
from __future__ import annotations

from typing import Callable

from ..gem import gem_tokens
from .baselines import (NACLIP_STD, clearclip_tokens, clip_tokens, maskclip_tokens, naclip_tokens,
                        neighbourhood_bias, sclip_tokens, vv_tokens)
from .proxyclip import ProxyAttention, ProxyCLIPConfig, proxyclip_tokens

METHODS: dict[str, Callable] = {
    "gem": gem_tokens,
    "clip": clip_tokens,
    "maskclip": maskclip_tokens,
    "vv": vv_tokens,
    "sclip": sclip_tokens,
    "clearclip": clearclip_tokens,
    "naclip": naclip_tokens,
    "proxyclip": proxyclip_tokens,
}


def get_method(name: str) -> Callable:
    """The method registered as ``name``."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def list_methods() -> list[str]:
    """Names of the registered methods, built-in first."""
    return list(METHODS)


def register_method(name: str, fn: Callable, *, overwrite: bool = False) -> None:
    """Make ``fn`` selectable as ``method=name``. It takes ``(backbone, images, config, *, return_ori)``
    and returns ``(tokens, original tokens or None)``, like :func:`gemseg.gem.gem_tokens`. Use
    ``functools.partial`` to register a variant, e.g. ``partial(naclip_tokens, std=3.0)``."""
    if not isinstance(name, str) or not name:
        raise TypeError("a method name must be a non-empty string")
    if not callable(fn):
        raise TypeError("fn must be callable")
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    METHODS[name] = fn


__all__ = ["METHODS", "get_method", "list_methods", "register_method", "gem_tokens", "clip_tokens",
           "maskclip_tokens", "vv_tokens", "sclip_tokens", "clearclip_tokens", "naclip_tokens",
           "neighbourhood_bias", "NACLIP_STD", "proxyclip_tokens", "ProxyAttention", "ProxyCLIPConfig"]
