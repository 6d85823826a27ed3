"""GEM ablations: the paper's experiments as named sweeps or grids of :class:`~gemseg.GEMConfig` settings.

Each setting is evaluated by :func:`~gemseg.eval.evaluate` in its own run folder, on a model that shares
the weights of one base model (``GEMModel.variant``) and text embeddings computed once per dataset,
so an interrupted ablation resumes (finished settings are skipped, a half-done one continues from its
run state) and runs data-parallel under ``torchrun`` exactly as ``gemseg eval`` does. The results become
one table (``ablation.json``, ``ablation.md``) and plots. Planning (which settings) is
:mod:`.ablation_plan`, reporting (table, plots) :mod:`.ablation_report`; both are re-exported here.
See docs/ablations.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from .ablation_plan import (FACTORS, SWEEPS, AblationDataset, Setting, check_method, parse_grid, parse_value,
                            plan_settings, sweep_values)
from .ablation_report import (ABLATION_VERSION, ablation_markdown, ablation_table, folder_name, load_ablation,
                              normalized, plot_series, write_ablation, write_plots)
from .distributed import Dist
from .report import model_description
from .runner import evaluate

__all__ = ["ABLATION_VERSION", "FACTORS", "SWEEPS", "Setting", "AblationDataset", "sweep_values", "parse_value",
           "parse_grid", "plan_settings", "run_ablation", "ablation_table", "ablation_markdown", "write_ablation",
           "load_ablation", "plot_series", "write_plots"]


def _finished(run_dir: Path, model, data: AblationDataset) -> dict | None:
    """The result in ``run_dir`` if it is a finished run of exactly this model, dataset and protocol."""
    path = run_dir / "result.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    dataset = result.get("dataset") or {}
    same = (result.get("model") == normalized(model_description(model))
            and result.get("protocol") == normalized(data.protocol.to_dict())
            and dataset.get("name") == data.spec.name and dataset.get("limit") == data.limit
            and dataset.get("root") == str(Path(data.root).resolve()))
    return result if same else None


def run_ablation(model, datasets: Sequence[AblationDataset], settings: Sequence[Setting], *,
                 out_dir: str | os.PathLike, dist: Dist | None = None, restart: bool = False, save_every: int = 20,
                 num_workers: int = 0, crop_batch: int = 8, progress: bool = True, plots: bool = True,
                 sweeps: Sequence[str] = (), grid: dict[str, list] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_image: Callable[[str, str, str], None] | None = None,
                 per_dataset: Callable | None = None, refine_for: Callable | None = None) -> dict:
    """Evaluate every setting on every dataset, then write the table and plots (rank 0).

    ``out_dir/runs/<dataset>/<setting slug>/`` is each evaluation's run folder (state, ``result.json``,
    ``result.md``). A folder holding a finished result of the same model, dataset and protocol is
    skipped; any other is resumed (or refused) by :func:`~gemseg.eval.evaluate`'s own state.

    Args:
        model: the base :class:`~gemseg.GEMModel`; each setting runs ``model.variant(...)``.
        datasets: each with its root, protocol and limit (distinct dataset names).
        settings: from :func:`plan_settings`.
        restart: discard every setting's earlier state and result.
        sweeps, grid: what produced ``settings``, recorded in the table.
        log: called with one line per setting (rank 0).
        on_image: called with ``(dataset name, setting slug, image id)`` for every image evaluated.
        per_dataset: ``(setting's model, dataset) -> model`` run on that dataset, e.g. with a preset's
            per-dataset method settings (``gemseg ablate`` passes what ``gemseg eval`` applies); default:
            the setting's model on every dataset.
        refine_for: ``(setting's refiner name) -> refine=`` of its evaluation, e.g. with random weights for a
            refiner's own model (``gemseg ablate --random-weights``); default: the name.
    Returns:
        The ablation table (the content of ``ablation.json``), on every rank.
    """
    dist = dist or Dist()
    names = [d.spec.name for d in datasets]
    if not datasets or len(set(names)) != len(names):
        raise ValueError(f"give each dataset once (got {', '.join(names) or 'none'})")
    check_method(getattr(model, "method", "gem"), settings)
    models = {s.slug: model.variant(method=s.method, **{f: getattr(s.config, f) for f in FACTORS}) for s in settings}
    out = Path(out_dir)
    text_cache: dict = {}  # one backbone: each dataset's vocabulary is encoded once for all settings
    results: dict[tuple[str, str], dict] = {}
    total, k = len(datasets) * len(settings), 0
    for data in datasets:
        for s in settings:
            k += 1
            run_dir = out / "runs" / folder_name(data.spec.name) / s.slug
            m = models[s.slug] if per_dataset is None else per_dataset(models[s.slug], data)
            done = _finished(run_dir, m, data) if dist.is_main and not restart else None
            done = dist.broadcast(done)
            if log is not None and dist.is_main:
                log(f"[{k}/{total}] {data.spec.name} {s.label}" + (": finished earlier" if done else ""))
            if done is None:
                hook = None if on_image is None else (lambda i, n=data.spec.name, g=s.slug: on_image(n, g, i))
                done = evaluate(m, data.spec, data.root, data.protocol, out_dir=run_dir,
                                limit=data.limit, protocol_source=data.protocol_source, dist=dist,
                                save_every=save_every, num_workers=num_workers, crop_batch=crop_batch,
                                restart=restart, progress=progress, on_image=hook, text_cache=text_cache,
                                refine=s.refine if refine_for is None or s.refine is None else refine_for(s.refine))
            results[data.spec.name, s.slug] = done
            table = ablation_table(model, datasets, settings, results, out_dir=out, sweeps=sweeps, grid=grid)
            if dist.is_main:  # after each setting, so that an interrupted ablation shows what it finished
                write_ablation(out, table, plots=plots and k == total)
    dist.barrier()
    return table
