"""GEM ablations, reporting: the table of every setting on every dataset (``ablation.json``,
``ablation.md``) and its plots. See docs/ablations.md.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..files import read_json
from .ablation_plan import FACTORS, AblationDataset, Setting, factor_text
from .plots import COLORS, bar_chart, line_chart
from .report import main_metric, model_description, setting_text, software_versions

ABLATION_VERSION = 1


def folder_name(name: str) -> str:
    """A dataset name as a folder name of the ablation's ``runs/`` (unsafe characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "dataset"

def normalized(obj):
    """``obj`` as it reads back from JSON (tuples become lists), for comparing with saved results."""
    return json.loads(json.dumps(obj))

def ablation_table(model, datasets: Sequence[AblationDataset], settings: Sequence[Setting],
                   results: dict[tuple[str, str], dict], *, out_dir: Path, sweeps: Sequence[str] = (),
                   grid: dict[str, list] | None = None) -> dict:
    """The ablation's JSON table: the model (backbone, weights, method, base GEM settings), each dataset
    with its protocol, and one row per setting with its full GEM configuration and, per dataset, the
    metrics and run folder."""
    described = []
    for data in datasets:
        first = next((r for (n, _), r in results.items() if n == data.spec.name), None)
        described.append({
            "name": data.spec.name, "title": data.spec.title, "type": data.spec.type,
            "metric": "p-mIoU" if data.spec.type == "points" else "mIoU",
            "root": str(Path(data.root).resolve()), "limit": data.limit,
            "num_images": first["dataset"]["num_images"] if first else None,
            "protocol": data.protocol.to_dict(), "protocol_source": dict(data.protocol_source or {})})
    rows = []
    for s in settings:
        cells = {}
        for data in datasets:
            r = results.get((data.spec.name, s.slug))
            if r is None:
                continue
            m = r["metrics"]
            cells[data.spec.name] = {
                "metric": main_metric(r), "value": m.get(main_metric(r)),
                **{k: m[k] for k in ("mIoU", "mAcc", "aAcc", "p-mIoU") if k in m},
                "images_per_s": (r.get("speed") or {}).get("images_per_s"),
                "run": str(Path("runs") / folder_name(data.spec.name) / s.slug)}
        rows.append({"setting": s.label, "slug": s.slug, "sweeps": list(s.sweeps), "changes": dict(s.changes),
                     "method": s.method or getattr(model, "method", "gem"), "refine": s.refine,
                     "config": s.config.to_dict(),
                     "results": cells})
    description = model_description(model)
    return normalized({
        "version": ABLATION_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out_dir": str(Path(out_dir).resolve()),
        "model": {**{k: v for k, v in description.items() if k != "config"}, "blocks": len(model.backbone.blocks)},
        "base": description["config"],
        "sweeps": list(sweeps), "grid": dict(grid or {}),
        "datasets": described,
        "rows": rows,
        "plots": [],  # filled in by write_ablation
        "software": software_versions(),
    })


def ablation_markdown(table: dict) -> str:
    """The table as Markdown: the model, one row per setting (every GEM setting, then each dataset's
    metric and the mean), each dataset's protocol in full, the plots and the software."""
    model, datasets = table["model"], table["datasets"]
    base = ", ".join(f"{f}={factor_text(f, _value(f, v))}" for f, v in table["base"].items())
    lines = [f"# GEM ablation: {model['name']} · {model['method']}", "", "| | |", "|---|---|"]
    lines += [f"| backbone | {model['name']} ({model.get('backend', '?')}, {model.get('blocks', '?')} blocks) |",
              f"| weights | {setting_text(model.get('pretrained'))} |", f"| method | {model['method']} |",
              f"| precision | {model.get('precision', '?')} |", f"| base GEM settings | {base} |",
              f"| sweeps | {', '.join(table['sweeps']) or '–'} |"]
    if table["grid"]:
        grid = "; ".join(f"{f}={','.join(factor_text(f, _value(f, v)) for v in vs)}" for f, vs in table["grid"].items())
        lines.append(f"| grid | {grid} |")
    lines += [f"| created | {table['created']} |", "", "## Results", ""]
    heads = ["setting", "sweeps", *FACTORS] + [f"{d['name']} {d['metric']}" for d in datasets]
    heads += ["mean"] if len(datasets) > 1 else []
    heads += ["run folder"]
    lines += ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for row in table["rows"]:
        config = row["config"]
        cells = [row["setting"], ", ".join(row["sweeps"])]
        cells += [(f"**{factor_text(f, _value(f, config[f]))}**" if f in row["changes"] else factor_text(f, _value(f, config[f])))
                  for f in FACTORS]
        values = [(row["results"].get(d["name"]) or {}).get("value") for d in datasets]
        cells += [_number(v) for v in values]
        if len(datasets) > 1:
            cells.append(_number(sum(values) / len(values)) if all(v is not None for v in values) else "–")
        cells.append(f"runs/*/{row['slug']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Values in **bold** differ from the base settings. Temperature is GEM's inverse temperature "
              "(the multiplier of the self-self similarities); metrics are in %.", "",
              "## Datasets and protocols", "", "| setting | " + " | ".join(d["name"] for d in datasets) + " |",
              "|---" * (len(datasets) + 1) + "|"]
    rows = [("root", [d["root"] for d in datasets]), ("images", [d["num_images"] for d in datasets]),
            ("limit", [d["limit"] for d in datasets]), ("metric", [d["metric"] for d in datasets])]
    keys = list(dict.fromkeys(k for d in datasets for k in d["protocol"]))
    rows += [(f"protocol.{k}", [d["protocol"].get(k) for d in datasets]) for k in keys]
    lines += [f"| {name} | " + " | ".join(setting_text(v) for v in values) + " |" for name, values in rows]
    plots = table.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    lines += ["", "## Software", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table["software"].items()]
    return "\n".join(lines) + "\n"


