"""``Segmenter``: the one predictor from images to labels, used by ``GEMModel.segment``, ``gemseg segment``,
the web demo and ``gemseg eval`` alike.

It holds a model view, a vocabulary encoded once (queries -> labels), how images become the network input
(:class:`InputRule`: resize, whole image or sliding windows), refiners (:mod:`gemseg.refiners`, e.g. PAMR)
and one label rule (:class:`~gemseg.segment.LabelRule`). Build it from class names and a background choice
(:meth:`Segmenter.from_classes`) or from a dataset and an evaluation protocol (:meth:`Segmenter.from_dataset`).

Stages, each usable alone: :meth:`~Segmenter.prepare` (images -> [B, 3, h, w]), :meth:`~Segmenter.query_maps`
(-> [B, Q, h, w] cosines at the network resolution), :meth:`~Segmenter.at_size` (resized to the output size,
then refined), :meth:`~Segmenter.labels` / :meth:`~Segmenter.segmentation` (-> labels);
:meth:`~Segmenter.predict` runs them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .refiners import RefineSpec, refine_scores, resolve_refiners
from .segment import (Background, LabelRule, Segmentation, apply_rule, background_rule, clean_prompts,
                      label_scores, resize_maps)
from .transforms import RESIZES, preprocess, preprocess_cv2, resized_size, to_size

INTERPOLATIONS = ("bicubic", "bilinear", "bilinear-cv2")
MODES = ("whole", "slide")


@dataclass(frozen=True)
class InputRule:
    """How images become the network input, and how the network sees it."""

    resize: str = "fixed"  # "fixed": to size, aspect not kept; "short_side": short side to size; "none": as is
    size: int | tuple[int, int] = (448, 448)  # "fixed": (H, W) or N for N x N; "short_side": N
    max_long_side: int | None = None  # "short_side": the long side never exceeds this; None: no cap
    interpolation: str | None = None  # None: the checkpoint's; "bicubic"/"bilinear" (PIL, antialiased) or
    #                                   "bilinear-cv2" (no antialiasing, as OpenCV/mmseg)
    mode: str = "whole"  # "whole": one forward pass; "slide": overlapping crops, scores averaged
    crop: int = 224  # "slide": crop size in pixels
    stride: int = 112  # "slide": crop stride in pixels
    crop_batch: int = 8  # "slide": crops per forward pass

    def __post_init__(self):
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.resize == "short_side" and not isinstance(self.size, int):
            raise ValueError(f"resize 'short_side' takes one size in pixels, got {self.size!r}")
        if min(self.crop, self.stride, self.crop_batch) < 1 or self.stride > self.crop:
            raise ValueError(f"need 1 <= stride <= crop and crop_batch >= 1, got crop {self.crop}, "
                             f"stride {self.stride}, crop_batch {self.crop_batch}")

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the network sees for an image of ``height`` x ``width``."""
        if self.resize == "fixed":
            return to_size(self.size)
        if self.resize == "short_side":
            return resized_size(height, width, resize="short_side", size=self.size, max_long_side=self.max_long_side)
        return height, width


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of the sliding-window crops: a grid with ``stride`` whose last row and column
    are shifted back to end at the border; crops are ``min(crop, side)`` pixels wide (mmseg's grid)."""
    def starts(side):
        n = max(side - crop + stride - 1, 0) // stride + 1
        return sorted({max(min(i * stride + crop, side) - crop, 0) for i in range(n)})

    hc, wc = min(crop, height), min(crop, width)
    return [(y, y + hc, x, x + wc) for y in starts(height) for x in starts(width)]


class Segmenter:
    """Labels for images from a vocabulary encoded once.

    Args:
        model: a :class:`~gemseg.GEMModel` (the view that computes the maps; see :meth:`GEMModel.variant`).
        queries: Q text queries, each scoring one label.
        query_to_class: [Q] the label of each query, in ``[0, K)``.
        names: the K label names (label ``k`` is ``names[k]``); a label without queries gets probability 0.
        rule: the label rule (background label, logit scale, thresholds, reduction).
        templates: prompt templates (None: ``"a photo of a {}."``).
        inputs: how images become the network input (:class:`InputRule`).
        refine: refiners run on the scores at the output size (:func:`gemseg.refiners.resolve_refiners`).
        background: the :class:`~gemseg.segment.Background` the queries came from, for the result.
        text_cache: a dict shared by segmenters whose models share a text encoder (backbone and precision):
            the embeddings of a vocabulary and templates are computed by the first and reused by the others.
    """

    def __init__(self, model, queries: Sequence[str], query_to_class: Sequence[int], names: Sequence[str], *,
                 rule: LabelRule = LabelRule(), templates: Sequence[str] | None = None,
                 inputs: InputRule = InputRule(), refine: RefineSpec = None, background: Background | None = None,
                 text_cache: dict | None = None):
        self.model, self.rule, self.inputs, self.background = model, rule, inputs, background
        self.names = tuple(names)
        self.queries = list(queries)
        if not self.queries:
            raise ValueError("no queries to encode")
        self.query_to_class = torch.as_tensor(list(query_to_class), dtype=torch.long)  # (Q,)
        if self.query_to_class.numel() != len(self.queries):
            raise ValueError(f"query_to_class has {self.query_to_class.numel()} entries for {len(self.queries)} queries")
        if self.query_to_class.min() < 0 or self.query_to_class.max() >= len(self.names):
            raise ValueError(f"query_to_class values must lie in [0, {len(self.names)})")
        if rule.background is not None and not 0 <= rule.background < len(self.names):
            raise ValueError(f"background label {rule.background} is not one of the {len(self.names)} labels")
        self.templates = list(templates) if templates is not None else None  # None: the model's default
        self.refiners = resolve_refiners(refine)  # [(name, fn)], run in order by at_size
        key = (tuple(self.queries), tuple(self.templates) if self.templates is not None else None)
        if text_cache is not None and key in text_cache:
            self.text = text_cache[key]
        else:
            self.text = self._encode(self.queries)  # (Q, D), computed once
            if text_cache is not None:
                text_cache[key] = self.text

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_classes(cls, model, classes: Sequence[str], *, background: str | Sequence[str] | Background | None = "auto",
                     threshold: float | None = None, logit_scale: float | None = None, reduction: str | None = None,
                     templates: Sequence[str] | None = None, size: int | Sequence[int] | None = 448,
                     refine: RefineSpec = None, text_cache: dict | None = None) -> "Segmenter":
        """Label 0 is background, ``k`` is ``classes[k - 1]``; ``background``, ``threshold`` and
        ``logit_scale`` are resolved by :func:`gemseg.segment.background_rule` (or give a resolved
        :class:`~gemseg.segment.Background`); ``size``: the network input, ``448``, ``(H, W)`` or ``None``
        (each image's own size); ``reduction``: see :func:`gemseg.postprocess.class_probabilities`."""
        classes = clean_prompts(classes, "class")
        if isinstance(background, Background):
            if threshold is not None or logit_scale is not None:
                raise ValueError("threshold and logit_scale are part of a resolved Background; give one or the other")
            bg = background
        else:
            bg = background_rule(background, classes, threshold=threshold,
                                 **({} if logit_scale is None else {"logit_scale": logit_scale}))
        rule = LabelRule(background=0, logit_scale=bg.logit_scale, prob_threshold=bg.threshold,
                         **({} if reduction is None else {"reduction": reduction}))
        inputs = InputRule(resize="none") if size is None else InputRule(resize="fixed", size=to_size(size))
        owner = list(range(1, len(classes) + 1)) + [0] * len(bg.prompts)  # classes first, then background prompts
        return cls(model, classes + list(bg.prompts), owner, ("background", *classes), rule=rule,
                   templates=templates, inputs=inputs, refine=refine, background=bg, text_cache=text_cache)

    @classmethod
    def from_dataset(cls, model, spec, protocol, *, classes: Sequence[Sequence[str]] | None = None,
                     active: Sequence[int] | None = None, refine: RefineSpec = None, crop_batch: int = 8,
                     text_cache: dict | None = None) -> "Segmenter":
        """The predictor of an evaluation: ``spec`` a :class:`gemseg.eval.DatasetSpec`, ``protocol`` a
        :class:`gemseg.eval.Protocol` (``gemseg.eval.resolve_protocol(preset, spec)``), whose
        ``segmenter_settings`` give the queries, label rule, input rule, refiners (PAMR) and position
        embeddings. ``classes``: per label, its names, instead of the dataset's (point labels);
        ``active``: encode only these labels' queries; ``refine``: refiners after the protocol's."""
        settings = protocol.segmenter_settings(spec, classes=classes, active=active, crop_batch=crop_batch)
        view = model if model.pos_embed == settings["pos_embed"] else model.variant(pos_embed=settings["pos_embed"])
        return cls(view, settings["queries"], settings["query_to_class"], settings["names"], rule=settings["rule"],
                   templates=settings["templates"], inputs=settings["inputs"],
                   refine=[*settings["refine"], *_listed(refine)], text_cache=text_cache)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        step = max(1, 2048 // len(self.templates or ("{}",)))  # bound the text batch: prompts x templates
        return torch.cat([self.model.encode_text(prompts[i: i + step], templates=self.templates)
                          for i in range(0, len(prompts), step)])

    # --- images -> query maps ----------------------------------------------------------------------
    def prepare(self, images) -> torch.Tensor:
        """PIL image(s) / uint8 RGB arrays [H, W, 3] -> the network input [B, 3, h, w] on the model's
        device, resized by :attr:`inputs` and normalized with the checkpoint's mean and std; a tensor
        [B, 3, h, w] is taken as it is (already normalized)."""
        if isinstance(images, torch.Tensor):  # checked by GEMModel.heatmaps
            return images.to(self.model.device)
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            raise ValueError("no images to segment")
        pre, rule = self.model.backbone.preprocess, self.inputs
        interpolation = rule.interpolation or pre.interpolation
        sizes = [rule.input_size(*_hw(im)) for im in items]
        if len(set(sizes)) > 1:
            raise ValueError(f"images of different sizes {sorted(set(sizes))} cannot share a batch under resize "
                             f"{rule.resize!r}; pass them one at a time")
        if interpolation == "bilinear-cv2":
            import numpy as np

            x = torch.cat([preprocess_cv2(np.asarray(im), size=sizes[0], mean=pre.mean, std=pre.std,
                                          device=self.model.device) for im in items])
        else:
            x = preprocess(items, size=sizes[0], mean=pre.mean, std=pre.std, interpolation=interpolation)
        return x.to(self.model.device)

    @property
    def needs_masks(self) -> bool:
        """Whether the model's method or a refiner needs class-agnostic masks (:meth:`masks`)."""
        return self.model.needs_masks or any(_wants_masks(fn) for _, fn in self.refiners)

    def masks(self, images, x: torch.Tensor, paths: Sequence[str] | None = None) -> torch.Tensor | None:
        """Mask label maps [B, h, w] at the network input ``x`` [B, 3, h, w] when :attr:`needs_masks`
        (else ``None``): from the model's mask source, once per image at the image's own size (PIL images
        / uint8 arrays; ``paths`` name their files for mask files), or from ``x`` itself for a tensor."""
        if not self.needs_masks:
            return None
        if self.model.mask_source is None:
            raise ValueError("masks are needed (method corrclip or refiner 'masks'): create_model(..., "
                             "masks='sam2-hiera-l') (--masks SOURCE)")
        if isinstance(images, torch.Tensor):
            return self.model.masks_for(x)
        from .masks import label_maps

        items = [images] if not isinstance(images, (list, tuple)) else list(images)
        return label_maps(self.model.mask_source, items, paths=paths, size=tuple(x.shape[-2:])).to(x.device)

    @torch.no_grad()
    def query_maps(self, x: torch.Tensor, rows: Sequence[int] | None = None,
                   masks: torch.Tensor | None = None) -> torch.Tensor:
        """Network input [B, 3, h, w] -> cosines [B, Q, h, w] float32 of every pixel with every query (or
        the queries ``rows``), whole image or sliding windows; ``masks`` [B, h, w] (:meth:`masks`) go
        with the input to a method that needs them, cropped with each window."""
        text = self.text if rows is None else self.text[torch.as_tensor(list(rows), dtype=torch.long)]
        extra = {"masks": masks} if masks is not None and self.model.needs_masks else {}
        if self.inputs.mode == "whole":
            return self.model.heatmaps(x, text, **extra).float()
        return self._slide(x, text, extra.get("masks"))

    def _slide(self, x: torch.Tensor, text: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"images must have shape [B, 3, H, W], got {list(x.shape)}")
        B, _, H, W = x.shape
        windows = slide_windows(H, W, self.inputs.crop, self.inputs.stride)
        total = x.new_zeros((B, text.shape[0], H, W))
        count = x.new_zeros((1, 1, H, W))
        per = max(1, self.inputs.crop_batch // B)  # windows per forward pass, all images of the batch
        for i in range(0, len(windows), per):
            chunk = windows[i: i + per]
            crops = torch.cat([x[..., y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])  # (len(chunk) * B, 3, ch, cw)
            extra = {} if masks is None else {"masks": torch.cat([masks[..., y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])}
            sims = self.model.heatmaps(crops, text, **extra).reshape(len(chunk), B, text.shape[0], *crops.shape[-2:])
            for (y1, y2, x1, x2), s in zip(chunk, sims):
                total[:, :, y1:y2, x1:x2] += s
                count[..., y1:y2, x1:x2] += 1
        return total / count

    def at_size(self, maps: torch.Tensor, x: torch.Tensor, out_size: Sequence[int] | None = None,
                masks: torch.Tensor | None = None) -> torch.Tensor:
        """Query maps [B, Q, h, w] -> scores [B, Q, H, W] at ``out_size = (H, W)`` (bilinear; default: as
        they are), then the refiners, which see the network input ``x`` [B, 3, h, w]."""
        scores = maps.float() if out_size is None else resize_maps(maps.float(), tuple(out_size))
        context = {}
        if masks is not None:  # e.g. for "masks": the label maps at the output size and this predictor's labels
            from .masks import resize_label_map

            context = {"masks": resize_label_map(masks, tuple(scores.shape[-2:])).to(scores.device),
                       "labels": lambda s: self.labels(s)[0]}
        elif any(_wants_masks(fn) for _, fn in self.refiners):
            raise ValueError("the refiner needs masks: create_model(..., masks='sam2-hiera-l') (--masks)")
        return refine_scores(scores, self.refiners, image=x, model=self.model, **context)

    def scores(self, images, *, out_size: Sequence[int] | None = None, rows: Sequence[int] | None = None,
               paths: Sequence[str] | None = None) -> torch.Tensor:
        """Images -> query scores [B, Q, H, W] at ``out_size`` (default: the network input size), refined;
        ``paths``: the images' files, where masks are read from files (:meth:`masks`)."""
        x = self.prepare(images)
        masks = self.masks(images, x, paths)
        return self.at_size(self.query_maps(x, rows, masks), x, out_size, masks)

    # --- scores -> labels ----------------------------------------------------------------------------
    def _check_scores(self, scores: torch.Tensor) -> None:
        Q = len(self.queries)
        if scores.ndim != 4 or scores.shape[1] != Q:
            raise ValueError(f"scores must be [B, {Q}, H, W] (one map per query), got {list(scores.shape)}")

    def labels(self, scores: torch.Tensor, *, rule: LabelRule | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Query scores [B, Q, H, W] -> ``(labels [B, H, W] long, top [B, H, W])`` by ``rule`` (default:
        :attr:`rule`); ``top`` is each pixel's highest label probability before the threshold."""
        self._check_scores(scores)
        labels, top, _ = apply_rule(scores, self.query_to_class, len(self.names), rule or self.rule)
        return labels, top

    def segmentation(self, scores: torch.Tensor) -> Segmentation:
        """Query scores [B, Q, H, W] -> a :class:`~gemseg.segment.Segmentation` (labels, probabilities,
        per-label scores and confidence) by :attr:`rule`."""
        self._check_scores(scores)
        K, rule = len(self.names), self.rule
        labels, _, probs = apply_rule(scores, self.query_to_class, K, rule)
        confidence = probs.gather(1, labels[:, None])[:, 0]  # (B, H, W)
        if rule.background is not None and rule.background not in self.query_to_class.tolist():
            # background without queries: a pixel the threshold made background has no probability of it
            confidence = torch.where(labels == rule.background, torch.full_like(confidence, float("nan")), confidence)
        return Segmentation(labels, probs, label_scores(scores, self.query_to_class, K), confidence, self.names,
                            self.background, rule.reduction)

    def predict(self, images, *, out_size: Sequence[int] | None = None,
                paths: Sequence[str] | None = None) -> Segmentation:
        """Images (PIL, uint8 arrays or a normalized [B, 3, h, w] tensor) -> a
        :class:`~gemseg.segment.Segmentation` at ``out_size = (H, W)`` (default: the network input size)."""
        return self.segmentation(self.scores(images, out_size=out_size, paths=paths))

    def class_scores(self, images, classes: Sequence[int], *, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Scores of some labels only: [B, len(classes), H, W], each the max over its queries' cosines."""
        classes = list(classes)
        position = {c: i for i, c in enumerate(classes)}
        owners = self.query_to_class.tolist()
        rows = [q for q, c in enumerate(owners) if c in position]
        missing = set(classes) - {owners[q] for q in rows}
        if missing:
            raise ValueError(f"labels {sorted(missing)[:5]} have no encoded queries")
        sims = self.scores(images, out_size=out_size, rows=rows)
        owner = torch.tensor([position[owners[q]] for q in rows])
        return label_scores(sims, owner, len(classes))


def _listed(refine: RefineSpec) -> list:
    if refine is None:
        return []
    return [refine] if isinstance(refine, (str, tuple)) or callable(refine) else list(refine)


def _wants_masks(fn) -> bool:
    """Whether a refiner takes masks (it says so with ``needs_masks = True``, e.g. ``"masks"``)."""
    import functools

    base = fn.func if isinstance(fn, functools.partial) else fn
    return bool(getattr(base, "needs_masks", False))


def _hw(image) -> tuple[int, int]:
    if hasattr(image, "size") and not hasattr(image, "shape"):  # PIL: (width, height)
        return image.size[1], image.size[0]
    return tuple(image.shape[:2])


__all__ = ["Segmenter", "InputRule", "slide_windows"]
