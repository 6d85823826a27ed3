"""Drop-in replacement for the ``gem-torch`` package: change ``import gem`` to
``import gemseg.compat as gem`` and the same calls work, on current open_clip and transformers.

Differences from ``gem-torch`` 1.0.1 (its bugs, fixed here):

- ``batched_forward`` returns cosine similarities like ``forward`` (the reference multiplied them by 100
  in ``batched_forward`` only), and any number of prompts per image.
- ``forward`` accepts a batch of images ([B, 3, H, W]) sharing one prompt list.
- min-max normalization of a constant map gives zeros instead of NaN.
- non-square inputs and inputs whose size is not a multiple of the patch size work.
- ``create_model_and_transforms`` passes its arguments by name (the reference shifted them).
- ``available_models`` returns a list of ``"name: tag"`` strings instead of one long string.
- ``visualize`` never opens a window; it returns the overlays and writes them into ``save_path``
  (a folder) when given. A PIL image keeps its size and aspect ratio (the heatmaps are resized to
  it; the reference squashed it to the heatmap's transposed size); ``model=`` adds the random-weights
  banner when the model is untrained.
- image transforms do not need torchvision.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .backbones.base import OPENAI_MEAN, OPENAI_STD
from .factory import create_model
from .model import GEMModel, min_max
from .transforms import denormalize, preprocess

__all__ = ["create_gem_model", "create_model_and_transforms", "get_gem_img_transform", "available_models",
           "visualize", "GEMWrapper"]

# the models and tags gem-torch lists (all are open_clip class-token ViTs)
_MODELS = {
    "ViT-B/32": ["openai", "laion400m_e31", "laion400m_e32", "laion2b_e16", "laion2b_s34b_b79k"],
    "ViT-B/32-quickgelu": ["metaclip_400m", "metaclip_fullcc"],
    "ViT-B/16": ["openai", "laion400m_e31", "laion400m_e32", "laion2b_s34b_b88k"],
    "ViT-B/16-quickgelu": ["metaclip_400m", "metaclip_fullcc"],
    "ViT-B/16-plus-240": ["laion400m_e31", "laion400m_e32"],
    "ViT-L/14": ["openai", "laion400m_e31", "laion400m_e32", "laion2b_s32b_b82k"],
    "ViT-L/14-quickgelu": ["metaclip_400m", "metaclip_fullcc"],
    "ViT-L/14-336": ["openai"],
}


def available_models() -> list[str]:
    """``["ViT-B/32: openai", ...]``: the models and pretrained tags of gem-torch."""
    return [f"{name}: {tag}" for name, tags in _MODELS.items() for tag in tags]


class GEMWrapper(nn.Module):
    """gem-torch's model object, backed by :class:`gemseg.GEMModel` (``self.gem``)."""

    def __init__(self, gem: GEMModel):
        super().__init__()
        self.gem = gem
        self.patch_size = gem.patch_size[0]

    @property
    def depth(self) -> int:
        return self.gem.config.depth

    def encode_text(self, text: Sequence[str]) -> torch.Tensor:
        """Prompts -> [1, P, D] normalized embeddings of ``"a photo of a {label}."``."""
        return self.gem.encode_text(list(text)).unsqueeze(0)

    @staticmethod
    def min_max(logits: torch.Tensor) -> torch.Tensor:
        return min_max(logits)

    def forward(self, image: torch.Tensor, text: Sequence[str], normalize: bool = True,
                return_ori: bool = False) -> torch.Tensor:
        """``image`` [B, 3, H, W], ``text`` P prompts -> heatmaps [B, P, H, W]."""
        return self.gem.heatmaps(image, list(text), normalize=normalize, return_ori=return_ori)

    def batched_forward(self, image: torch.Tensor, text: Sequence[Sequence[str]], normalize: bool = True,
                        return_ori: bool = False) -> list[torch.Tensor]:
        """``image`` [B, 3, H, W], ``text`` B prompt lists -> B heatmaps [P_i, H, W]."""
        if len(text) != image.shape[0]:
            raise ValueError(f"got {len(text)} prompt lists for {image.shape[0]} images; pass one list per image")
        counts = [len(t) for t in text]
        emb = self.gem.encode_text([p for sub in text for p in sub])  # (sum P_i, D)
        sims = self.gem.heatmaps(image, emb, normalize=False, return_ori=return_ori)  # (B, sum P_i, H, W)
        out, start = [], 0
        for i, n in enumerate(counts):
            maps = sims[i, start:start + n]
            out.append(min_max(maps) if normalize else maps)
            start += n
        return out


# open_clip.create_model options gem-torch forwards but GEM does not need, with gem-torch's defaults
_IGNORED_DEFAULTS = {"jit": False, "force_quick_gelu": False, "force_custom_text": False,
                     "force_patch_dropout": None, "force_image_size": None, "force_preprocess_cfg": None,
                     "pretrained_image": False, "pretrained_hf": True, "output_dict": None,
                     "require_pretrained": False}


