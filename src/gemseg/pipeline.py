"""One call for the common case: an image (or its path) and class names in, labels and a mask per class
out, in the spirit of a ``transformers`` pipeline. Built on :class:`gemseg.Segmenter`, with the rules of
``gemseg segment`` (label 0 is background; ``background="auto"`` lets a few generic prompts compete).

>>> from gemseg.pipeline import segment
>>> result = segment("examples/chelsea.png", ["cat", "eye", "nose"])   # doctest: +SKIP
>>> result.labels.shape, result.found, result.masks["cat"].mean()      # doctest: +SKIP

:func:`segment` keeps the last model it built, so repeated calls with the same model arguments load it
once; :func:`pipeline` returns a :class:`SegmentationPipeline` to hold on to instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

@dataclass(frozen=True)
class SegmentResult:
    """One image's segmentation at the image's own size (H, W), upright (EXIF applied)."""

    labels: np.ndarray  # int64 [H, W]: 0 background, k = classes[k - 1]
    names: tuple[str, ...]  # ("background", *classes)
    masks: dict  # class name -> bool [H, W], for every class given (all False when absent)
    probabilities: np.ndarray  # float32 [1 + C, H, W] label probabilities (row 0 is 0 without background prompts)
    found: tuple[str, ...]  # the classes present, largest area first
    random_weights: bool  # the model is untrained: the result means nothing (demos and tests)


class SegmentationPipeline:
    """A loaded model that segments images by class names; the text of each vocabulary is encoded once.

    Args:
        model: a :class:`~gemseg.GEMModel` (from :func:`gemseg.create_model`).
        size: the network input, N or (H, W) (default 448, as ``gemseg segment``).
        max_pixels: refuse image files with more pixels than this (None: no limit).
    """

    def __init__(self, model, *, size: int | tuple[int, int] = 448, max_pixels: int | None = None):
        from .io import DEFAULT_MAX_PIXELS

        self.model, self.size = model, size
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self._segmenters: dict = {}  # (classes, background, threshold) -> Segmenter, text encoded once

    def segmenter(self, classes: Sequence[str], *, background="auto", threshold: float | None = None):
        """The :class:`gemseg.Segmenter` of this vocabulary and background rule (built once, then reused)."""
        from .segmenter import Segmenter

        if isinstance(classes, str):
            raise TypeError("classes must be a list of names, e.g. ['cat', 'dog'], not one string")
        key = (tuple(classes), background if isinstance(background, str) or background is None
               else tuple(background), threshold)
        if key not in self._segmenters:
            self._segmenters[key] = Segmenter.from_classes(self.model, list(classes), background=background,
                                                           threshold=threshold, size=self.size)
        return self._segmenters[key]

    def __call__(self, image, classes: Sequence[str], *, background="auto",
                 threshold: float | None = None) -> SegmentResult:
        """Segment ``image`` (a path, PIL image or uint8 RGB array [H, W, 3]) into ``classes``.

        ``background``: ``"auto"`` (generic background prompts compete, as ``gemseg segment``), ``"none"``
        (every pixel gets a class) or your own background prompts; ``threshold``: pixels whose top class
        probability is below it become background (default 0.5 with background prompts, off with none).
        """
        seg = self.segmenter(classes, background=background, threshold=threshold)
        picture = _picture(image, self.max_pixels)
        paths = [os.fspath(image)] if isinstance(image, (str, os.PathLike)) else None  # mask files are found by it
        out = seg.predict([picture], out_size=(picture.height, picture.width), paths=paths)
        labels = out.labels[0].cpu().numpy()
        names = tuple(out.names)
        areas = np.bincount(labels.ravel(), minlength=len(names))
        found = tuple(names[k] for k in np.argsort(-areas, kind="stable") if k > 0 and areas[k] > 0)
        return SegmentResult(labels=labels, names=names,
                             masks={name: labels == k for k, name in enumerate(names) if k > 0},
                             probabilities=out.probabilities[0].float().cpu().numpy(), found=found,
                             random_weights=self.model.backbone.pretrained is None)


def pipeline(model: str = "ViT-B/16", *, pretrained: str | None = None, checkpoint: str | None = None,
             random_weights: bool = False, device: str | None = None, size: int | tuple[int, int] = 448,
             **model_kwargs) -> SegmentationPipeline:
    """A :class:`SegmentationPipeline` on ``model`` (any name :func:`gemseg.create_model` takes). With neither
    ``pretrained`` nor ``checkpoint``, the weights ``gemseg segment`` picks (``openai`` for open_clip names);
    ``random_weights=True``: an untrained model, as ``--random-weights`` (demos and tests without downloads;
    every result says so); ``device`` defaults to CUDA when available; other keywords go to
    :func:`gemseg.create_model`."""
    import warnings

    import torch

    from .backbones import default_pretrained
    from .factory import create_model

    if random_weights and (pretrained is not None or checkpoint is not None):
        raise ValueError("random_weights=True contradicts pretrained=/checkpoint=; give one or the other")
    if pretrained is None and checkpoint is None and not random_weights:
        pretrained = default_pretrained(model, model_kwargs.get("backend", "auto"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        if random_weights:  # asked for: not worth a warning
            warnings.filterwarnings("ignore", message=".*random weights.*")
        built = create_model(model, pretrained=pretrained, checkpoint=checkpoint, device=device, **model_kwargs)
    return SegmentationPipeline(built, size=size)


_LAST: dict = {}  # the pipeline of the latest segment() call, by its model arguments


def segment(image, classes: Sequence[str], *, model: str = "ViT-B/16", background="auto",
            threshold: float | None = None, **pipeline_kwargs) -> SegmentResult:
    """Segment one image into ``classes`` in one call: ``segment("photo.jpg", ["cat", "dog"])``.

    The model (``model`` and the keywords of :func:`pipeline`) is built on the first call and kept for
    the next calls with the same arguments. See :meth:`SegmentationPipeline.__call__` for ``background``
    and ``threshold``.
    """
    key = repr((model, sorted(pipeline_kwargs.items())))
    if key not in _LAST:
        _LAST.clear()  # one model at a time: a second would double the memory
        _LAST[key] = pipeline(model, **pipeline_kwargs)
    return _LAST[key](image, classes, background=background, threshold=threshold)


def _picture(image, max_pixels: int | None):
    """A PIL RGB image from a path, a PIL image or a uint8 array [H, W, 3]."""
    from PIL import Image

    from .io import load_image

    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels=max_pixels).image
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an array image must be uint8 RGB [H, W, 3], got {image.dtype} {list(image.shape)}")
        return Image.fromarray(image)
    raise TypeError(f"image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")


__all__ = ["SegmentResult", "SegmentationPipeline", "pipeline", "segment"]
