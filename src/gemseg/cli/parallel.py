"""``gemseg segment`` and ``gemseg heatmap`` under ``torchrun``: each process takes its share of the
images not done yet, writes their folders as a single process would, and rank 0 writes the run-level
files (``run.json``, ``legend.png``, exports) once every rank is done. A plain run is a world of one.

The images to do are listed once, by rank 0, and sent to every rank, so that an image a fast rank
finishes while a slow one is still starting cannot change anyone's share.
"""
from __future__ import annotations

import argparse
import os

from ..io import ImageSource


def main_rank() -> bool:
    """Whether this process is rank 0, from torchrun's ``RANK`` (so before the process group is joined,
    and without torch): what :attr:`gemseg.eval.Dist.is_main` says once it is."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def join(args: argparse.Namespace):
    """Join torchrun's process group (a world of one without torchrun); on CUDA each rank takes the GPU
    of its local rank unless ``--device`` names one. Returns a :class:`gemseg.eval.Dist`."""
    import torch

    from ..eval.distributed import init_from_env

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist = init_from_env(device)
    if dist.world_size > 1 and torch.device(device).type == "cuda" and torch.device(device).index is None:
        args.device = f"cuda:{dist.local_rank}"
    return dist


def share(dist, layout, sources: list[ImageSource], overwrite: bool) -> tuple[list[ImageSource], int]:
    """This rank's images (every ``world_size``-th of those rank 0 finds not done, in input order) and how
    many were skipped as done (counted on rank 0 only, so that the ranks' counts add up)."""
    todo = None
    if dist.is_main:
        todo = [i for i, s in enumerate(sources) if overwrite or not _done(layout, s.key)]
    todo = dist.broadcast(todo)
    skipped = len(sources) - len(todo) if dist.is_main else 0
    return [sources[i] for i in dist.shard(todo)], skipped


def _done(layout, key: str) -> bool:
    """Whether ``key`` is finished; a key the layout refuses is not (its image then fails on its own)."""
    try:
        return layout.is_done(key)
    except ValueError:
        return False


def merge(dist, summary) -> None:
    """Sum every rank's counts into ``summary`` (on every rank): done, skipped, failures; the slowest
    rank's seconds; interrupted if any rank was."""
    parts = dist.gather({"done": summary.done, "skipped": summary.skipped, "failures": summary.failures,
                         "seconds": summary.seconds, "interrupted": summary.interrupted})
    if len(parts) == 1:
        return
    summary.done = sum(p["done"] for p in parts)
    summary.skipped = sum(p["skipped"] for p in parts)
    summary.failures = [tuple(f) for p in parts for f in p["failures"]]
    summary.seconds = max(p["seconds"] for p in parts)
    summary.interrupted = any(p["interrupted"] for p in parts)