def _value(factor: str, value):
    return tuple(value) if factor == "projections" else value


def _number(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def write_ablation(out_dir: str | os.PathLike, table: dict, *, plots: bool = True) -> list[Path]:
    """``ablation.json``, ``ablation.md`` and (with ``plots``) ``plots/<setting>.png`` for every GEM setting
    with at least two values, whose paths are recorded in ``table["plots"]``; each file is written whole,
    then renamed into place. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = write_plots(table, out / "plots") if plots else []
    if plots:
        table["plots"] = [str(p.relative_to(out)) for p in written]
    texts = (("ablation.json", json.dumps(table, indent=1) + "\n"), ("ablation.md", ablation_markdown(table)))
    for name, text in texts:
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written


def load_ablation(path: str | os.PathLike) -> dict:
    """An ``ablation.json`` (or the folder holding it)."""
    path = Path(path)
    path = path / "ablation.json" if path.is_dir() else path
    table = read_json(path, "ablation table")
    if not isinstance(table, dict) or "rows" not in table or "base" not in table:
        raise ValueError(f"{path} is not a gemseg ablation table")
    return table


def plot_series(table: dict, factor: str) -> dict | None:
    """What the plot of ``factor`` shows: per dataset, the rows that differ only in ``factor`` make a line
    (with several lines per dataset when a grid varies other settings too, each labelled with them);
    ``None`` when no line has two points. Keys: ``kind`` ("line", "log" or "bar"), ``series``
    ``[(label, xs, ys)]`` (bars: ``[(label, values per category)]``), ``references`` ``[(label, y, series
    index)]`` (the adaptive temperature beside fixed ones), ``categories`` (bars)."""
    groups: dict[tuple, list] = {}
    for d in table["datasets"]:
        for row in table["rows"]:
            cell = row["results"].get(d["name"])
            if cell is not None and cell["value"] is not None:
                rest = tuple((f, json.dumps(row["config"][f])) for f in FACTORS if f != factor)
                rest += (("method", row.get("method")), ("refine", row.get("refine")))  # a line per method/refiner
                groups.setdefault((d["name"], rest), []).append((_value(factor, row["config"][factor]), cell["value"]))
    plotted = {key: points for key, points in groups.items() if len({x for x, _ in points}) > 1}
    if not plotted:
        return None
    if len(plotted) > len(COLORS):
        warnings.warn(f"the {factor} plot shows the first {len(COLORS)} of {len(plotted)} lines", stacklevel=2)
        plotted = dict(list(plotted.items())[:len(COLORS)])
    varied = [f for f in FACTORS if f != factor and len({dict(rest)[f] for _, rest in plotted}) > 1]
    series, references = [], []
    for (name, rest), points in plotted.items():
        values = dict(rest)
        extra = ", ".join(f"{f}={factor_text(f, _value(f, json.loads(values[f])))}" for f in varied)
        label = f"{name} ({extra})" if extra else name
        if factor == "temperature":
            references += [(f"{label} adaptive", y, len(series)) for x, y in points if x is None and y is not None]
            points = [(x, y) for x, y in points if x is not None]
        series.append((label, [x for x, _ in points], [y for _, y in points]))
    if factor in ("depth", "iterations"):
        return {"kind": "line", "series": series, "references": []}
    if factor == "temperature":
        return {"kind": "log", "series": series, "references": references}
    categories = list(dict.fromkeys(x for _, xs, _ in series for x in xs))
    if factor == "projections":  # q, k, v alone, then ensembles
        categories.sort(key=lambda p: (len(p), ["qkv".index(c) for c in p]))
    else:
        categories.sort()
    bars = [(label, [dict(zip(xs, ys)).get(c) for c in categories]) for label, xs, ys in series]
    return {"kind": "bar", "series": bars, "categories": [factor_text(factor, c) for c in categories]}


_AXES = {"depth": "GEM depth (the last depth - 1 blocks; 1: none)", "iterations": "self-self iterations",
         "temperature": "fixed inverse temperature (dashed: adaptive)", "projections": "self-self projections",
         "l2_normalize": "L2 normalization", "gem_mlp": "MLP on the GEM path"}


def write_plots(table: dict, folder: str | os.PathLike) -> list[Path]:
    """``folder/<setting>.png`` for every GEM setting with at least two values on some dataset: the main
    metric against the setting, a line (or bars) per dataset. Returns the paths written."""
    folder = Path(folder)
    metric = " / ".join(dict.fromkeys(d["metric"] for d in table["datasets"]))
    model = table["model"]
    written = []
    for factor in FACTORS:
        spec = plot_series(table, factor)
        if spec is None:
            continue
        title = f"{metric} against {factor} ({model['name']}, {model['method']})"
        ylabel = f"{metric} (%)"
        if spec["kind"] == "bar":
            image = bar_chart(spec["categories"], spec["series"], title=title, xlabel=_AXES[factor], ylabel=ylabel)
        else:
            image = line_chart(spec["series"], references=spec["references"], log_x=spec["kind"] == "log",
                               title=title, xlabel=_AXES[factor], ylabel=ylabel)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{factor}.png"
        tmp = folder / f".{factor}.png.tmp"
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
        written.append(path)
    return written
