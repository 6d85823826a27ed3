"""Inference for evaluation: a vocabulary's text embeddings computed once, whole-image or sliding-window
scores at the label resolution, optional PAMR, and a protocol's rules from scores to labels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..postprocess import class_probabilities, reduce_queries
from ..transforms import preprocess, preprocess_cv2, resized_size
from .datasets import DatasetSpec, read_templates
from .pamr import pamr
from .protocols import Protocol, vocabulary_classes


def class_queries(spec: DatasetSpec, protocol: Protocol) -> list[tuple[str, ...]]:
    """The queries of each class under ``protocol``: its display name ("names"), every name of the
    dataset's synonym file ("synonyms") or its line of a class file; ``background_prompts`` replace the
    background class's, and with ``background_query=False`` the background class has none."""
    per_class = vocabulary_classes(spec, protocol)
    if protocol.background_prompts is not None:
        if spec.background is None:
            raise ValueError(f"background_prompts need a background class, and {spec.name} has none")
        per_class[spec.background] = protocol.background_prompts
    if not protocol.background_query and spec.background is not None:
        per_class[spec.background] = ()
    return per_class


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of the sliding-window crops: a grid with ``stride`` whose last row and column
    are shifted back to end at the border; crops are ``min(crop, side)`` pixels wide."""
    def starts(side):
        n = max(side - crop + stride - 1, 0) // stride + 1
        return sorted({max(min(i * stride + crop, side) - crop, 0) for i in range(n)})

    hc, wc = min(crop, height), min(crop, width)
    return [(y, y + hc, x, x + wc) for y in starts(height) for x in starts(width)]


class Segmenter:
    """Scores and labels for one image at a time under a :class:`Protocol`.

    Args:
        model: a :class:`gemseg.GEMModel`.
        protocol: the settings.
        queries: per class, the text queries that score it (see :func:`class_queries`).
        background: the background class index (for thresholds), if any.
        active: encode only these classes' queries (a large vocabulary of which a run needs part).
        crop_batch: sliding-window crops per forward pass.
        text_cache: a dict shared by segmenters whose models have the same backbone and precision (e.g.
            GEM settings of one model, whose text encoder they share): the text embeddings of a
            vocabulary and templates are computed by the first and reused by the others.
    """

    def __init__(self, model, protocol: Protocol, queries: Sequence[Sequence[str]], *, background: int | None = None,
                 active: Sequence[int] | None = None, crop_batch: int = 8, text_cache: dict | None = None):
        self.model, self.protocol, self.background = model, protocol, background
        # the images go through the protocol's position-embedding resampling (same weights, same text encoder)
        same = getattr(model, "pos_embed", protocol.pos_embed) == protocol.pos_embed
        self.image_model = model if same else model.with_pos_embed(protocol.pos_embed)
        self.num_classes = len(queries)
        keep = set(range(self.num_classes)) if active is None else set(active)
        flat, owner = [], []
        for c, names in enumerate(queries):
            if c in keep:
                flat += list(names)
                owner += [c] * len(names)
        if not flat:
            raise ValueError("no queries to encode")
        self.queries = flat
        self.query_to_class = torch.tensor(owner, dtype=torch.long)
        self.templates = read_templates(protocol.templates)
        self.crop_batch = crop_batch
        key = (tuple(flat), tuple(self.templates))
        if text_cache is not None and key in text_cache:
            self.text = text_cache[key]
        else:
            self.text = self._encode(flat)  # (Q, D), computed once for the run
            if text_cache is not None:
                text_cache[key] = self.text

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        step = max(1, 2048 // len(self.templates))  # bound the text batch: prompts x templates
        return torch.cat([self.model.encode_text(prompts[i: i + step], templates=self.templates)
                          for i in range(0, len(prompts), step)])

    # --- image -> scores -------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8 RGB [H, W, 3] -> the network input [1, 3, h, w], resized and normalized."""
        p, pre = self.protocol, self.model.backbone.preprocess
        size = resized_size(*image.shape[:2], resize=p.resize, size=p.size, max_long_side=p.max_long_side)
        if p.interpolation == "bilinear-cv2":
            return preprocess_cv2(image, size=size, mean=pre.mean, std=pre.std, device=self.model.device)
        return preprocess(image, size=size, mean=pre.mean, std=pre.std, interpolation=p.interpolation)[None].to(
            self.model.device)

    @torch.no_grad()
    def query_scores(self, image: np.ndarray, out_size: tuple[int, int],
                     rows: Sequence[int] | None = None) -> torch.Tensor:
        """Cosine similarity of every pixel with every query (or ``rows`` of them): [Q, *out_size] float32,
        computed at the network resolution and resized bilinearly to ``out_size``, then PAMR."""
        x = self.prepare(image)
        text = self.text if rows is None else self.text[torch.as_tensor(list(rows), dtype=torch.long)]
        sims = self.image_model.heatmaps(x, text) if self.protocol.mode == "whole" else self._slide(x, text)
        sims = F.interpolate(sims.float(), size=tuple(out_size), mode="bilinear", align_corners=False)
        if self.protocol.pamr_steps:
            guide = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
            sims = pamr(guide, sims, steps=self.protocol.pamr_steps, dilations=self.protocol.pamr_dilations)
        return sims[0]

    def _slide(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        windows = slide_windows(H, W, self.protocol.crop, self.protocol.stride)
        total = x.new_zeros((1, text.shape[0], H, W))
        count = x.new_zeros((1, 1, H, W))
        for i in range(0, len(windows), self.crop_batch):
            chunk = windows[i: i + self.crop_batch]
            crops = torch.cat([x[..., y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
            sims = self.image_model.heatmaps(crops, text)  # (n, Q, crop_h, crop_w)
            for (y1, y2, x1, x2), s in zip(chunk, sims):
                total[0, :, y1:y2, x1:x2] += s
                count[..., y1:y2, x1:x2] += 1
        return total / count

    # --- scores -> labels ------------------------------------------------------------------------
    def labels(self, scores: torch.Tensor, rules: Protocol | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Query scores [Q, H, W] (all classes) -> ``(labels [H, W] long, confidence [H, W])``, by the
        label rules (logit scale, thresholds) of ``rules`` (default: this segmenter's protocol).

        ``softmax(logit_scale * scores)`` over all queries; a class's probability is the max over its
        queries (the library's default reduction, :func:`gemseg.postprocess.class_probabilities`, as the
        official SCLIP/ClearCLIP/NACLIP code; 0 for a class without queries, e.g. background under
        ``background_query=False``); then the area rule, the argmax, and pixels below ``prob_threshold``
        become background.
        """
        p = rules or self.protocol
        owner = self.query_to_class.to(scores.device)
        scored = torch.unique(owner)  # sorted classes that have queries; the others get probability 0
        cls = scores.new_zeros((self.num_classes, *scores.shape[1:]), dtype=torch.float32)  # (C, H, W)
        cls[scored] = class_probabilities(scores[None], torch.searchsorted(scored, owner), len(scored),
                                          logit_scale=p.logit_scale, reduction="softmax_then_max")[0]
        if p.area_threshold is not None:
            pred = cls.argmax(0)
            fg = pred != self.background
            area = torch.bincount(pred[fg], minlength=self.num_classes)
            keep = area > p.area_threshold * fg.sum()
            keep[self.background] = True
            cls = cls * keep.to(cls.dtype)[:, None, None]
        conf, labels = cls.max(0)
        if p.prob_threshold is not None:
            labels = torch.where(conf < p.prob_threshold, torch.full_like(labels, self.background), labels)
        return labels, conf

    def predict(self, image: np.ndarray, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 RGB [H, W, 3] -> label map [*out_size] (default: the image size), long."""
        return self.labels(self.query_scores(image, out_size or image.shape[:2]))[0]

    def class_scores(self, image: np.ndarray, out_size: tuple[int, int], classes: Sequence[int]) -> torch.Tensor:
        """Scores of some classes only: [len(classes), *out_size], each the max over its queries' cosines."""
        classes = list(classes)
        position = {c: i for i, c in enumerate(classes)}
        rows = [q for q, c in enumerate(self.query_to_class.tolist()) if c in position]
        missing = set(classes) - {int(self.query_to_class[q]) for q in rows}
        if missing:
            raise ValueError(f"classes {sorted(missing)[:5]} were not encoded (not in `active`)")
        sims = self.query_scores(image, out_size, rows)
        owner = [position[int(self.query_to_class[q])] for q in rows]
        return reduce_queries(sims[None], owner, len(classes))[0]
