"""A set of class-agnostic binary masks for one image, and its label-map form."""
from __future__ import annotations

from dataclasses import dataclass

import torch


class MaskError(ValueError):
    """One image's masks are missing or bad (no mask file, another size, no masks found): the message names
    the image and the fix; an evaluation skips that image and reports it."""


@dataclass(frozen=True)
class MaskSet:
    """Class-agnostic masks of one image.

    Attributes:
        masks: [M, H, W] bool, one binary mask per object or region (they may overlap).
        scores: [M] float, each mask's quality (SAM's predicted IoU; 1 for masks read from files).
        labels: [H, W] long label map the set was read from (0: no mask), kept so that a published map's
            ids survive unchanged; ``None`` for generated sets (:meth:`label_map` paints one).
    """

    masks: torch.Tensor  # [M, H, W] bool
    scores: torch.Tensor  # [M] float
    labels: torch.Tensor | None = None  # [H, W] long, or None

    def __post_init__(self):
        m, s = self.masks, self.scores
        if not isinstance(m, torch.Tensor) or m.ndim != 3:
            raise ValueError(f"masks must be a [M, H, W] tensor, got {_shape(m)}")
        if m.dtype != torch.bool:
            raise TypeError(f"masks must be bool, got {m.dtype}")
        if not isinstance(s, torch.Tensor) or s.ndim != 1 or s.shape[0] != m.shape[0]:
            raise ValueError(f"scores must be a [M] tensor with M = {m.shape[0]}, got {_shape(s)}")
        if self.labels is not None and tuple(self.labels.shape) != tuple(m.shape[1:]):
            raise ValueError(f"labels must be [H, W] = {list(m.shape[1:])}, got {_shape(self.labels)}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the image the masks belong to."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def label_map(self) -> torch.Tensor:
        """[H, W] long: 0 where no mask is, else a mask id.

        A set read from a label map returns that map. Otherwise the masks are painted in order of
        increasing area with ids 1..M, so a larger mask overwrites the smaller ones it covers: CorrCLIP's
        conversion of SAM 2's masks (zdk258/CorrCLIP@103bc18213e6:CorrCLIPv1/corrclip_segmentor.py:334-341,
        ``sorted(masks, key=area)``, each later mask painted over the earlier ones).
        """
        if self.labels is not None:
            return self.labels.long()
        H, W = self.size
        out = torch.zeros(H, W, dtype=torch.long, device=self.masks.device)
        areas = self.masks.flatten(1).sum(dim=1)  # (M,)
        order = torch.sort(areas, stable=True).indices  # Python's sorted() is stable too
        for i, idx in enumerate(order.tolist(), start=1):
            out[self.masks[idx]] = i
        return out

    @classmethod
    def from_label_map(cls, labels: torch.Tensor) -> "MaskSet":
        """A label map [H, W] (integers; 0 = no mask) -> one mask per other value, in increasing value."""
        if not isinstance(labels, torch.Tensor) or labels.ndim != 2:
            raise ValueError(f"a label map must be a [H, W] tensor, got {_shape(labels)}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"a label map must hold integers, got {labels.dtype}")
        labels = labels.long()
        values = [v for v in torch.unique(labels).tolist() if v != 0]
        masks = (torch.stack([labels == v for v in values]) if values
                 else torch.zeros(0, *labels.shape, dtype=torch.bool, device=labels.device))
        return cls(masks, torch.ones(len(values), device=labels.device), labels)

    def to(self, device) -> "MaskSet":
        labels = None if self.labels is None else self.labels.to(device)
        return MaskSet(self.masks.to(device), self.scores.to(device), labels)


def _shape(x) -> str:
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def resize_label_map(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[..., h, w] integer label map -> [..., H, W], nearest neighbour as ``F.interpolate(mode="nearest")``
    (CorrCLIP resizes its masks to the model input this way, corrclip_segmentor.py:194)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    lead = labels.shape[:-2]
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).double()  # doubles hold every int32 id exactly
    out = torch.nn.functional.interpolate(flat, size=tuple(size), mode="nearest")
    return out.reshape(*lead, *size).to(labels.dtype)
