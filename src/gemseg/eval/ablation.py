"""GEM ablations: the paper's experiments as named sweeps or grids of :class:`~gemseg.GEMConfig` settings.

Each setting is evaluated by :func:`~gemseg.eval.evaluate` in its own run folder, on a model that shares
the weights of one base model (``GEMModel.with_config``) and text embeddings computed once per dataset,
so an interrupted ablation resumes (finished settings are skipped, a half-done one continues from its
run state) and runs data-parallel under ``torchrun`` exactly as ``gemseg eval`` does. The results become
one table (``ablation.json``, ``ablation.md``) and plots. See docs/ablations.md.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from ..config import GEMConfig
from .datasets import DatasetSpec
from .distributed import Dist
from .plots import COLORS, bar_chart, line_chart
from .protocols import Protocol
from .report import main_metric, model_description, setting_text, software_versions
from .runner import evaluate

ABLATION_VERSION = 1
FACTORS = ("depth", "iterations", "temperature", "projections", "l2_normalize", "gem_mlp")  # GEMConfig fields
SWEEPS = {"projections": "projections", "temperature": "temperature", "iterations": "iterations",
          "depth": "depth", "l2": "l2_normalize", "mlp": "gem_mlp"}  # sweep name -> the GEMConfig field it varies
_ALIASES = {**{f: f for f in FACTORS}, **SWEEPS, "iters": "iterations", "temp": "temperature", "proj": "projections"}
_ORDER = ("v", "k", "q")  # GEMConfig's projection order
_READ_NOTHING = ("clip", "maskclip", "sclip", "clearclip", "naclip", "proxyclip")  # methods that read no GEM setting
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def sweep_values(factor: str, num_blocks: int) -> list:
    """The values a named sweep tries for ``factor`` (a GEMConfig field) on a model of ``num_blocks`` blocks:
    each projection alone and the ensemble; the adaptive temperature and fixed inverse temperatures 0.001
    to 100; 0 to 5 iterations; depths 1 (no GEM path) to blocks + 1 (at most 13 of them); L2 off/on; MLP
    off/on."""
    if factor == "projections":
        return [("q",), ("k",), ("v",), _ORDER]
    if factor == "temperature":
        return [None, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    if factor == "iterations":
        return list(range(6))
    if factor == "depth":
        step = -(-num_blocks // 12)
        return sorted({*range(1, num_blocks + 2, step), num_blocks + 1})
    if factor in ("l2_normalize", "gem_mlp"):
        return [False, True]
    raise ValueError(f"unknown GEM setting {factor!r}; choose from {', '.join(FACTORS)}")


def _parse(factor: str, text: str):
    low = text.lower()
    if factor in ("depth", "iterations"):
        return int(text)
    if factor == "temperature":
        return None if low in ("adaptive", "none", "auto") else float(text)
    if factor == "projections":
        letters = [c for c in low if c != "+"]
        if not letters or any(c not in _ORDER for c in letters) or len(set(letters)) != len(letters):
            raise ValueError(text)
        return tuple(p for p in _ORDER if p in letters)
    if low not in _TRUE + _FALSE:
        raise ValueError(text)
    return low in _TRUE


def parse_value(factor: str, text: str):
    """One grid value from text: integers for depth and iterations; ``adaptive`` or a number > 0 for the
    (inverse) temperature; letters of ``qkv`` for projections (``v``, ``qk``, ``v+k+q``); on/off for
    ``l2_normalize`` and ``gem_mlp``."""
    if factor not in FACTORS:
        raise ValueError(f"unknown GEM setting {factor!r}; choose from {', '.join(FACTORS)}")
    try:
        return _parse(factor, text.strip())
    except ValueError:
        kinds = {"depth": "an integer", "iterations": "an integer", "temperature": "'adaptive' or a number",
                 "projections": "distinct letters of qkv, e.g. v or vkq", "l2_normalize": "on or off",
                 "gem_mlp": "on or off"}
        raise ValueError(f"{factor}={text.strip()!r}: expected {kinds[factor]}") from None


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["iterations=0,1,2", "temperature=adaptive,0.1"]`` -> ``{"iterations": [0, 1, 2], "temperature":
    [None, 0.1]}`` (names may be aliases: l2, mlp, temp, iters, proj)."""
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        factor = _ALIASES.get(name.strip().lower().replace("-", "_"))
        if not sep or factor is None:
            raise ValueError(f"grid entry {item!r}: expected SETTING=V1,V2,... with SETTING one of "
                             f"{', '.join(FACTORS)} (or l2, mlp, temp, iters, proj)")
        if factor in grid:
            raise ValueError(f"grid entry {item!r}: {factor} is given twice")
        parsed = [parse_value(factor, v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ValueError(f"grid entry {item!r} has no values")
        grid[factor] = list(dict.fromkeys(parsed))
    return grid


def _text(factor: str, value) -> str:
    if factor == "temperature" and value is None:
        return "adaptive"
    if factor == "projections":
        return "".join(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return setting_text(value)


@dataclass
class Setting:
    """One GEM configuration of an ablation, the sweeps that contain it and its changes from the base."""

    config: GEMConfig
    changes: dict  # GEMConfig field -> value, the fields that differ from the base configuration
    sweeps: list[str]  # the named sweeps (or "grid") that include this setting

    @property
    def label(self) -> str:
        """``base``, or the changes from the base: ``iterations=3, temperature=0.1``."""
        return ", ".join(f"{k}={_text(k, v)}" for k, v in self.changes.items()) or "base"

    @property
    def slug(self) -> str:
        """The run folder's name, naming every GEM setting: ``d7-i1-tadaptive-pvkq-l2on-mlpoff``."""
        c = self.config
        t = "adaptive" if c.temperature is None else repr(float(c.temperature))
        return (f"d{c.depth}-i{c.iterations}-t{t}-p{''.join(c.projections)}-l2{_text('', c.l2_normalize)}"
                f"-mlp{_text('', c.gem_mlp)}")


def _config(base: GEMConfig, changes: dict) -> GEMConfig:
    changes = dict(changes)
    if "projections" in changes and set(changes["projections"]) == set(base.projections):
        changes["projections"] = base.projections  # the same ensemble in the base's order
    return dataclasses.replace(base, **changes)


def plan_settings(base: GEMConfig, *, sweeps: Sequence[str] = (), grid: dict[str, list] | None = None,
                  num_blocks: int = 12) -> list[Setting]:
    """The distinct settings of named ``sweeps`` (each varies one field of ``base``; ``all`` is every
    sweep) and of a ``grid`` (the product of its values, other fields from ``base``), in order of first
    appearance (the base first); a configuration reached by several sweeps (the base, typically) is run
    once."""
    names = list(SWEEPS) if "all" in sweeps else list(dict.fromkeys(sweeps))
    unknown = [s for s in names if s not in SWEEPS]
    if unknown:
        raise ValueError(f"unknown sweep {unknown[0]!r}; choose from {', '.join(SWEEPS)}, all")
    entries = [(_config(base, {SWEEPS[s]: v}), s) for s in names for v in sweep_values(SWEEPS[s], num_blocks)]
    if grid:
        for combo in itertools.product(*grid.values()):
            entries.append((_config(base, dict(zip(grid, combo))), "grid"))
    if not entries:
        raise ValueError("nothing to ablate: give a sweep or a grid")
    settings: dict[GEMConfig, Setting] = {}
    for config, sweep in entries:
        if config not in settings:
            changes = {f: getattr(config, f) for f in FACTORS if getattr(config, f) != getattr(base, f)}
            settings[config] = Setting(config, changes, [])
        if sweep not in settings[config].sweeps:
            settings[config].sweeps.append(sweep)
    ordered = list(settings.values())
    return sorted(ordered, key=lambda s: bool(s.changes))  # the base first (a stable sort keeps the rest)


@dataclass
class AblationDataset:
    """A dataset of an ablation: its metadata, root folder, protocol and image limit."""

    spec: DatasetSpec
    root: str | os.PathLike
    protocol: Protocol
    protocol_source: dict[str, str] | None = None
    limit: int | None = None


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "dataset"


def _check_method(method: str, settings: Sequence[Setting]) -> None:
    varied = sorted({f for s in settings for f in s.changes})
    if method in _READ_NOTHING and varied:
        raise ValueError(f"method {method!r} reads no GEM setting, so every setting would give the same "
                         "numbers; ablate --method gem (or vv for depth)")
    if method == "vv" and set(varied) - {"depth"}:
        raise ValueError(f"method 'vv' reads only depth, not {', '.join(f for f in varied if f != 'depth')}")


def _normalized(obj):
    return json.loads(json.dumps(obj))


def _finished(run_dir: Path, model, data: AblationDataset) -> dict | None:
    """The result in ``run_dir`` if it is a finished run of exactly this model, dataset and protocol."""
    path = run_dir / "result.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    dataset = result.get("dataset") or {}
    same = (result.get("model") == _normalized(model_description(model))
            and result.get("protocol") == _normalized(data.protocol.to_dict())
            and dataset.get("name") == data.spec.name and dataset.get("limit") == data.limit
            and dataset.get("root") == str(Path(data.root).resolve()))
    return result if same else None


def run_ablation(model, datasets: Sequence[AblationDataset], settings: Sequence[Setting], *,
                 out_dir: str | os.PathLike, dist: Dist | None = None, restart: bool = False, save_every: int = 20,
                 num_workers: int = 0, crop_batch: int = 8, progress: bool = True, plots: bool = True,
                 sweeps: Sequence[str] = (), grid: dict[str, list] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_image: Callable[[str, str, str], None] | None = None) -> dict:
    """Evaluate every setting on every dataset, then write the table and plots (rank 0).

    ``out_dir/runs/<dataset>/<setting slug>/`` is each evaluation's run folder (state, ``result.json``,
    ``result.md``). A folder holding a finished result of the same model, dataset and protocol is
    skipped; any other is resumed (or refused) by :func:`~gemseg.eval.evaluate`'s own state.

    Args:
        model: the base :class:`~gemseg.GEMModel`; each setting runs ``model.with_config(...)``.
        datasets: each with its root, protocol and limit (distinct dataset names).
        settings: from :func:`plan_settings`.
        restart: discard every setting's earlier state and result.
        sweeps, grid: what produced ``settings``, recorded in the table.
        log: called with one line per setting (rank 0).
        on_image: called with ``(dataset name, setting slug, image id)`` for every image evaluated.
    Returns:
        The ablation table (the content of ``ablation.json``), on every rank.
    """
    dist = dist or Dist()
    names = [d.spec.name for d in datasets]
    if not datasets or len(set(names)) != len(names):
        raise ValueError(f"give each dataset once (got {', '.join(names) or 'none'})")
    _check_method(getattr(model, "method", "gem"), settings)
    models = {s.slug: model.with_config(**{f: getattr(s.config, f) for f in FACTORS}) for s in settings}
    out = Path(out_dir)
    text_cache: dict = {}  # one backbone: each dataset's vocabulary is encoded once for all settings
    results: dict[tuple[str, str], dict] = {}
    total, k = len(datasets) * len(settings), 0
    for data in datasets:
        for s in settings:
            k += 1
            run_dir = out / "runs" / _folder_name(data.spec.name) / s.slug
            done = _finished(run_dir, models[s.slug], data) if dist.is_main and not restart else None
            done = dist.broadcast(done)
            if log is not None and dist.is_main:
                log(f"[{k}/{total}] {data.spec.name} {s.label}" + (": finished earlier" if done else ""))
            if done is None:
                hook = None if on_image is None else (lambda i, n=data.spec.name, g=s.slug: on_image(n, g, i))
                done = evaluate(models[s.slug], data.spec, data.root, data.protocol, out_dir=run_dir,
                                limit=data.limit, protocol_source=data.protocol_source, dist=dist,
                                save_every=save_every, num_workers=num_workers, crop_batch=crop_batch,
                                restart=restart, progress=progress, on_image=hook, text_cache=text_cache)
            results[data.spec.name, s.slug] = done
            table = ablation_table(model, datasets, settings, results, out_dir=out, sweeps=sweeps, grid=grid)
            if dist.is_main:  # after each setting, so that an interrupted ablation shows what it finished
                write_ablation(out, table, plots=plots and k == total)
    dist.barrier()
    return table


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
                "run": str(Path("runs") / _folder_name(data.spec.name) / s.slug)}
        rows.append({"setting": s.label, "slug": s.slug, "sweeps": list(s.sweeps), "changes": dict(s.changes),
                     "config": s.config.to_dict(), "results": cells})
    description = model_description(model)
    return _normalized({
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
    base = ", ".join(f"{f}={_text(f, _value(f, v))}" for f, v in table["base"].items())
    lines = [f"# GEM ablation: {model['name']} · {model['method']}", "", "| | |", "|---|---|"]
    lines += [f"| backbone | {model['name']} ({model.get('backend', '?')}, {model.get('blocks', '?')} blocks) |",
              f"| weights | {setting_text(model.get('pretrained'))} |", f"| method | {model['method']} |",
              f"| precision | {model.get('precision', '?')} |", f"| base GEM settings | {base} |",
              f"| sweeps | {', '.join(table['sweeps']) or '–'} |"]
    if table["grid"]:
        grid = "; ".join(f"{f}={','.join(_text(f, _value(f, v)) for v in vs)}" for f, vs in table["grid"].items())
        lines.append(f"| grid | {grid} |")
    lines += [f"| created | {table['created']} |", "", "## Results", ""]
    heads = ["setting", "sweeps", *FACTORS] + [f"{d['name']} {d['metric']}" for d in datasets]
    heads += ["mean"] if len(datasets) > 1 else []
    heads += ["run folder"]
    lines += ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for row in table["rows"]:
        config = row["config"]
        cells = [row["setting"], ", ".join(row["sweeps"])]
        cells += [(f"**{_text(f, _value(f, config[f]))}**" if f in row["changes"] else _text(f, _value(f, config[f])))
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
    table = json.loads(path.read_text())
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
        extra = ", ".join(f"{f}={_text(f, _value(f, json.loads(values[f])))}" for f in varied)
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
    return {"kind": "bar", "series": bars, "categories": [_text(factor, c) for c in categories]}


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
