"""One-pass post-processing sweeps: every combination of label-rule settings scored from one model pass
per image.

The forward pass (and sliding windows, PAMR) gives an image's query scores once; the label rules that
:meth:`gemseg.Segmenter.labels` reads (``logit_scale``, ``area_threshold``, ``prob_threshold``) are cheap and
are applied to those scores for every combination, each adding to its own confusion matrix. The
images run through :func:`~gemseg.eval.runner.count_images`, so a sweep resumes and runs under
``torchrun`` exactly as ``gemseg eval``. With ``holdout`` a deterministic part of the images is held
out: the best combination is chosen on the others and reported on the held-out part, so a threshold
is not tuned on the images it is reported on. The table and plot are written by :mod:`.sweep_report`.
See docs/evaluation.md ("Post-processing sweeps").
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..segmenter import Segmenter
from .datasets import DatasetSpec
from .distributed import Dist
from .protocols import Protocol
from .runner import count_images, open_dataset, run_settings

SWEEPABLE = ("logit_scale", "prob_threshold", "area_threshold")  # the label rules: no new model pass
_OPTIONAL = ("prob_threshold", "area_threshold")  # settings that may be none (off)


ABLATABLE = ("depth", "iterations", "temperature", "projections", "l2", "mlp")  # what `gemseg ablate` varies


def _instead(name: str) -> str:
    """What to run instead of sweeping ``name``, which needs a model pass per value."""
    if name in ABLATABLE:
        return f"`gemseg ablate --grid {name}=A,B` runs one evaluation per value"
    flag = "--" + name.replace("_", "-")
    return f"run one `gemseg eval` per value ({flag} A, then {flag} B, each with its own --out)"


def parse_sweep(items: Sequence[str]) -> dict[str, list]:
    """``["prob_threshold=0:0.95:0.05", "logit_scale=40,50,65", "area_threshold=none,0.1"]`` -> the grid
    ``{setting: [values]}``, in the order given.

    A value list is ``start:stop:step`` (``stop`` included when it falls on the grid), comma-separated
    values, or both mixed (``none,0.1:0.3:0.1``); ``none`` turns a threshold off. Flag spellings
    (``prob-threshold``) are accepted.
    Raises:
        ValueError: bad syntax, a repeated setting or value, or a setting that needs another model pass.
    """
    grid: dict[str, list] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not text.strip():
            raise ValueError(f"--sweep {item!r}: write SETTING=VALUES, e.g. prob_threshold=0:0.95:0.05 or "
                             "logit_scale=40,50,65")
        if name not in SWEEPABLE:
            model_pass = {f.name for f in dataclasses.fields(Protocol)} | {"method", "depth", "iterations", "temperature",
                                                                            "projections"}
            if name in model_pass:
                raise ValueError(f"--sweep {name}: {name} changes the model pass, so it cannot be swept from one "
                                 f"pass (only {', '.join(SWEEPABLE)} can); {_instead(name)}")
            raise ValueError(f"--sweep {name}: unknown setting; the sweepable settings are {', '.join(SWEEPABLE)}")
        if name in grid:
            raise ValueError(f"--sweep {name} is given twice; put all its values in one list")
        values: list = []
        for part in text.split(","):
            values += _parse_part(name, part.strip())
        if len(set(values)) != len(values):
            raise ValueError(f"--sweep {name}={text}: a value is repeated")
        grid[name] = values
    if not grid:
        raise ValueError("--sweep needs at least one SETTING=VALUES")
    return grid


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--sweep {name}: {text!r} is not a number" +
                         (" or none" if name in _OPTIONAL else "")) from None
    if not math.isfinite(value):
        raise ValueError(f"--sweep {name}: {text!r} is not a finite number")
    return value


def _parse_part(name: str, text: str) -> list:
    if text.lower() == "none":
        if name not in _OPTIONAL:
            raise ValueError(f"--sweep {name}: none is not a value of {name} (only thresholds can be off)")
        return [None]
    if ":" not in text:
        return [_number(name, text)]
    pieces = text.split(":")
    if len(pieces) != 3:
        raise ValueError(f"--sweep {name}: {text!r} is not a range START:STOP:STEP")
    start, stop, step = (_number(name, p) for p in pieces)
    if step <= 0:
        raise ValueError(f"--sweep {name}: the step of {text!r} must be > 0")
    if stop < start:
        raise ValueError(f"--sweep {name}: {text!r} ends before it starts")
    count = math.floor((stop - start) / step + 1e-9) + 1  # stop included when it falls on the grid
    if count > 10000:
        raise ValueError(f"--sweep {name}: {text!r} has {count} values; use a larger step")
    return [round(start + i * step, 10) for i in range(count)]


def combinations(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (the first setting varies slowest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def holdout_split(ids: Sequence[str], fraction: float) -> set[str]:
    """The held-out image ids: the first ``round(fraction * len(ids))`` in the order of the SHA-1 of their
    id. Deterministic, independent of the image order and of the number of ranks; the rest of ``ids``
    (the selection part) is disjoint from it.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or a part that would be empty.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {fraction}")
    n = int(round(fraction * len(ids)))
    if n < 1 or n >= len(ids):
        raise ValueError(f"holdout {fraction} of {len(ids)} images leaves an empty part; use more images "
                         "or another fraction")
    order = sorted(ids, key=lambda i: hashlib.sha1(str(i).encode()).hexdigest())
    return set(order[:n])


