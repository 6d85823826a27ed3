"""Automatic mask generation: the algorithm of segment-anything's ``SamAutomaticMaskGenerator`` and
sam2's ``SAM2AutomaticMaskGenerator`` (facebookresearch/segment-anything@dca509fe793f and
facebookresearch/sam2@2b90b9f5ceec, ``automatic_mask_generator.py`` and ``utils/amg.py``), written again
on torch tensors over any *prompter* (:class:`Prompter`: a SAM-family model that embeds an image once and
decodes masks from point prompts).

Per crop (the whole image, plus ``crop_n_layers`` layers of overlapping crops): prompt a regular point grid
in batches; keep masks with predicted IoU ``> pred_iou_thresh`` and stability score ``>=
stability_score_thresh`` (IoU of the mask logits thresholded at ``mask_threshold ± stability_score_offset``);
binarize at ``mask_threshold``; drop boxes touching a crop edge that is not an image edge (20 px); box NMS
at ``box_nms_thresh`` by predicted IoU. Across crops: box NMS at ``crop_nms_thresh`` preferring smaller
crops. With ``min_mask_region_area > 0`` (SAM only): each mask's holes, then islands, below that area are
filled / removed (:mod:`.regions`) and a box NMS at ``max(box_nms_thresh, crop_nms_thresh)`` that prefers
unchanged masks removes new duplicates (``postprocess_small_regions``). tests/test_masks_official.py runs
the official generators (segment-anything 1.0, sam2 1.1.0) on the same weights and finds the same masks.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from itertools import product
from typing import Protocol

import numpy as np
import torch

from .base import MaskSet
from .regions import fill_small_regions


@dataclass(frozen=True)
class AMGConfig:
    """Automatic mask generation settings. ``None`` means the model family's official default."""

    points_per_side: int = 32  # both generators' default: a 32 x 32 grid of point prompts
    points_per_batch: int = 64  # both defaults; only memory and speed depend on it
    pred_iou_thresh: float | None = None  # None: 0.88 (SAM), 0.8 (SAM 2) — each generator's default
    stability_score_thresh: float = 0.95  # both defaults
    stability_score_offset: float = 1.0  # both defaults
    mask_threshold: float = 0.0  # SAM's Sam.mask_threshold, SAM 2's mask_threshold default
    box_nms_thresh: float = 0.7  # both defaults
    crop_n_layers: int = 0  # both defaults: the whole image only
    crop_nms_thresh: float = 0.7  # both defaults
    crop_overlap_ratio: float = 512 / 1500  # both defaults
    crop_n_points_downscale_factor: int = 1  # both defaults
    multimask_output: bool = True  # SAM always 3 masks per point; SAM 2's default (CorrCLIP: False)
    dynamic_multimask: bool | None = None  # SAM 2 single-mask output picks a stabler mask; None: the checkpoint's
    # both defaults: 0, no small-region removal; > 0 (SAM only): holes and islands below this many pixels
    # go, then a second NMS (SAM 2's generator hands the value to its predictor's low-res CUDA hole filling
    # instead, which gemseg does not reproduce: refused for SAM 2)
    min_mask_region_area: int = 0

    def __post_init__(self):
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.min_mask_region_area
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"min_mask_region_area must be an integer >= 0 (pixels), got {v!r}")
        if isinstance(self.crop_n_layers, bool) or not isinstance(self.crop_n_layers, int) or self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be an integer >= 0, got {self.crop_n_layers!r}")
        for name in ("stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        if self.pred_iou_thresh is not None and not 0 <= self.pred_iou_thresh <= 1:
            raise ValueError(f"pred_iou_thresh must be in [0, 1] or None, got {self.pred_iou_thresh!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def check_family(self, family: str) -> None:
        """Refuse settings the official generator of ``family`` ("sam" / "sam2") gives another meaning."""
        if family == "sam2" and self.min_mask_region_area > 0:
            raise ValueError("min_mask_region_area is not reproduced for SAM 2 (its generator uses it for its "
                             "predictor's low-resolution hole filling, a CUDA extension); set it to 0 or use a "
                             "SAM (sam-vit-b, ...) checkpoint")


# CorrCLIP's generator when it makes masks at run time (zdk258/CorrCLIP@103bc18213e6:CorrCLIPv1/
# corrclip_segmentor.py:264-272, the same at CorrCLIPv2/corrclip_segmentor.py:361-363): SAM 2 Hiera-L built with
# apply_postprocessing=False (so no dynamic multimask), every other setting the generator's default
# (min_mask_region_area 0, use_m2m False, crop_n_layers 0, box NMS 0.7, output_mode "binary_mask")
CORRCLIP_AMG = AMGConfig(points_per_side=8, pred_iou_thresh=0.4, stability_score_thresh=0.4, multimask_output=False,
                         dynamic_multimask=False)


def amg_settings(value: AMGConfig | dict | None, *, defaults: AMGConfig) -> AMGConfig:
    """``value`` as an :class:`AMGConfig`: itself, ``defaults`` when None, or ``defaults`` with a dict's
    fields replaced (an unknown field name is refused, naming the valid ones)."""
    if value is None:
        return defaults
    if isinstance(value, AMGConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"mask settings must be an AMGConfig or a dict of its fields, got {type(value).__name__}")
    known = [f.name for f in fields(AMGConfig)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown mask generator setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    return replace(defaults, **value)


class Prompter(Protocol):
    """A SAM-family model seen as the generator needs it."""

    family: str  # "sam" or "sam2": which official defaults apply

    def embed(self, image: np.ndarray):
        """RGB uint8 [h, w, 3] -> whatever :meth:`predict` needs (the image embedding)."""

    def predict(self, state, points: torch.Tensor, *, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Point prompts [N, 2] float64 (x, y in pixels of the embedded image) -> mask logits [N, K, h, w] and
        predicted IoUs [N, K]."""


def build_point_grid(n_per_side: int) -> torch.Tensor:
    """[n², 2] (x, y) in [0, 1]: cell centres of an n x n grid, x fastest (utils/amg.py build_point_grid)."""
    offset = 1 / (2 * n_per_side)
    side = torch.from_numpy(np.linspace(offset, 1 - offset, n_per_side))  # float64, as numpy's
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes [x0, y0, x1, y1] and their layer: the image, then (2^(i+1))² overlapping crops per layer i
    (utils/amg.py generate_crop_boxes)."""
    H, W = size
    boxes, layers = [[0, 0, W, H]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * min(H, W) * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + W) / n))
        ch = int(math.ceil((overlap * (n - 1) + H) / n))
        xs = [int((cw - overlap) * j) for j in range(n)]
        ys = [int((ch - overlap) * j) for j in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + cw, W), min(y0 + ch, H)])
            layers.append(i + 1)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """[N, H, W] mask logits -> [N]: |logits > t + o| / |logits > t - o| (utils/amg.py)."""
    inter = (logits > threshold + offset).flatten(1).sum(dim=1)
    union = (logits > threshold - offset).flatten(1).sum(dim=1)
    return inter / union


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N, 4] (x0, y0, x1, y1) inclusive pixel bounds; an empty mask gives zeros
    (utils/amg.py batched_mask_to_box)."""
    N, H, W = masks.shape
    if N == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    ar_h = torch.arange(H, device=masks.device)
    ar_w = torch.arange(W, device=masks.device)
    y1 = (rows * ar_h).max(dim=1).values
    y0 = torch.where(rows, ar_h, H).min(dim=1).values
    x1 = (cols * ar_w).max(dim=1).values
    x0 = torch.where(cols, ar_w, W).min(dim=1).values
    out = torch.stack([x0, y0, x1, y1], dim=1)
    empty = ~rows.any(dim=1)
    return out.masked_fill(empty[:, None], 0)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, highest score first; a box is dropped when its IoU with a
    kept higher-scoring one is ``> iou_threshold`` (torchvision.ops.nms, which the official code calls)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    b = boxes.double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    iou = inter / (area[:, None] + area[None, :] - inter)  # (N, N); 0/0 (two empty boxes) is NaN: not > t
    order = torch.sort(scores, descending=True, stable=True).indices
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for pos, i in enumerate(order.tolist()):
        if not alive[pos]:
            continue
        keep.append(i)
        alive[pos + 1:] &= ~(iou[i, order[pos + 1:]] > iou_threshold)
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def near_crop_edge(boxes: torch.Tensor, crop: list[int], image: list[int], atol: float = 20.0) -> torch.Tensor:
    """[N, 4] boxes in the crop's frame -> [N] bool: a side within ``atol`` px of a crop edge that is not
    an image edge (utils/amg.py is_box_near_crop_edge)."""
    c = torch.tensor(crop, dtype=torch.float, device=boxes.device)
    o = torch.tensor(image, dtype=torch.float, device=boxes.device)
    b = boxes.float() + torch.tensor([crop[0], crop[1], crop[0], crop[1]], dtype=torch.float, device=boxes.device)
    at_crop = torch.isclose(b, c[None], atol=atol, rtol=0)
    at_image = torch.isclose(b, o[None], atol=atol, rtol=0)
    return (at_crop & ~at_image).any(dim=1)


def _process_crop(prompter: Prompter, image: np.ndarray, crop: list[int], grid: torch.Tensor,
                  cfg: AMGConfig, iou_thresh: float) -> dict:
    """Masks of one crop, in the full image's frame (``_process_crop`` + ``_process_batch``)."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = crop
    sub = np.ascontiguousarray(image[y0:y1, x0:x1])
    state = prompter.embed(sub)
    points = grid * torch.tensor([x1 - x0, y1 - y0], dtype=grid.dtype)  # (P, 2) in crop pixels
    keep_m, keep_iou, keep_stab = [], [], []
    for start in range(0, points.shape[0], cfg.points_per_batch):
        batch = points[start:start + cfg.points_per_batch]
        logits, iou = prompter.predict(state, batch, multimask=cfg.multimask_output)  # (n, K, h, w)
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
        if iou_thresh > 0:
            ok = iou > iou_thresh
            logits, iou = logits[ok], iou[ok]
        stab = stability_score(logits, cfg.mask_threshold, cfg.stability_score_offset)
        if cfg.stability_score_thresh > 0:
            ok = stab >= cfg.stability_score_thresh
            logits, iou, stab = logits[ok], iou[ok], stab[ok]
        masks = logits > cfg.mask_threshold
        ok = ~near_crop_edge(masks_to_boxes(masks), crop, [0, 0, W, H])
        keep_m.append(masks[ok])
        keep_iou.append(iou[ok])
        keep_stab.append(stab[ok])
    masks = torch.cat(keep_m)
    iou, stab = torch.cat(keep_iou).float(), torch.cat(keep_stab).float()
    boxes = masks_to_boxes(masks)
    keep = box_nms(boxes, iou, cfg.box_nms_thresh)
    masks, iou, stab, boxes = masks[keep], iou[keep], stab[keep], boxes[keep]
    if (x0, y0, x1, y1) != (0, 0, W, H):  # back to the image frame
        masks = torch.nn.functional.pad(masks, (x0, W - x1, y0, H - y1), value=False)
        boxes = boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)
    area = torch.full((len(iou),), float((x1 - x0) * (y1 - y0)))
    return dict(masks=masks, iou=iou, stability=stab, boxes=boxes, crop_area=area)


