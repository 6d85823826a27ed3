"""Trident's SAM-prompt refinement (YuHengsss/Trident ``seg_utils/utils.py: sam_refinement``), as the refiner
``"sam-prompts"`` (:mod:`gemseg.refiners`).

From the coarse map, at half resolution: every connected region (8-connectivity) of each query's label that
has at least ``minimal_area`` pixels, and whose query reaches ``coarse_thresh`` somewhere, gives SAM one
prompt: its box, the point of its highest probability and, shared by the query's regions, the query's
probability map (values above ``coarse_thresh`` times ``mask_coeff``) as a mask prompt. A SAM mask whose
predicted IoU exceeds ``iou_thresh`` is kept; each query's refined probability is the highest
``sigmoid(SAM logits) * probability`` over its kept masks, inside their union. A pixel some kept mask covers
takes the query with the highest refined probability; every other pixel keeps its coarse label.

As a refiner it returns scores whose labels are those: a refined pixel's label query is raised to
``max(scores) + margin`` (ours; the official code returns the labels directly and applies no threshold to
them, and a margin of 0.5 cosine puts any label rule's probability above every threshold for fewer than
about 10⁸ queries at logit scale 40).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .backbones.sam import SamEncoder, preprocess_shape


def connected_regions(mask: torch.Tensor) -> torch.Tensor:
    """Binary mask [H, W] -> region ids [H, W] (0: outside; 8-connectivity), by propagating the largest id
    through 3 x 3 neighbourhoods until nothing changes."""
    H, W = mask.shape
    ids = torch.where(mask, torch.arange(1, H * W + 1, dtype=torch.float32).view(H, W), torch.zeros(H, W))
    while True:
        grown = F.max_pool2d(ids[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, ids):
            break
        ids = grown
    _, dense = torch.unique(ids, return_inverse=True)
    return dense if not mask.all() else dense + 1  # ids 1.. in order of the largest pixel index; 0 outside


def region_prompts(labels: torch.Tensor, probs: torch.Tensor, *, coarse_thresh: float, minimal_area: int) -> dict:
    """``split_connected_regions``: labels [h, w] and probabilities [Q, h, w] -> ``{query: (regions [R, h, w]
    bool, boxes [R, 4] (x1, y1, x2, y2), points [R, 2] (x, y))}``."""
    out = {}
    for q in range(probs.shape[0]):
        if probs[q].max() < coarse_thresh:
            continue
        ids = connected_regions(labels == q)
        regions, points = [], []
        for r in range(1, int(ids.max()) + 1):
            region = ids == r
            if region.sum() < minimal_area:
                continue
            flat = torch.argmax(probs[q] * region).item()
            points.append(torch.tensor([flat % probs.shape[-1], flat // probs.shape[-1]], dtype=torch.float32))
            regions.append(region)
        if regions:
            regions = torch.stack(regions)
            ys, xs = [torch.stack([torch.nonzero(m.any(d))[[0, -1], 0] for m in regions]) for d in (1, 0)]
            boxes = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1).float()  # masks_to_boxes
            out[q] = (regions, boxes, torch.stack(points))
    return out


def _sam_masks(sam: SamEncoder, embeddings, prob, boxes, points, frame, size, *, coarse_thresh, mask_coeff):
    """One query's prompts -> (SAM logits [R, *size] at the output size, predicted IoU [R]); ``frame``: the
    image's part of SAM's input, ``size``: the output size (the image's)."""
    S, low = sam.image_size, 4 * (sam.image_size // sam.patch_size)  # mask prompts: 4 x the grid (256)
    h, w = preprocess_shape(*size, low)  # the image's frame at the mask prompt's size
    m = F.interpolate(prob[None, None], size=(h, w), mode="bilinear", align_corners=False)
    m = F.pad(m, (0, low - w, 0, low - h))
    m = torch.where(m > coarse_thresh, mask_coeff * m, torch.zeros_like(m))  # (1, 1, low, low)
    fh, fw = preprocess_shape(*prob.shape, S)  # apply_coords/apply_boxes: the half-size map's frame -> SAM's
    scale = torch.tensor([fw / prob.shape[1], fh / prob.shape[0]])
    out = sam.model(image_embeddings=embeddings, input_points=(points * scale)[None, :, None],
                    input_labels=torch.ones(1, len(points), 1, dtype=torch.long),
                    input_boxes=(boxes * scale.repeat(2))[None], input_masks=m, multimask_output=False)
    logits = out.pred_masks[0, :, 0]  # (R, low, low)
    logits = F.interpolate(logits[:, None], size=(S, S), mode="bilinear", align_corners=False)
    logits = logits[..., : frame[0], : frame[1]]  # postprocess_masks: the image's part of SAM's input
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0]
    return logits, out.iou_scores[0, :, 0]


def sam_refine_labels(probs: torch.Tensor, labels: torch.Tensor, sam: SamEncoder, rgb: torch.Tensor, *,
                      coarse_thresh: float = 0.2, minimal_area: int = 225, mask_coeff: float = 0.005,
                      iou_thresh: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: probabilities [Q, H, W], labels [H, W] and RGB in [0, 1] [1, 3, h, w] -> refined labels
    [H, W] and a bool map [H, W] of the pixels a kept SAM mask decided."""
    Q, H, W = probs.shape
    dh, dw = H // 2, W // 2  # down_ratio = 2
    lab = F.interpolate(labels[None, None].float(), size=(dh, dw), mode="nearest")[0, 0].long()
    pr = F.interpolate(probs[None], size=(dh, dw), mode="bilinear", align_corners=False)[0]
    if coarse_thresh > 0:
        lab[pr.max(0).values < coarse_thresh] = Q  # no query: not split
    embeddings = sam.model.get_image_embeddings(sam.prepare(rgb))
    frame = sam.input_shape(*rgb.shape[-2:])
    refined = probs.new_zeros(Q, H, W)
    for q, (_, boxes, points) in region_prompts(lab, pr, coarse_thresh=coarse_thresh, minimal_area=minimal_area).items():
        logits, iou = _sam_masks(sam, embeddings, pr[q], boxes, points, frame, (H, W), coarse_thresh=coarse_thresh,
                                 mask_coeff=mask_coeff)
        keep = iou > iou_thresh
        if keep.any():
            union = (logits[keep] > 0).any(0)
            refined[q] = (logits[keep].sigmoid() * probs[q]).max(0).values * union
    decided = refined.sum(0) > 0
    return torch.where(decided, refined.argmax(0), labels), decided


def sam_prompt_refiner(scores: torch.Tensor, *, image: torch.Tensor, model=None, sam: SamEncoder | None = None,
                       logit_scale: float = 40.0, coarse_thresh: float = 0.2, minimal_area: int = 225,
                       mask_coeff: float = 0.005, iou_thresh: float = 0.8, margin: float = 0.5) -> torch.Tensor:
    """Refiner ``"sam-prompts"``: scores [B, Q, H, W] -> scores whose argmax follows SAM's masks (see the
    module docstring). SAM is ``sam`` or, for ``method="trident"``, the model's own (``model.proxy.sam``).
    Defaults (YuHengsss/Trident@a93b346d1b1d): ``logit_scale`` trident.py:30, ``coarse_thresh``
    configs/base_config.py:18 (per dataset: gemseg.eval.presets_masks.TRIDENT_METHOD_SETTINGS), ``minimal_area`` :19,
    ``iou_thresh`` :17, ``mask_coeff`` trident.py:33 ``sam_mask_coff``; ``margin`` is ours."""
    sam = sam if sam is not None else getattr(getattr(model, "proxy", None), "sam", None)
    if not isinstance(sam, SamEncoder):
        raise ValueError("refiner 'sam-prompts' needs a SAM: use method='trident' or pass "
                         "refine=('sam-prompts', {'sam': gemseg.backbones.sam.create_sam('sam-vit-b')})")
    pre = model.backbone.preprocess
    mean = torch.tensor(pre.mean, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=image.device).view(1, 3, 1, 1)
    out = scores.clone()
    with torch.no_grad():
        for b in range(scores.shape[0]):
            probs = (logit_scale * scores[b]).softmax(0)  # (Q, H, W)
            rgb = image[b: b + 1].float() * std + mean
            rgb = F.interpolate(rgb, size=tuple(-(-s // 16) * 16 for s in rgb.shape[-2:]), mode="bilinear",
                                align_corners=False)  # the image SAM saw (sides rounded up to 16)
            labels, decided = sam_refine_labels(probs, probs.argmax(0), sam, rgb, coarse_thresh=coarse_thresh,
                                                minimal_area=minimal_area, mask_coeff=mask_coeff, iou_thresh=iou_thresh)
            top = scores[b].max(0).values + margin  # (H, W)
            boost = F.one_hot(labels, scores.shape[1]).permute(2, 0, 1).bool() & decided
            out[b] = torch.where(boost, top.expand_as(scores[b]), scores[b])
    return out