class SweepCounter:
    """Per image, one confusion matrix per combination: ``{"confusion": int64 [K, C, C]}`` over all
    images, and ``"select"`` (the same, over the selection part only) when a holdout is set.

    Args:
        protocol: the base protocol (its swept settings are replaced by each combination's).
        combos: the combinations (see :func:`combinations`).
        held_out: image ids of the held-out part, or None (no holdout).
    """

    def __init__(self, model, spec: DatasetSpec, protocol: Protocol, combos: Sequence[dict], *,
                 held_out: set[str] | None = None, crop_batch: int = 8, text_cache: dict | None = None,
                 refine=None):
        self.spec, self.combos, self.held_out = spec, list(combos), held_out
        self.class_names = list(spec.class_names)
        self.seg = Segmenter.from_dataset(model, spec, protocol, crop_batch=crop_batch, text_cache=text_cache,
                                          refine=refine)
        # the rules that need labels() again (logit scale, area threshold), each with its thresholds
        self.groups: dict[tuple, list[tuple[int, float | None]]] = {}
        for k, combo in enumerate(self.combos):
            rules = dataclasses.replace(protocol, **combo)
            rules.check_dataset(spec)  # e.g. a threshold on a dataset without background
            key = (rules.logit_scale, rules.area_threshold)
            self.groups.setdefault(key, []).append((k, rules.prob_threshold))

    def _rule(self, logit_scale: float, area_threshold: float | None):
        """The segmenter's label rule with one group's settings, the probability threshold left to the sweep."""
        return dataclasses.replace(self.seg.rule, logit_scale=logit_scale, area_threshold=area_threshold,
                                   prob_threshold=None)

    def count(self, image_id: str, image: np.ndarray, target: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 RGB [H, W, 3] and its label map [h, w] -> ``{"confusion": [K, C, C]}`` (and ``"select"``)."""
        C, K = self.spec.num_classes, len(self.combos)
        scores = self.seg.scores(image, out_size=target.shape, paths=[image_id])  # (1, Q, h, w): one model pass
        gt = torch.from_numpy(np.ascontiguousarray(target)).to(scores.device).long().flatten()
        keep = gt != self.spec.ignore_index
        gt = gt[keep]
        if gt.numel() and (gt.min() < 0 or gt.max() >= C):
            bad = gt[(gt < 0) | (gt >= C)].unique()[:8].tolist()
            raise ValueError(f"{image_id}: ground truth values {bad} are outside [0, {C}) and not the ignore "
                             f"index {self.spec.ignore_index}")
        cm = torch.zeros((K, C, C), dtype=torch.long, device=scores.device)
        for (logit_scale, area), members in self.groups.items():
            labels, conf = self.seg.labels(scores, rule=self._rule(logit_scale, area))  # (1, h, w), no threshold yet
            labels, conf = labels.flatten()[keep], conf.flatten()[keep]  # (N,)
            base = torch.bincount(gt * C + labels, minlength=C * C).reshape(C, C)
            thresholds = sorted({t for _, t in members if t is not None})
            if thresholds:
                cms = self._thresholded(base, gt, labels, conf, thresholds)
            for k, t in members:
                cm[k] = base if t is None else cms[thresholds.index(t)]
        out = {"confusion": cm.cpu()}
        if self.held_out is not None:
            out["select"] = torch.zeros_like(out["confusion"]) if image_id in self.held_out else out["confusion"]
        return out

    def _thresholded(self, base: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor, conf: torch.Tensor,
                     thresholds: list[float]) -> torch.Tensor:
        """Confusion matrices [P, C, C] for sorted ``thresholds``: as :meth:`gemseg.Segmenter.labels`, a pixel
        whose confidence is below a threshold becomes background. One bincount for all thresholds: a
        pixel moves for every threshold above its confidence, so counting pixels by the index of the
        first such threshold and summing cumulatively gives what each threshold moves."""
        C, P = self.spec.num_classes, len(thresholds)
        thr = torch.tensor(thresholds, dtype=conf.dtype, device=conf.device)
        first = torch.searchsorted(thr, conf, right=True)  # (N,): thresholds <= conf; moved for index >= first
        moved = torch.bincount((first * C + gt) * C + labels, minlength=(P + 1) * C * C).reshape(P + 1, C, C)
        moved = moved.cumsum(0)[:P]  # (P, C, C): pixels with conf < thr[j], by (gt, label)
        cms = base[None] - moved
        cms[:, :, self.spec.background] += moved.sum(2)  # ... now labelled background
        return cms

    def zeros(self) -> dict[str, torch.Tensor]:
        zero = torch.zeros((len(self.combos), self.spec.num_classes, self.spec.num_classes), dtype=torch.long)
        return {"confusion": zero} if self.held_out is None else {"confusion": zero, "select": zero.clone()}


def run_sweep(model, spec: DatasetSpec, root: str | os.PathLike, protocol: Protocol, grid: dict[str, list], *,
              out_dir: str | os.PathLike, holdout: float | None = None, limit: int | None = None,
              protocol_source: dict[str, str] | None = None, dist: Dist | None = None, save_every: int = 20,
              num_workers: int = 0, crop_batch: int = 8, restart: bool = False, progress: bool = True,
              on_image: Callable[[str], None] | None = None, text_cache: dict | None = None,
              plot: bool = True, refine=None) -> dict:
    """Score every combination of ``grid`` (see :func:`parse_sweep`) on ``spec``'s images from one model
    pass per image; write ``sweep.json``, ``sweep.md`` and ``sweep.png`` to ``out_dir``.

    Args:
        holdout: the fraction of the images held out (see :func:`holdout_split`): the best combination
            is chosen on the other images and its metrics reported on the held-out ones. None: the best
            is chosen and reported on all images (tuned on the test images; the table says so).
        plot: write ``sweep.png``.
        refine: refiners after the protocol's, as :func:`~gemseg.eval.evaluate`.
        Others: as :func:`~gemseg.eval.evaluate`.
    Returns:
        The table (the content of ``sweep.json``), on every rank.
    Raises:
        ValueError: a point-label dataset, or a combination the dataset cannot use.
    """
    from .sweep_report import sweep_table, write_sweep

    if spec.type != "dense":
        raise ValueError(f"{spec.name} has point labels; sweeps score dense label maps only (run one "
                         "`gemseg eval` per --point-threshold instead)")
    unknown = sorted(set(grid) - set(SWEEPABLE))
    if unknown:
        raise ValueError(f"cannot sweep {', '.join(unknown)} in one pass; {_instead(unknown[0])}")
    dist = dist or Dist()
    protocol.check_dataset(spec)
    dataset = open_dataset(spec, root, limit=limit)
    ids = dataset.ids
    held_out = holdout_split(ids, holdout) if holdout is not None else None
    combos = combinations(grid)
    counter = SweepCounter(model, spec, protocol, combos, held_out=held_out, crop_batch=crop_batch,
                           text_cache=text_cache, refine=refine)
    settings = {**run_settings(spec, root, protocol, model, counter.class_names, refine), "sweep": grid,
                "holdout": holdout}
    counts = count_images(counter, dataset, ids, settings, out_dir=out_dir, dist=dist, save_every=save_every,
                          num_workers=num_workers, restart=restart, progress=progress, desc=f"{spec.name} sweep",
                          on_image=on_image)
    table = sweep_table(counts, spec=spec, root=root, protocol=protocol, protocol_source=protocol_source,
                        model=model, grid=grid, combos=combos, holdout=holdout,
                        parts=(len(ids) - len(held_out), len(held_out)) if held_out is not None else None,
                        num_images=len(ids), limit=limit, dist=dist)
    if dist.is_main:
        write_sweep(out_dir, table, plot=plot)
    dist.barrier()
    return table
