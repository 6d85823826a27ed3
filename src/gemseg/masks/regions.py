"""Small-region removal of segment-anything's ``min_mask_region_area`` (``utils/amg.py
remove_small_regions``, facebookresearch/segment-anything@dca509fe793f), on numpy alone: 8-connected
components of a binary mask, holes (components of its complement) smaller than the area filled, then
islands (its own components) smaller than the area removed, keeping the largest when every island is small.

The official code labels with OpenCV (``cv2.connectedComponentsWithStats(mask, 8)``); gemseg labels runs
of pixels instead (no OpenCV dependency): each row's runs, joined to the runs of the next row they touch
(columns within one pixel: 8-connectivity), merged by propagating the smallest run index, and numbered in
OpenCV's order (by the first 2 x 2 pixel block they occupy), on which "the largest island" of a mask whose
islands are all small depends when two tie.
"""
from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[H, W] bool -> rows, starts, ends (exclusive) of its runs of True, in raster order (each [R])."""
    H, W = mask.shape
    padded = np.zeros((H, W + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)  # (H, W + 1): +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _components_of_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Runs [R] -> [R] component index 0..n-1 of each run (OpenCV's numbering, below)."""
    R = len(rows)
    if R == 0:
        return np.zeros(0, np.int64)
    stride = width + 2  # keys row * stride + column order the runs as they are stored
    start_key, end_key = rows * stride + starts, rows * stride + ends
    # runs of the next row that touch run i: end >= start_i and start <= end_i (ends exclusive, 8-connected)
    lo = np.searchsorted(end_key, (rows + 1) * stride + starts, side="left")
    hi = np.searchsorted(start_key, (rows + 1) * stride + ends, side="right")
    n = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(R), n)
    b = np.repeat(lo, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    label = np.arange(R)
    while True:  # each run takes the smallest label of its neighbours, then its label's label
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    # number the components as OpenCV does: by the first 2 x 2 block (block rows, then block columns) that
    # holds one of their pixels (its 8-connected labelling scans such blocks; one block meets at most one
    # component, as its four pixels all touch)
    block = (rows // 2) * stride + starts // 2  # (R,) the first block of each run
    roots, index = np.unique(label, return_inverse=True)  # component of each run, by its smallest run
    first = np.full(len(roots), np.iinfo(np.int64).max)
    np.minimum.at(first, index.reshape(-1), block)
    rank = np.empty(len(roots), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(roots))
    return rank[index.reshape(-1)]


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a mask [H, W] bool -> labels [H, W] int64 (0 outside the mask, 1..n in
    the order of ``cv2.connectedComponentsWithStats(mask, 8)``) and sizes [n] int64 (pixels per component)."""
    mask = np.asarray(mask, dtype=bool)
    rows, starts, ends = _runs(mask)
    comp = _components_of_runs(rows, starts, ends, mask.shape[1])
    sizes = np.bincount(comp, weights=ends - starts).astype(np.int64) if len(comp) else np.zeros(0, np.int64)
    H, W = mask.shape
    edges = np.zeros((H, W + 1), np.int64)  # runs are disjoint: +id where one starts, -id past its end
    np.add.at(edges, (rows, starts), comp + 1)
    np.add.at(edges, (rows, ends), -(comp + 1))
    return np.cumsum(edges, axis=1)[:, :W], sizes


def _paint(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Runs -> [H, W] bool mask covering them."""
    H, W = shape
    edges = np.zeros((H, W + 1), np.int32)
    np.add.at(edges, (rows, starts), 1)
    np.add.at(edges, (rows, ends), -1)
    return np.cumsum(edges, axis=1)[:, :W] > 0


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """``mode="holes"``: components of ``~mask`` [H, W] with fewer than ``area_thresh`` pixels join the mask
    (the outer background too, when it is that small); ``"islands"``: the mask's components that small
    leave it, unless all are, then the largest stays. Returns the mask and whether any region was that
    small (the official ``changed``: then the mask is rebuilt even if it comes out equal)."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    holes = mode == "holes"
    rows, starts, ends = _runs(~mask if holes else mask)
    comp = _components_of_runs(rows, starts, ends, mask.shape[1])
    if len(comp) == 0:
        return mask, False
    sizes = np.bincount(comp, weights=ends - starts)  # (n,)
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        pick = small[comp]
        return mask | _paint(mask.shape, rows[pick], starts[pick], ends[pick]), True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(sizes))] = True  # every island is small: the largest (OpenCV's first on a tie) stays
    pick = keep[comp]
    return _paint(mask.shape, rows[pick], starts[pick], ends[pick]), True


def fill_small_regions(mask: np.ndarray, min_area: float) -> tuple[np.ndarray, bool]:
    """The official post-processing of one mask [H, W] bool: holes, then islands, below ``min_area``
    pixels (``postprocess_small_regions``). Returns the new mask and whether either step changed it."""
    mask, filled = remove_small_regions(mask, min_area, "holes")
    mask, removed = remove_small_regions(mask, min_area, "islands")
    return mask, filled or removed
