"""The report of a post-processing sweep (:func:`~gemseg.eval.sweep.run_sweep`): one table of every
combination's mIoU / mAcc / aAcc with the best marked (``sweep.json``, ``sweep.md``) and a plot of mIoU
against one swept setting, one line per combination of the others (``sweep.png``)."""
from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from .metrics import segmentation_metrics
from .plots import COLORS, line_chart
from .report import device_description, model_description, setting_text, software_versions

SWEEP_VERSION = 1
_METRICS = ("mIoU", "mAcc", "aAcc")


def _summary(cm: torch.Tensor, class_names) -> dict:
    m = segmentation_metrics(cm, class_names)
    return {k: m[k] for k in _METRICS}


def _best(rows: Sequence[dict], part: str) -> int | None:
    """Index of the row with the highest mIoU on ``part`` (the first on ties); None if none has one."""
    scored = [(r[part]["mIoU"], -i) for i, r in enumerate(rows) if r[part]["mIoU"] is not None]
    return -max(scored)[1] if scored else None


def sweep_table(counts, *, spec, root, protocol, protocol_source, model, grid: dict, combos: Sequence[dict],
                holdout: float | None, parts: tuple[int, int] | None, num_images: int, limit: int | None,
                dist) -> dict:
    """The sweep's table from the summed counts of :class:`~gemseg.eval.sweep.SweepCounter`.

    Rows: per combination its ``settings`` and the metrics on ``all`` images, and with a holdout on
    the ``select`` part and the ``held_out`` part. ``best``: the row chosen (on ``select`` with a holdout,
    else on ``all``) with ``chosen_on`` and ``reported`` (its metrics where it is reported)."""
    names = list(spec.class_names)
    total = counts.totals["confusion"]
    rows = []
    for k, combo in enumerate(combos):
        row = {"settings": dict(combo), "all": _summary(total[k], names)}
        if holdout is not None:
            select = counts.totals["select"][k]
            row["select"] = _summary(select, names)
            row["held_out"] = _summary(total[k] - select, names)
        rows.append(row)
    chosen_on = "select" if holdout is not None else "all"
    reported_on = "held_out" if holdout is not None else "all"
    index = _best(rows, chosen_on)
    best = None
    if index is not None:
        best = {"index": index, "settings": rows[index]["settings"], "chosen_on": chosen_on,
                "reported_on": reported_on, "reported": rows[index][reported_on]}
        if holdout is not None:  # what choosing on the held-out images themselves would have claimed
            oracle = _best(rows, "held_out")
            best["held_out_best"] = None if oracle is None else {"index": oracle, **rows[oracle]["held_out"]}
    images = counts.images
    return {
        "version": SWEEP_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": spec.name, "title": spec.title, "root": str(Path(root).resolve()),
                    "num_images": num_images,
                    "limit": limit, "num_classes": len(names)},
        "grid": {k: list(v) for k, v in grid.items()},
        "holdout": holdout,
        "parts": {"select": parts[0], "held_out": parts[1]} if parts else None,
        "protocol": protocol.to_dict(),
        "protocol_source": protocol_source or {},
        "model": model_description(model),
        "rows": rows,
        "best": best,
        "speed": {"images": images, "seconds": round(counts.seconds, 3),
                  "images_per_s": round(images / counts.seconds, 3) if images and counts.seconds > 0 else None,
                  "combinations": len(combos), "world_size": dist.world_size,
                  "device": device_description(model.device), "resumed_images": counts.resumed},
        "software": software_versions(),
    }


def _value(value) -> str:
    """A swept value as written on the command line: ``none`` for an unset threshold."""
    return "none" if value is None else setting_text(value)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def sweep_markdown(table: dict) -> str:
    """The table as Markdown: one row per combination, the best in bold and marked."""
    d, m, best = table["dataset"], table["model"], table["best"]
    names = list(table["grid"])
    lines = [f"# Sweep: {d['name']}, {m['name']} ({m['method']})", ""]
    lines.append(f"{len(table['rows'])} combinations of {', '.join(names)} from one model pass per image; "
                 f"the other settings are those of preset `{table['protocol']['preset']}` (sweep.json).")
    if table["holdout"] is not None:
        p = table["parts"]
        lines.append(f"Chosen on {p['select']} images, reported on the {p['held_out']} held-out images "
                     f"(holdout {table['holdout']:g}, split by the SHA-1 of the image ids).")
    else:
        lines.append("No holdout: the best is chosen and reported on the same images (tuned on them).")
    lines.append("")
    parts = ["all"] + (["select", "held_out"] if table["holdout"] is not None else [])
    header = names + [f"{k} ({p})" if p != "all" else k for p in parts
                      for k in (_METRICS if p == "all" else ("mIoU",))] + [""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(table["rows"]):
        cells = [_value(row["settings"][n]) for n in names]
        for p in parts:
            cells += [_fmt(row[p][k]) for k in (_METRICS if p == "all" else ("mIoU",))]
        mark = best is not None and best["index"] == i
        if mark:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells + ["best" if mark else ""]) + " |")
    lines.append("")
    if best is not None:
        chosen = ", ".join(f"{k}={_value(v)}" for k, v in best["settings"].items())
        lines.append(f"Best on {best['chosen_on']}: {chosen}; mIoU {_fmt(best['reported']['mIoU'])} on "
                     f"{best['reported_on']}.")
    return "\n".join(lines) + "\n"


def plot_axis(table: dict) -> str:
    """The setting on the plot's x axis: the one with the most numeric values (the first on ties)."""
    return max(table["grid"], key=lambda n: sum(v is not None for v in table["grid"][n]))


def sweep_plot(table: dict):
    """mIoU (all images) against :func:`plot_axis`, one line per combination of the other settings
    (``none`` values of the axis are left out); None when the axis has fewer than two numeric values."""
    axis = plot_axis(table)
    if sum(v is not None for v in table["grid"][axis]) < 2:
        return None
    others = [n for n in table["grid"] if n != axis]
    lines: dict[tuple, list] = {}
    for row in table["rows"]:
        x = row["settings"][axis]
        if x is not None:
            key = tuple(row["settings"][n] for n in others)
            lines.setdefault(key, []).append((x, row["all"]["mIoU"]))
    if len(lines) > len(COLORS):
        warnings.warn(f"sweep.png shows the first {len(COLORS)} of {len(lines)} lines; sweep.md has them all",
                      stacklevel=2)
    series = []
    for key, points in list(lines.items())[:len(COLORS)]:
        label = ", ".join(f"{n}={_value(v)}" for n, v in zip(others, key)) or table["dataset"]["name"]
        series.append((label, [x for x, _ in points], [y for _, y in points]))
    m = table["model"]
    return line_chart(series, title=f"{table['dataset']['name']}: mIoU against {axis} ({m['name']}, {m['method']})",
                      xlabel=axis, ylabel="mIoU (%)")


def write_sweep(out_dir: str | os.PathLike, table: dict, *, plot: bool = True) -> list[Path]:
    """Write ``sweep.json``, ``sweep.md`` and (``plot``, two or more x values) ``sweep.png``, each
    atomically. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("sweep.json", json.dumps(table, indent=1, allow_nan=False)), ("sweep.md", sweep_markdown(table))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
        written.append(out / name)
    image = sweep_plot(table) if plot else None
    if image is not None:
        tmp = out / ".sweep.png.tmp"
        image.save(tmp, format="PNG")
        os.replace(tmp, out / "sweep.png")
        written.append(out / "sweep.png")
    return written
