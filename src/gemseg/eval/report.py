"""Evaluation reports: a JSON result with everything needed to reproduce a number, its Markdown table,
and runs side by side."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Sequence

import torch

from ..files import atomic_write, read_json

RESULT_VERSION = 1


def software_versions() -> dict[str, str]:
    from .. import __version__

    versions = {"gemseg": __version__, "python": platform.python_version(), "platform": platform.platform(),
                "torch": torch.__version__}
    for package in ("numpy", "pillow", "open_clip_torch", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions


def device_description(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def model_description(model) -> dict:
    """What identifies the model of a run: backbone name and weights, method, GEM settings, precision."""
    backbone = model.backbone
    return {"name": backbone.name, "pretrained": backbone.pretrained, "backend": type(backbone).__name__,
            "method": getattr(model, "method", "gem"), "config": model.config.to_dict(),
            "precision": model.precision,
            **({"proxy": model.proxy.describe()} if getattr(model, "proxy", None) is not None else {}),
            **({"method_settings": model.method_settings.to_dict()}
               if getattr(model, "method_settings", None) is not None else {}),
            **({"masks": _masks_identity(model.mask_source)}
               if getattr(model, "mask_source", None) is not None else {})}


def _masks_identity(source) -> dict | str:
    """Where a run's class-agnostic masks come from and how they are made (a generator's checkpoint and every
    setting, or the files' folder); the cache folder is left out, since it does not change the masks."""
    describe = getattr(source, "describe", None)
    if describe is None:
        return type(source).__name__  # a source of the caller's own
    return {k: v for k, v in describe().items() if k != "cache"}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def setting_text(value) -> str:
    """A setting as written in tables, exactly (no rounding): ``None`` as "–", lists joined by commas."""
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ",".join(setting_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_settings(result: dict) -> dict:
    """Every setting that identifies a run, flattened to dotted keys: ``dataset.*`` (name, root, limit,
    metadata file), ``model.*`` (backbone name, weights, backend, method, precision) with
    ``model.config.*`` (each GEM setting), ``model.method_settings.*`` (the method's own, where it has
    them), ``protocol.*`` (each protocol setting) and, when a run had any,
    ``refine`` (the refiners run after the protocol's)."""
    out = {}
    dataset = result.get("dataset") or {}
    for key in ("name", "root", "limit", "metadata"):
        if key in dataset:
            out[f"dataset.{key}"] = dataset[key]
    model = result.get("model") or {}
    for key, value in model.items():
        if key == "config" and isinstance(value, dict):  # a temperature of None is GEM's adaptive one
            out.update({f"model.config.{k}": "adaptive" if k == "temperature" and v is None else v
                        for k, v in value.items()})
        elif key == "method_settings" and isinstance(value, dict):  # sc-clip, sfp, <base>+resclip
            out.update({f"model.method_settings.{k}": v for k, v in value.items()})
        else:
            out[f"model.{key}"] = value
    out.update({f"protocol.{k}": v for k, v in (result.get("protocol") or {}).items()})
    if "refine" in result:  # the refiners run after the protocol's
        out["refine"] = result["refine"]
    return out


def main_metric(result: dict) -> str:
    return "p-mIoU" if result["dataset"]["type"] == "points" else "mIoU"


def run_label(result: dict) -> str:
    model = result.get("model") or {}
    weights = f" ({model['pretrained']})" if model.get("pretrained") else ""
    method = f" [{model['method']}]" if model.get("method", "gem") != "gem" else ""
    preset = (result.get("protocol") or {}).get("preset", "–")
    return f"{result['dataset']['name']} · {preset} · {model.get('name', '?')}{weights}{method}"


def result_markdown(result: dict) -> str:
    """The Markdown report of one result: summary, protocol, per-class table."""
    m, speed, protocol = result["metrics"], result.get("speed") or {}, result.get("protocol") or {}
    dense = result["dataset"]["type"] == "dense"
    lines = [f"# {run_label(result)}", "", "| metric | value |", "|---|---|"]
    keys = ("mIoU", "mAcc", "aAcc") if dense else ("p-mIoU",)
    lines += [f"| {k} | {_fmt(m[k])} |" for k in keys]
    lines += [f"| classes scored | {m['classes_scored']} |", f"| images | {result['dataset']['num_images']} |"]
    if speed:
        lines.append(f"| images/s | {_fmt(speed['images_per_s'])} ({speed['world_size']} × {speed['device']}) |")
    model = result.get("model") or {}
    if model:
        lines += ["", "## Model", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {setting_text(v)} |" for k, v in run_settings({"model": model}).items()]
    dataset = {k: v for k, v in run_settings({"dataset": result["dataset"]}).items() if k != "dataset.name"}
    if dataset:
        lines += ["", "## Dataset", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {setting_text(v)} |" for k, v in dataset.items()]
    if protocol:
        lines += ["", "## Protocol", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in protocol.items()]
    lines += ["", "## Per class", ""]
    if dense:
        lines += ["| class | IoU | Acc | GT pixels |", "|---|---|---|---|"]
        lines += [f"| {c['name']} | {_fmt(c['iou'])} | {_fmt(c['acc'])} | {c['gt_pixels']} |" for c in m["per_class"]]
    else:
        lines += ["| class | IoU | TP | FP | FN |", "|---|---|---|---|---|"]
        lines += [f"| {c['name']} | {_fmt(c['iou'])} | {c['tp']} | {c['fp']} | {c['fn']} |" for c in m["per_class"]
                  if c["tp"] + c["fp"] + c["fn"]]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str | os.PathLike, result: dict) -> tuple[Path, Path]:
    """``result.json`` and ``result.md`` in ``out_dir``, each written whole, flushed to disk and then renamed
    into place (:func:`gemseg.files.atomic_write`): an interrupted write leaves the old file or none."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "result.json", out / "result.md"
    for path, text in zip(paths, (json.dumps(result, indent=1) + "\n", result_markdown(result))):
        atomic_write(str(path), lambda f, text=text: f.write(text), binary=False)
    return paths


def load_result(path: str | os.PathLike) -> dict:
    result = read_json(path, "result file")
    if not isinstance(result, dict) or "metrics" not in result or "dataset" not in result:
        raise ValueError(f"{path} is not a gemseg evaluation result")
    return result


def compare_markdown(results: Sequence[dict], names: Sequence[str] | None = None) -> str:
    """Runs side by side: headline metrics, every setting that differs between them (dataset, backbone
    and weights, method, GEM settings, protocol; see :func:`run_settings`), and per-class IoU when the
    runs share a class list."""
    if not results:
        raise ValueError("nothing to compare")
    names = list(names) if names is not None else [f"run {i + 1}" for i in range(len(results))]
    head = "| | " + " | ".join(names) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")

    row("run", [run_label(r) for r in results])
    for key in ("mIoU", "p-mIoU", "mAcc", "aAcc"):
        values = [r["metrics"].get(key) for r in results]
        if any(v is not None for v in values):
            row(f"**{key}**" if key in ("mIoU", "p-mIoU") else key, values)
    first = results[0]["metrics"].get("mIoU")
    if len(results) > 1 and first is not None:  # what each run adds to the first (e.g. a plug-in on its base)
        gains = [None if r["metrics"].get("mIoU") is None else r["metrics"]["mIoU"] - first for r in results]
        row(f"mIoU − {names[0]}", gains)
    row("images", [r["dataset"]["num_images"] for r in results])
    row("images/s", [(r.get("speed") or {}).get("images_per_s") for r in results])
    flat = [run_settings(r) for r in results]
    keys = list(dict.fromkeys(k for f in flat for k in f))  # dataset.*, model.*, protocol.*, first seen first
    for key in keys:
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values):
            lines.append(f"| {key} | " + " | ".join(setting_text(v) for v in values) + " |")
    class_lists = [[c["name"] for c in r["metrics"]["per_class"]] for r in results]
    if all(c == class_lists[0] for c in class_lists) and len(class_lists[0]) <= 300:
        for i, name in enumerate(class_lists[0]):
            values = [r["metrics"]["per_class"][i]["iou"] for r in results]
            if any(v is not None for v in values):
                row(name, values)
    return "\n".join(lines) + "\n"
