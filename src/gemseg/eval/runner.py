"""``evaluate``: run a model over a dataset under a protocol, data-parallel and resumable, and report.

Counting is per label type (:mod:`.counting`); :func:`count_images` is the resumable, data-parallel
loop that sums what a counter adds per image; :func:`evaluate` turns the totals into the report.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .counting import DenseCounter, PointsCounter
from .datasets import DatasetSpec, DenseDataset
from .distributed import Dist
from .loading import load_items
from .pointwise import PointsDataset
from .protocols import Protocol
from .report import RESULT_VERSION, device_description, model_description, software_versions, write_reports
from .state import RunState, StateError


def open_dataset(spec: DatasetSpec, root: str | os.PathLike, *, limit: int | None = None):
    """The :class:`DenseDataset` or :class:`PointsDataset` of ``spec`` under ``root``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return (DenseDataset if spec.type == "dense" else PointsDataset)(spec, root, limit=limit)


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@dataclass
class Counts:
    """What :func:`count_images` returns (the same on every rank)."""

    totals: dict[str, torch.Tensor]  # the counts summed over every image of the selection (CPU int64)
    images: int  # images counted in this session, all ranks together
    resumed: int  # images counted by earlier sessions
    seconds: float  # this session's counting time (the slowest rank)
    failed: tuple[tuple[str, str], ...] = ()  # (image id, reason) skipped for bad masks (this rank's)
    num_failed: int = 0  # images skipped, all ranks together (a later run retries them)


def _prepare_state(state: RunState, settings: dict, dist: Dist, restart: bool):
    """``(session, done image ids, prior counts)`` of the run state, prepared by rank 0 and shared; the
    prior counts (earlier sessions') are rank 0's only."""
    shared, prior = None, {}
    if dist.is_main:
        try:
            session, done, prior = state.prepare(settings, restart=restart)
            shared = (session, done, None)
        except (StateError, OSError) as e:
            shared = (None, None, str(e))
    session, done, error = dist.broadcast(shared)
    if error:
        raise StateError(error)
    return session, done, prior


def count_images(counter, dataset, ids: Sequence[str], settings: dict, *, out_dir: str | os.PathLike,
                 dist: Dist | None = None, save_every: int = 20, num_workers: int = 0, restart: bool = False,
                 progress: bool = True, desc: str = "", on_image: Callable[[str], None] | None = None) -> Counts:
    """Sum ``counter.count(image_id, image, target)`` over ``ids``, data-parallel and resumable.

    Each rank of ``dist`` takes its shard of the images not yet done; per-image counts are accumulated,
    saved to ``out_dir/state`` every ``save_every`` images and at the end (atomically), and summed over
    ranks. Running again with the same ``settings`` resumes: finished images are neither recounted nor
    lost; other settings raise :class:`StateError` unless ``restart``.

    Args:
        counter: has ``count(image_id, image, target) -> {key: int64 tensor}`` and ``zeros()`` (the
            same keys and shapes, all zero).
        dataset: has ``load(image_id) -> (image, target)``.
    """
    dist = dist or Dist()
    state = RunState(out_dir)
    session, done, prior = _prepare_state(state, settings, dist, restart)
    extra = done.difference(ids)
    if extra:
        raise StateError(f"{out_dir} already counted {len(extra)} images outside this selection "
                           f"(e.g. {sorted(extra)[0]}); use the same --limit or --restart")
    todo = [i for i in ids if i not in done]
    shard = dist.shard(todo)
    writer = state.writer(session, dist.rank)
    bar = None
    if progress and dist.is_main and shard:
        from tqdm import tqdm

        bar = tqdm(total=len(shard), unit="img", desc=f"{desc} rank 0/{dist.world_size}", dynamic_ncols=True)
    start = time.perf_counter()
    items = load_items(dataset, shard, num_workers=num_workers)
    from ..masks import MaskError

    failed: list[tuple[str, str]] = []
    try:
        for image_id, image, target in items:
            try:
                counts = counter.count(image_id, image, target)
            except MaskError as e:  # one image's masks are missing or bad: skip it, say so, keep going
                failed.append((image_id, str(e)))
                warnings.warn(f"{image_id}: skipped: {e}", stacklevel=2)
                if bar is not None:
                    bar.update(1)
                continue
            writer.add(image_id, counts)
            if writer.unsaved >= save_every:
                writer.save()
            if bar is not None:
                bar.update(1)
            if on_image is not None:
                on_image(image_id)
    finally:
        items.close()  # the loading workers stop here, however the loop ended (error, Ctrl-C, SIGTERM)
        writer.save()  # an interrupted session keeps every image it finished
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start

    totals = {}
    for key, zero in counter.zeros().items():
        mine = writer.counts.get(key, zero)
        if dist.is_main and key in prior:
            mine = mine + prior[key]
        totals[key] = dist.sum(mine)
    counted = int(dist.sum(torch.tensor([len(writer.ids)]))[0]) + len(done)
    num_failed = int(dist.sum(torch.tensor([len(failed)]))[0])
    if counted + num_failed != len(ids):
        raise StateError(f"counted {counted} images of {len(ids)}; the run state in {out_dir} is inconsistent")
    return Counts(totals=totals, images=len(todo) - num_failed, resumed=len(done), seconds=dist.max(seconds),
                  failed=tuple(failed), num_failed=num_failed)


