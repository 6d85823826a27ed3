"""gemseg: training-free open-vocabulary localization and segmentation with the Grounding Everything
Module (GEM) on CLIP-style vision transformers."""
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

__version__ = "0.1.0"

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
