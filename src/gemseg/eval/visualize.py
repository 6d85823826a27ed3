"""Saved predictions and coloured visualizations (numpy/PIL only), each PNG written whole and then
renamed into place (:func:`gemseg.files.atomic_write`): an interrupted write never leaves a truncated one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..files import atomic_write

IGNORE_COLOUR = (255, 255, 255)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], *, ignore_index: int = 255) -> np.ndarray:
    """Label map [H, W] -> uint8 RGB [H, W, 3]; ``ignore_index`` (and any value without a colour) is white."""
    table = np.full((256, 3), IGNORE_COLOUR, dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    labels = np.asarray(labels)
    out = table[np.clip(labels, 0, 255)]
    out[(labels < 0) | (labels > 255) | (labels == ignore_index)] = IGNORE_COLOUR
    return out


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """A label map as an indexed (palette) PNG: pixel values are class indices, viewers show colours.

    Readable by ``gemseg score`` and by any tool that reads PASCAL VOC style label PNGs.
    """
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("label values must fit in 0..255 for a PNG")
    image = Image.fromarray(labels.astype(np.uint8))  # L; putpalette makes it P with the values kept
    flat = [v for c in palette[:256] for v in c] + list(IGNORE_COLOUR) * (256 - min(len(palette), 256))
    image.putpalette(flat[: 256 * 3])
    save_png(image, path)


def save_visualization(path: str | os.PathLike, image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                       palette: Sequence[Sequence[int]], *, ignore_index: int = 255, alpha: float = 0.6,
                       class_names: Sequence[str] | None = None) -> None:
    """Image | ground truth | prediction side by side, each with its caption, the label maps blended
    over the image, and a legend of the classes either map holds (``class_names[k]`` for label k;
    without names, the label numbers)."""
    from .. import viz

    def blend(labels):
        colour = colorize(labels, palette, ignore_index=ignore_index).astype(np.float32)
        return (alpha * colour + (1 - alpha) * image.astype(np.float32)).round().astype(np.uint8)

    h, w = image.shape[:2]
    font = viz.get_font(viz.font_size_for(w, h))
    panels = [viz.titled(Image.fromarray(np.ascontiguousarray(x)), caption, font=font)
              for x, caption in ((image, "image"), (blend(gt), "ground truth"), (blend(pred), "prediction"))]
    present = sorted(set(np.unique(gt).tolist()) | set(np.unique(pred).tolist()))
    entries = [(_class_name(k, class_names) + (" (ignored)" if k == ignore_index else ""),
                IGNORE_COLOUR if k == ignore_index or k >= len(palette) else tuple(palette[k]))
               for k in present]
    legend = viz.legend(entries, font=font, max_width=max(160, w), min_height=panels[0].height)
    save_png(viz.hstack([*panels, legend]), path)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """``image`` as a PNG at ``path`` (its folder made if needed), written whole, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(str(path), lambda f: image.save(f, format="PNG"))


def _class_name(k: int, names: Sequence[str] | None) -> str:
    if names is not None and 0 <= k < len(names):
        return f"{k} {names[k]}"
    return str(k)
