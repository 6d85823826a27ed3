"""gemseg: training-free open-vocabulary localization and segmentation with the Grounding Everything
Module (GEM) on CLIP-style vision transformers.

The names below are imported on first use (PEP 562), so that ``import gemseg.cli`` (and with it
``gemseg --help``) does not pay for torch and the backends before a model is needed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "create_model": "factory",
    "GEMModel": "model",
    "GEMConfig": "config",
    "list_models": "backbones",
    "register_model": "backbones",
    "list_methods": "methods",
    "register_method": "methods",
    "Backbone": "backbones",
    "ModelEntry": "backbones",
    "preprocess": "transforms",
    "denormalize": "transforms",
    "min_max": "model",
    "DEFAULT_TEMPLATES": "model",
    "Segmenter": "segmenter",
    "Segmentation": "segment",
    "Background": "segment",
    "class_probabilities": "postprocess",
    "REDUCTIONS": "postprocess",
    "AUTO_BACKGROUND": "segment",
    "WeightsUnavailableError": "errors",
}

__all__ = [
    "create_model",
    "GEMModel",
    "GEMConfig",
    "list_models",
    "register_model",
    "list_methods",
    "register_method",
    "Backbone",
    "ModelEntry",
    "preprocess",
    "denormalize",
    "min_max",
    "DEFAULT_TEMPLATES",
    "Segmenter",
    "Segmentation",
    "Background",
    "class_probabilities",
    "REDUCTIONS",
    "AUTO_BACKGROUND",
    "WeightsUnavailableError",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'gemseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .backbones import Backbone, ModelEntry, list_models, register_model
    from .config import GEMConfig
    from .errors import WeightsUnavailableError
    from .factory import create_model
    from .methods import list_methods, register_method
    from .model import DEFAULT_TEMPLATES, GEMModel, min_max
    from .postprocess import REDUCTIONS, class_probabilities
    from .segment import AUTO_BACKGROUND, Background, Segmentation
    from .segmenter import Segmenter
    from .transforms import denormalize, preprocess
