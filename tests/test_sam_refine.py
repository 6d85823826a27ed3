"""Trident's SAM-prompt refinement (refiner "sam-prompts", gemseg.sam_refine) against plain re-implementations
of seg_utils/utils.py split_connected_regions (skimage.measure.label with connectivity 2, torchvision
masks_to_boxes) and of the decision rule of map_refinement_coarse, on a tiny random SAM."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_open_clip_backbone, tiny_vfm
from gemseg import GEMModel, Segmenter
from gemseg.methods.trident import TridentConfig, TridentProxy
from gemseg.sam_refine import connected_regions, region_prompts, sam_prompt_refiner
from test_trident import tiny_sam


def bfs_regions(mask):
    """8-connected components by breadth-first search: a list of sets of (y, x)."""
    H, W = len(mask), len(mask[0])
    seen, out = set(), []
    for y in range(H):
        for x in range(W):
            if not mask[y][x] or (y, x) in seen:
                continue
            comp, todo = set(), [(y, x)]
            seen.add((y, x))
            while todo:
                cy, cx = todo.pop()
                comp.add((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < H and 0 <= nx < W and mask[ny][nx] and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            todo.append((ny, nx))
            out.append(comp)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_connected_regions_match_bfs(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(13, 17, generator=g) > 0.55
    ids = connected_regions(mask)
    ours = sorted(sorted(map(tuple, torch.nonzero(ids == r).tolist())) for r in range(1, int(ids.max()) + 1))
    ref = sorted(sorted(c) for c in bfs_regions(mask.tolist()))
    assert ours == ref
    assert (ids[~mask] == 0).all()


def test_region_prompts_match_plain():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 12, 16, generator=g).softmax(0)
    labels = probs.argmax(0)
    out = region_prompts(labels, probs, coarse_thresh=0.0, minimal_area=3)
    for q in range(3):
        comps = [c for c in bfs_regions((labels == q).tolist()) if len(c) >= 3]
        if not comps:
            assert q not in out
            continue
        regions, boxes, points = out[q]
        got = {tuple(sorted(map(tuple, torch.nonzero(r).tolist()))): (b.tolist(), p.tolist())
               for r, b, p in zip(regions, boxes, points)}
        assert len(got) == len(comps)
        for c in comps:
            ys, xs = [p[0] for p in c], [p[1] for p in c]
            best = max(c, key=lambda p: (probs[q, p[0], p[1]].item(), -(p[0] * 16 + p[1])))
            box, point = got[tuple(sorted(c))]
            assert box == [min(xs), min(ys), max(xs), max(ys)]  # masks_to_boxes: x1, y1, x2, y2 inclusive
            assert point == [best[1], best[0]]  # (x, y) of the highest probability


@pytest.fixture(scope="module")
def model():
    return GEMModel(tiny_open_clip_backbone(), method="trident",
                    proxy=TridentProxy(tiny_vfm("dino"), tiny_sam(), TridentConfig(crop=32, stride=16)))


def test_refiner_through_segmenter(model):
    seg = Segmenter.from_classes(model, ["cat", "dog", "sky"], background=None)
    torch.manual_seed(3)
    x = torch.randn(1, 3, 48, 64)
    coarse = seg.scores(x)
    kwargs = dict(minimal_area=4, coarse_thresh=0.0, iou_thresh=-1.0)  # tiny random SAM: keep every mask
    refined = sam_prompt_refiner(coarse, image=x, model=model, **kwargs)
    assert refined.shape == coarse.shape and torch.isfinite(refined).all()
    changed = (refined != coarse).any(1)  # (B, H, W)
    assert changed.any()
    # a decided pixel's label query stands 0.5 above every coarse score; an undecided one is untouched
    assert torch.allclose(refined.max(1).values[changed], coarse.max(1).values[changed] + 0.5, atol=1e-6)
    same = Segmenter.from_classes(model, ["cat", "dog", "sky"], background=None,
                                  refine=("sam-prompts", kwargs)).scores(x)
    assert torch.equal(same, refined)  # the registered refiner is this function (same kernels, same input)
    none_kept = sam_prompt_refiner(coarse, image=x, model=model, minimal_area=4, coarse_thresh=0.0, iou_thresh=2.0)
    assert torch.equal(none_kept, coarse)  # no mask passes the IoU threshold: nothing changes


def test_refiner_needs_a_sam():
    plain = GEMModel(tiny_open_clip_backbone(), method="clip")
    with pytest.raises(ValueError, match="needs a SAM"):
        sam_prompt_refiner(torch.zeros(1, 2, 8, 8), image=torch.zeros(1, 3, 8, 8), model=plain)