def run_settings(spec: DatasetSpec, root: str | os.PathLike, protocol: Protocol, model, class_names,
                 refine=None) -> dict:
    """What a run's state is keyed on: a resumed run must match it exactly (``refine`` only when given)."""
    settings = {"dataset": spec.name, "root": str(Path(root).resolve()), "protocol": protocol.to_dict(),
                "model": model_description(model), "classes": _digest(list(class_names))}
    return {**settings, "refine": refiner_names(refine)} if refine else settings


def refiner_names(refine) -> list[str]:
    """The names of the refiners ``refine`` asks for, after the protocol's (see :mod:`gemseg.refiners`)."""
    from ..refiners import resolve_refiners

    return [name for name, _ in resolve_refiners(refine)]


def evaluate(model, spec: DatasetSpec, root: str | os.PathLike, protocol: Protocol, *, out_dir: str | os.PathLike,
             limit: int | None = None, protocol_source: dict[str, str] | None = None, dist: Dist | None = None,
             save_preds: int = 0, save_every: int = 20, num_workers: int = 0, crop_batch: int = 8,
             restart: bool = False, progress: bool = True, on_image: Callable[[str], None] | None = None,
             text_cache: dict | None = None, refine=None) -> dict:
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
        text_cache: text embeddings shared with other runs of the same backbone (see :class:`gemseg.Segmenter`).
        refine: refiners run after the protocol's (PAMR): names, callables or ``(name, {settings})``
            (:mod:`gemseg.refiners`); recorded in the run settings and the result as ``refine``.
    Returns:
        The result dict (the content of ``result.json``), on every rank.
    """
    dist = dist or Dist()
    protocol.check_dataset(spec)
    dataset = open_dataset(spec, root, limit=limit)
    ids = dataset.ids
    if spec.type == "dense":
        counter = DenseCounter(model, spec, protocol, crop_batch=crop_batch, text_cache=text_cache,
                               out_dir=out_dir, save_preds=ids[:save_preds], refine=refine)
    else:
        counter = PointsCounter(model, dataset, protocol, ids, crop_batch=crop_batch, text_cache=text_cache,
                                refine=refine)
    counts = count_images(counter, dataset, ids, run_settings(spec, root, protocol, model, counter.class_names, refine),
                          out_dir=out_dir, dist=dist, save_every=save_every, num_workers=num_workers,
                          restart=restart, progress=progress, desc=spec.name, on_image=on_image)
    result = {
        "version": RESULT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset_description(spec, root, len(ids), limit, len(counter.class_names)),
        "protocol": protocol.to_dict(),
        "protocol_source": protocol_source or {},
        **({"refine": refiner_names(refine)} if refine else {}),
        "model": model_description(model),
        "metrics": counter.metrics(counts.totals),
        "speed": _kept_speed(out_dir, counts) or speed_description(counts, dist, model),
        **({"failed": [{"image": i, "reason": r} for i, r in counts.failed]} if counts.num_failed else {}),
        "software": software_versions(),
    }
    if spec.type != "dense":
        result["dataset"]["unsure_points_in_csv"] = dataset.unsure_points  # dropped, never scored
    if dist.is_main:
        write_reports(out_dir, result)
    dist.barrier()
    return result


def dataset_description(spec: DatasetSpec, root, num_images: int, limit: int | None, num_classes: int) -> dict:
    return {"name": spec.name, "title": spec.title, "type": spec.type, "metadata": spec.path,
            "root": str(Path(root).resolve()), "num_images": num_images, "limit": limit, "num_classes": num_classes}


def _kept_speed(out_dir, counts: Counts) -> dict | None:
    """The speed of the earlier session when this one counted no image (a re-run of a finished run):
    its measured images/s stay in result.json instead of becoming null."""
    if counts.images:
        return None
    try:
        with open(Path(out_dir) / "result.json", encoding="utf-8") as f:
            speed = json.load(f).get("speed") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if speed.get("images_per_s") is None:
        return None
    return {**speed, "resumed_images": counts.resumed, "measured_earlier": True}


def speed_description(counts: Counts, dist: Dist, model) -> dict:
    images, seconds = counts.images, counts.seconds
    return {"images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 3) if images and seconds > 0 else None,
            "world_size": dist.world_size, "device": device_description(model.device),
            "resumed_images": counts.resumed, "failed_images": counts.num_failed}
