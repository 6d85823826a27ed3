"""Image preprocessing with PIL and torch only (no torchvision).

:func:`preprocess` is CLIP's preprocessing (PIL resize, antialiased); :func:`resized_size` and
:func:`preprocess_cv2` are the evaluation protocols' resizes (fixed / short side with a long-side cap,
and OpenCV-style bilinear without antialiasing, as mmseg's pipelines do).
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .backbones.base import OPENAI_MEAN, OPENAI_STD

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS}

ImageLike = Union[Image.Image, np.ndarray]
RESIZES = ("fixed", "short_side", "none")


def to_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``448`` -> ``(448, 448)``; ``(H, W)`` stays; ``None`` stays."""
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return size


def to_pil(image: ImageLike) -> Image.Image:
    """A PIL image or a uint8 array [H, W], [H, W, 3] or [H, W, 4] -> an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"a numpy image must be [H, W], [H, W, 3] or [H, W, 4], got {list(image.shape)}")
        if image.dtype != np.uint8:
            raise ValueError(f"a numpy image must be uint8 (0-255), got {image.dtype}")
        return Image.fromarray(np.ascontiguousarray(image[..., :3]))
    raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")


def preprocess(images: ImageLike | Sequence[ImageLike], *, size: int | Sequence[int] | None = 448,
               mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
               interpolation: str = "bicubic") -> torch.Tensor:
    """Resize and normalize images for a model.

    Args:
        images: one PIL image / uint8 array [H, W, 3], or a list of them (converted to RGB).
        size: ``448`` -> 448x448 (the GEM protocol: the whole image, aspect not kept), ``(H, W)``,
            or ``None`` to keep each image's own size (a list must then share one size).
        mean, std: per-channel statistics of the checkpoint (``model.backbone.preprocess``).
    Returns:
        [3, H, W] for one image, [B, 3, H, W] for a list; float32, ``(rgb/255 - mean) / std``.
    """
    single = isinstance(images, (Image.Image, np.ndarray))
    items = [images] if single else list(images)
    if not items:
        raise ValueError("no images to preprocess")
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {', '.join(_RESAMPLE)}, got {interpolation!r}")
    hw = to_size(size)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for image in items:
        pil = to_pil(image)
        if hw is not None and pil.size != (hw[1], hw[0]):
            pil = pil.resize((hw[1], hw[0]), resample=_RESAMPLE[interpolation])
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1) / 255.0  # (3, H, W)
        out.append((x - mean_t) / std_t)
    if single:
        return out[0]
    shapes = {tuple(x.shape) for x in out}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)}; pass size= to resize them to one")
    return torch.stack(out)


def resized_size(height: int, width: int, *, resize: str, size: int, max_long_side: int | None = None
                 ) -> tuple[int, int]:
    """``(h, w)`` an image of ``height`` x ``width`` is resized to under a protocol's rule.

    ``"fixed"``: ``size`` x ``size`` (aspect not kept); ``"short_side"``: the short side to ``size``, aspect
    kept, but the long side at most ``max_long_side`` (mmseg ``Resize(scale=(max_long_side, size),
    keep_ratio=True)``), rounded half up; ``"none"``: unchanged.
    """
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    if resize == "fixed":
        return size, size
    if resize == "short_side":
        scale = min(size / min(height, width), (max_long_side or float("inf")) / max(height, width))
        return int(height * scale + 0.5), int(width * scale + 0.5)
    return height, width


def preprocess_cv2(image: np.ndarray, *, size: tuple[int, int] | None = None, mean: Sequence[float] = OPENAI_MEAN,
                   std: Sequence[float] = OPENAI_STD, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> normalized [1, 3, h, w] on ``device``: bilinear resize to ``size = (h, w)``
    without antialiasing (as OpenCV's ``INTER_LINEAR``), rounded back to uint8 values as mmseg stores
    them, then ``(x / 255 - mean) / std``. ``size=None`` keeps the image's size."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB array [H, W, 3], got {getattr(image, 'dtype', type(image).__name__)} "
                         f"{list(getattr(image, 'shape', []))}")
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    if size is not None and tuple(size) != image.shape[:2]:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False).round().clamp(0, 255)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean_t) / std_t


def denormalize(images: torch.Tensor, *, mean: Sequence[float] = OPENAI_MEAN,
                std: Sequence[float] = OPENAI_STD) -> np.ndarray:
    """Undo :func:`preprocess`: [3, H, W] or [B, 3, H, W] -> uint8 RGB [H, W, 3] or [B, H, W, 3]."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    x = (images.detach().float().cpu() * s + m).clamp(0, 1) * 255.0
    x = x.round().to(torch.uint8)
    return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)).numpy()