@torch.no_grad()
def generate_masks(prompter: Prompter, image: np.ndarray, config: AMGConfig | None = None) -> MaskSet:
    """RGB uint8 image [H, W, 3] -> :class:`MaskSet` (masks [M, H, W], scores = predicted IoU [M]), in the
    order the official generator returns them (after its NMS: highest score first)."""
    cfg = config or AMGConfig()
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        raise ValueError(f"the mask generator takes an RGB uint8 array [H, W, 3], got "
                         f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}")
    cfg.check_family(prompter.family)
    iou_thresh = cfg.pred_iou_thresh if cfg.pred_iou_thresh is not None else (0.88 if prompter.family == "sam" else 0.8)
    boxes, layers = crop_boxes(image.shape[:2], cfg.crop_n_layers, cfg.crop_overlap_ratio)
    grids = [build_point_grid(int(cfg.points_per_side / cfg.crop_n_points_downscale_factor ** i))
             for i in range(cfg.crop_n_layers + 1)]
    parts = [_process_crop(prompter, image, box, grids[layer], cfg, iou_thresh) for box, layer in zip(boxes, layers)]
    data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if len(boxes) > 1:  # duplicates between crops: prefer masks from smaller crops
        keep = box_nms(data["boxes"], 1 / data["crop_area"], cfg.crop_nms_thresh)
        data = {k: v[keep] for k, v in data.items()}
    masks, scores = data["masks"].cpu(), data["iou"].cpu()
    if cfg.min_mask_region_area > 0 and len(masks):
        masks, keep = postprocess_small_regions(masks, cfg.min_mask_region_area,
                                                max(cfg.box_nms_thresh, cfg.crop_nms_thresh))
        scores = scores[keep]
    return MaskSet(masks, scores)


def postprocess_small_regions(masks: torch.Tensor, min_area: int,
                              nms_thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [M, H, W] bool -> (masks [K, H, W], their indices [K] into the input): holes, then islands,
    below ``min_area`` pixels removed from each mask; then box NMS at ``nms_thresh`` with score 1 for
    unchanged and 0 for changed masks, in NMS order (unchanged first), as the official
    ``postprocess_small_regions`` (segment-anything ``automatic_mask_generator.py``)."""
    new, unchanged = [], []
    for m in masks.numpy():
        m, changed = fill_small_regions(m, min_area)
        new.append(torch.from_numpy(m))
        unchanged.append(0.0 if changed else 1.0)
    new = torch.stack(new)
    keep = box_nms(masks_to_boxes(new), torch.tensor(unchanged), nms_thresh)
    return new[keep], keep