def create_gem_model(model_name: str, pretrained: str | None = None, gem_depth: int = 7, ss_attn_iter: int = 1,
                     ss_attn_temp: float | None = None, precision: str = "fp32", device="cpu",
                     cache_dir: str | None = None, **ignored) -> GEMWrapper:
    """gem-torch's factory. Options of open_clip's ``create_model`` that GEM does not use
    (``jit``, ``force_*``, ...) are ignored with a warning."""
    unknown = sorted(set(ignored) - set(_IGNORED_DEFAULTS))
    if unknown:
        raise TypeError(f"create_gem_model() got unexpected keyword arguments {', '.join(unknown)}")
    changed = sorted(k for k, v in ignored.items() if v != _IGNORED_DEFAULTS[k])
    if changed:
        warnings.warn(f"gemseg.compat ignores {', '.join(changed)}", stacklevel=2)
    gem = create_model(model_name, pretrained=pretrained, device=device, precision=precision,
                       cache_dir=cache_dir, depth=gem_depth, iterations=ss_attn_iter, temperature=ss_attn_temp)
    return GEMWrapper(gem)


def get_gem_img_transform(img_size: int | tuple[int, int] = (448, 448), mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None):
    """PIL image -> [3, H, W] tensor: bicubic resize (an int resizes the short side, keeping the
    aspect ratio; ``(H, W)`` resizes to exactly that), scale to [0, 1], normalize."""
    mean, std = tuple(mean or OPENAI_MEAN), tuple(std or OPENAI_STD)

    def transform(image: Image.Image) -> torch.Tensor:
        size = img_size
        if isinstance(size, int):
            w, h = image.size
            size = (size, round(size * w / h)) if h <= w else (round(size * h / w), size)
        return preprocess(image, size=size, mean=mean, std=std)

    return transform


def create_model_and_transforms(model_name: str, pretrained: str | None = None, gem_depth: int = 7,
                                ss_attn_iter: int = 1, ss_attn_temp: float | None = None,
                                precision: str = "fp32", device="cpu", cache_dir: str | None = None,
                                img_size: int | tuple[int, int] = (448, 448), **ignored):
    model = create_gem_model(model_name, pretrained=pretrained, gem_depth=gem_depth, ss_attn_iter=ss_attn_iter,
                             ss_attn_temp=ss_attn_temp, precision=precision, device=device, cache_dir=cache_dir,
                             **ignored)
    pre = model.gem.backbone.preprocess
    return model, get_gem_img_transform(img_size, mean=pre.mean, std=pre.std)


def visualize(image, text: Sequence[str], logits: torch.Tensor, alpha: float = 0.6,
              save_path: str | None = None, *, model=None) -> list[Image.Image]:
    """Overlay each heatmap ([P, H, W] or [1, P, H, W], values in [0, 1]) on ``image`` (PIL, or a
    normalized tensor [3, H, W] / [1, 3, H, W]). Returns one RGB PIL image per prompt: a PIL image
    keeps its own size and aspect ratio (the heatmaps are resized to it), a tensor is drawn at the
    heatmaps' size. With ``model`` (the :class:`GEMWrapper` or :class:`~gemseg.GEMModel` that made
    them) and random weights, each overlay carries the red random-weights banner. With ``save_path``
    (a folder) also writes ``heatmap_{prompt}.png`` there. Never opens a window."""
    from .segment import resize_maps
    from .viz import RANDOM_BANNER, banner, heatmap_overlay

    if logits.ndim == 4:
        logits = logits[0]
    H, W = logits.shape[-2:]
    if isinstance(image, Image.Image):
        rgb = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        rgb = denormalize(image[0] if image.ndim == 4 else image)
        if rgb.shape[:2] != (H, W):
            rgb = np.asarray(Image.fromarray(rgb).resize((W, H), Image.BICUBIC))
    else:
        raise TypeError(f"image must be a PIL image or a torch.Tensor, got {type(image).__name__}")
    if len(text) != logits.shape[0]:
        raise ValueError(f"got {len(text)} prompts for {logits.shape[0]} heatmaps")
    maps = resize_maps(logits.detach().float().cpu(), rgb.shape[:2]).numpy()  # (P, h, w) at the image's size
    base = Image.fromarray(rgb)
    overlays = [heatmap_overlay(base, m, alpha=alpha, vrange=(0.0, 1.0))[0] for m in maps]
    gem = getattr(model, "gem", model)
    if gem is not None and gem.backbone.pretrained is None:
        overlays = [banner(o, RANDOM_BANNER) for o in overlays]
    if save_path is not None:
        os.makedirs(save_path, exist_ok=True)
        for o, name in zip(overlays, text):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
            o.save(os.path.join(save_path, f"heatmap_{safe}.png"))
    return overlays
