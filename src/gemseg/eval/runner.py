"""``evaluate``: run a model over a dataset under a protocol, data-parallel and resumable, and report."""
from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .datasets import DatasetSpec, DenseDataset
from .distributed import Dist
from .inference import Segmenter, class_queries
from .metrics import confusion_matrix, pointwise_metrics, segmentation_metrics
from .pointwise import PointsDataset, score_points
from .protocols import Protocol
from .report import RESULT_VERSION, device_description, model_description, software_versions, write_reports
from .state import RunState, StateError
from .visualize import save_label_png, save_visualization


def open_dataset(spec: DatasetSpec, root: str | os.PathLike, *, limit: int | None = None):
    """The :class:`DenseDataset` or :class:`PointsDataset` of ``spec`` under ``root``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return (DenseDataset if spec.type == "dense" else PointsDataset)(spec, root, limit=limit)


class _Items(Dataset):
    def __init__(self, dataset, ids):
        self.dataset, self.ids = dataset, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return (self.ids[i], *self.dataset.load(self.ids[i]))


def _identity(item):
    return item


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def evaluate(model, spec: DatasetSpec, root: str | os.PathLike, protocol: Protocol, *, out_dir: str | os.PathLike,
             limit: int | None = None, protocol_source: dict[str, str] | None = None, dist: Dist | None = None,
             save_preds: int = 0, save_every: int = 20, num_workers: int = 0, crop_batch: int = 8,
             restart: bool = False, progress: bool = True, on_image: Callable[[str], None] | None = None,
             text_cache: dict | None = None) -> dict:
    """Evaluate ``model`` on ``spec``'s images under ``root`` and write ``result.json``/``result.md``.

    Each rank of ``dist`` takes its shard of the images not yet done; per-image counts (a confusion
    matrix, or point counts) are accumulated, saved to ``out_dir/state`` every ``save_every`` images
    and at the end, summed over ranks and turned into metrics once. Running again with the same
    settings resumes: finished images are neither recounted nor lost.

    Args:
        limit: the first ``limit`` images only (quick checks).
        save_preds: save the predicted label maps and visualizations of the first K images.
        num_workers: image-loading worker processes per rank.
        crop_batch: sliding-window crops per forward pass.
        restart: discard the state of an earlier run in ``out_dir``.
        on_image: called with each image id once it is counted.
        text_cache: text embeddings shared with other runs of the same backbone (see :class:`Segmenter`).
    Returns:
        The result dict (the content of ``result.json``), on every rank.
    """
    dist = dist or Dist()
    protocol.check_dataset(spec)
    dataset = open_dataset(spec, root, limit=limit)
    ids = dataset.ids
    dense = spec.type == "dense"
    class_names = spec.class_names if dense else dataset.class_names
    settings = {"dataset": spec.name, "root": str(Path(root).resolve()), "protocol": protocol.to_dict(),
                "model": model_description(model), "classes": _digest(class_names)}
    state = RunState(out_dir)
    shared = None
    prior: dict[str, torch.Tensor] = {}
    if dist.is_main:
        try:
            session, done, prior = state.prepare(settings, restart=restart)
            shared = (session, done, None)
        except (StateError, OSError) as e:
            shared = (None, None, str(e))
    session, done, error = dist.broadcast(shared)
    if error:
        raise StateError(error)
    extra = done.difference(ids)
    if extra:
        raise StateError(f"{out_dir} already counted {len(extra)} images outside this selection "
                           f"(e.g. {sorted(extra)[0]}); use the same --limit or --restart")
    todo = [i for i in ids if i not in done]
    shard = dist.shard(todo)
    first_k = set(ids[:save_preds])

    if dense:
        seg = Segmenter(model, protocol, class_queries(spec, protocol), background=spec.background,
                        crop_batch=crop_batch, text_cache=text_cache)
    else:
        seg = Segmenter(model, protocol, [c for c in dataset.classes], active=dataset.classes_in(ids),
                        crop_batch=crop_batch, text_cache=text_cache)
    writer = state.writer(session, dist.rank)
    loader = DataLoader(_Items(dataset, shard), batch_size=None, collate_fn=_identity, num_workers=num_workers)
    bar = None
    if progress and dist.is_main and shard:
        from tqdm import tqdm

        bar = tqdm(total=len(shard), unit="img", desc=f"{spec.name} rank 0/{dist.world_size}", dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for image_id, image, target in loader:
            if dense:
                pred = seg.predict(image, target.shape)
                counts = {"confusion": confusion_matrix(pred, torch.from_numpy(target).to(pred.device),
                                                        spec.num_classes, ignore_index=spec.ignore_index)}
                if image_id in first_k:
                    _save_example(Path(out_dir), image_id, image, target, pred.cpu().numpy(), spec)
            else:
                classes = sorted(set(target.classes.tolist()))
                scores = seg.class_scores(image, image.shape[:2], classes)
                counts = score_points(scores, classes, target, len(class_names), threshold=protocol.point_threshold,
                                      normalize=protocol.point_normalize)
            writer.add(image_id, counts)
            if writer.unsaved >= save_every:
                writer.save()
            if bar is not None:
                bar.update(1)
            if on_image is not None:
                on_image(image_id)
    finally:
        writer.save()  # an interrupted session keeps every image it finished
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start

    keys = ("confusion",) if dense else ("tp", "fp", "fn", "tn")
    totals = {}
    for key in keys:
        mine = writer.counts.get(key)
        if mine is None:
            size = (spec.num_classes,) * 2 if dense else (len(class_names),)
            mine = torch.zeros(size, dtype=torch.long)
        if dist.is_main and key in prior:
            mine = mine + prior[key]
        totals[key] = dist.sum(mine)
    counted = int(dist.sum(torch.tensor([len(writer.ids)]))[0]) + len(done)
    if counted != len(ids):
        raise StateError(f"counted {counted} images of {len(ids)}; the run state in {out_dir} is inconsistent")
    session_images = len(todo)
    seconds = dist.max(seconds)
    if dense:
        metrics = segmentation_metrics(totals["confusion"], class_names)
    else:
        metrics = pointwise_metrics(totals, class_names)
    result = {
        "version": RESULT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": spec.name, "title": spec.title, "type": spec.type, "metadata": spec.path,
                    "root": str(Path(root).resolve()), "num_images": len(ids), "limit": limit,
                    "num_classes": len(class_names)},
        "protocol": protocol.to_dict(),
        "protocol_source": protocol_source or {},
        "model": model_description(model),
        "metrics": metrics,
        "speed": {"images": session_images, "seconds": round(seconds, 3),
                  "images_per_s": round(session_images / seconds, 3) if session_images and seconds > 0 else None,
                  "world_size": dist.world_size, "device": device_description(model.device),
                  "resumed_images": len(done)},
        "software": software_versions(),
    }
    if not dense:
        result["dataset"]["unsure_points_in_csv"] = dataset.unsure_points  # dropped, never scored
    if dist.is_main:
        write_reports(out_dir, result)
    dist.barrier()
    return result


def _save_example(out: Path, image_id: str, image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                  spec: DatasetSpec) -> None:
    save_label_png(out / "preds" / f"{image_id}.png", pred, spec.palette)
    save_visualization(out / "vis" / f"{image_id}.png", image, gt, pred, spec.palette, ignore_index=spec.ignore_index)
