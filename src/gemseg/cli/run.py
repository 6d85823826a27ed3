"""The loop every image command runs: find the images, build the model once, then load, infer in
batches and write each image, with a progress bar, a summary and an exit code.

Exit codes: 0 every image done or skipped; 1 some input or image failed (the others were still
processed); 2 nothing was run (bad arguments, no images, model or weights unavailable, output folder
not writable; printed by :func:`gemseg.cli.main`); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from ..io import ImageSource, LoadedImage, find_images, load_image
from . import signals
from .options import check_weights_args
from .output import Layout
from .report import CLIError, Reporter, one_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# --- the loop -----------------------------------------------------------------------------------------
@dataclass
class Item:
    """One image on its way through the loop."""

    source: ImageSource
    loaded: LoadedImage
    folder: str
    timing: dict = field(default_factory=dict)


@dataclass
class Summary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path or input, reason)
    seconds: float = 0.0
    interrupted: bool = False
    interrupt_code: int = EXIT_INTERRUPTED  # 130 for Ctrl-C, 143 for SIGTERM

    @property
    def failed(self) -> int:
        return len(self.failures)

    def exit_code(self) -> int:
        if self.interrupted:
            return self.interrupt_code
        return EXIT_FAILED if self.failures else EXIT_OK

    def to_dict(self) -> dict:
        return {"images": self.total, "done": self.done, "failed": self.failed, "skipped": self.skipped,
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "failures": [{"input": p, "error": e} for p, e in self.failures]}


def load_options(args: argparse.Namespace) -> dict:
    background = {"white": (255, 255, 255), "black": (0, 0, 0), "drop": None}[args.transparency]
    return dict(max_pixels=args.max_pixels, alpha_background=background)


def infer_batch(infer: Callable[[list[Item]], list], batch: list[Item]) -> list:
    """``infer(batch)``, one result per item; when the batch fails, each item again alone, so that only
    the culprit fails (its result is then the exception)."""
    try:
        return infer(batch)
    except Exception as e:
        if len(batch) == 1:
            return [e]
    results = []
    for item in batch:
        try:
            results.append(infer([item])[0])
        except Exception as e1:
            results.append(e1)
    return results


def run_images(args: argparse.Namespace, *, layout: Layout, sources: list[ImageSource],
               infer: Callable[[list[Item]], list], write: Callable[[Item, object], dict],
               report: Reporter, summary: Summary) -> Summary:
    """Load, infer in batches and write each image; one image's failure never stops the others.

    ``infer(items)`` returns one result per item; ``write(item, result)`` writes the item's files and
    returns its record (without the common fields), which is then written last as ``record.json``.
    """
    opts = load_options(args)
    start = time.perf_counter()
    pending: list[Item] = []

    def fail(path: str, e: BaseException) -> None:
        msg = one_line(e)
        msg = msg if msg.startswith(path) else f"{path}: {msg}"
        summary.failures.append((path, msg))
        report.error(msg)

    def flush(bar) -> None:
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        t0 = time.perf_counter()
        results = infer_batch(infer, batch)
        per_image = (time.perf_counter() - t0) / len(batch)
        for item, result in zip(batch, results):
            if isinstance(result, Exception):
                fail(item.source.path, result)
                bar.update(1)
                continue
            item.timing["model_s"] = per_image
            try:
                replace_results(layout, item, result, write)
                summary.done += 1
            except Exception as e:
                fail(item.source.path, e)
            bar.update(1)

    with report.progress(len(sources), desc=layout.command) as bar:
        try:
            for source in sources:
                signals.check()  # a Ctrl-C swallowed while the model loaded (a library's bare except)
                try:
                    folder = layout.image_dir(source.key)  # a key that would leave DIR is refused
                    if not args.overwrite and layout.is_done(source.key):
                        summary.skipped += 1
                        bar.update(1)
                        continue
                    t0 = time.perf_counter()
                    loaded = load_image(source.path, **opts)
                except Exception as e:
                    fail(source.path, e)
                    bar.update(1)
                    continue
                for note in loaded.notes:
                    report.info(f"{source.path}: {note}")
                pending.append(Item(source, loaded, folder, {"load_s": time.perf_counter() - t0}))
                if len(pending) >= args.batch_size:
                    flush(bar)
            flush(bar)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (gemseg.cli.signals.Terminated)
            summary.interrupted, summary.interrupt_code = True, signals.exit_code(e)
            signals.handled()
            report.error(f"{signals.describe(e)}; finished images are kept and skipped on the next run")
    summary.seconds = time.perf_counter() - start
    return summary


def replace_results(layout: Layout, item: Item, result, write: Callable[[Item, object], dict]) -> None:
    """Write one image's results the one way both commands share (:meth:`Layout.commit`): ``write``
    fills a staging folder inside the image's folder, then the files replace the old ones and the
    record is written last. A failed or interrupted write leaves the old results as they were."""
    t1 = time.perf_counter()
    staging = layout.stage(item.folder)
    try:
        record = write(dataclasses.replace(item, folder=staging), result)
        item.timing["write_s"] = time.perf_counter() - t1
        item.timing["total_s"] = sum(item.timing[k] for k in ("load_s", "model_s", "write_s"))
        record = {**common_record(item, layout), **record, "timing": {k: round(v, 4) for k, v in item.timing.items()}}
        layout.commit(item.folder, staging, record)  # record.json last
    finally:
        if os.path.isdir(staging):  # a failed or interrupted write
            shutil.rmtree(staging, ignore_errors=True)


def common_record(item: Item, layout: Layout) -> dict:
    from .. import __version__

    w, h = item.loaded.size
    return {"schema": f"gemseg.{layout.command}/1", "gemseg_version": __version__,
            "settings_id": layout.id, "random_weights": bool(layout.model_info.get("random_weights")),
            "model": layout.model_info, "image": os.path.abspath(item.source.path), "key": item.source.key,
            "width": w, "height": h, "original_mode": item.loaded.original_mode,
            "exif_transposed": item.loaded.exif_transposed, "notes": list(item.loaded.notes)}


def _quiet_hub_progress() -> None:
    """Silence the download and weight-loading bars of huggingface_hub and transformers."""
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        return
    disable_progress_bars()  # transformers reads this when it is imported
    if "transformers" in sys.modules:  # already imported: tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def load_model(args: argparse.Namespace, report: Reporter):
    """The model ``args`` describe, checked against ``--size``, and whether its weights are random."""
    from .common import build_model

    model = build_model(args)  # seeded when --random-weights
    if any(s < p for s, p in zip(args.size, model.patch_size)):
        raise CLIError(f"--size {args.size[0]}x{args.size[1]} is smaller than one "
                       f"{model.patch_size[0]}x{model.patch_size[1]} patch of {model.backbone.name}")
    random_weights = model.backbone.pretrained is None
    if random_weights:
        report.warn("RANDOM WEIGHTS: the model is untrained, its outputs are meaningless "
                    "(demo and test mode); every output is marked 'random weights'")
    elif args.random_weights:
        report.warn(f"--random-weights has no effect on {args.model}: its weights come with it")
    return model, random_weights


# --- the whole command ----------------------------------------------------------------------------------
@dataclass
class Task:
    """What a command plugs into :func:`execute`."""

    command: str
    settings: dict
    setup: Callable[[object], None]  # called with the model once, before any image
    infer: Callable[[list[Item]], list]
    write: Callable[[Item, object], dict]
    finish: Callable[[Layout], None] | None = None  # run-level files (e.g. legend.png)


def execute(args: argparse.Namespace, make_task: Callable[[argparse.Namespace, Reporter], Task]) -> int:
    """Run an image command end to end and return its exit code; under torchrun, on this rank's share
    of the images (:mod:`gemseg.cli.parallel`). Everything before the model is built (arguments, images,
    output folder, whether the weights are there) is checked before torch is imported: an offline
    first run with missing weights ends in well under a second plus the hub probe."""
    joined: list = []  # the process group, once joined (after the checks)
    try:
        return _execute(args, make_task, joined)
    finally:
        for dist in joined:
            dist.close()


def _execute(args: argparse.Namespace, make_task: Callable[[argparse.Namespace, Reporter], Task],
             joined: list) -> int:
    from . import precheck
    from .common import prepare_hub
    from .parallel import join, main_rank

    report = Reporter(args.quiet, main=main_rank())
    summary = Summary()
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    with report.capture_warnings():
        try:
            task = make_task(args, report)
            check_weights_args(args)
            sources = _find(args, report, summary, main_rank())
            layout = Layout(args.output, task.command, task.settings)
            layout.prepare(args.overwrite)
            prepare_hub(args)  # before huggingface_hub is imported, as _quiet_hub_progress does
            precheck.check(args)  # weights sure to be missing: said before torch is imported
            dist = join(args)  # torch from here on
            joined.append(dist)
            if args.quiet:
                _quiet_hub_progress()
            model, random_weights = load_model(args, report)
            layout.model_info = {
                "name": model.backbone.name, "pretrained": model.backbone.pretrained,
                "random_weights": random_weights, "backbone": type(model.backbone).__name__,
                "patch_size": list(model.patch_size), "device": str(model.device)}
            task.setup(model)
        except KeyboardInterrupt as e:
            signals.handled()
            report.error(signals.describe(e))
            return signals.exit_code(e)
        # bad arguments, missing files and unavailable weights propagate to gemseg.cli.main, which prints
        # them as one line and exits with EXIT_USAGE; anything else is a bug and keeps its traceback
        run_info = {"model": layout.model_info, "random_weights": random_weights, "started": started,
                    "world_size": dist.world_size}
        _run_all(args, task, layout, sources, run_info, report, summary, dist)
    if not args.quiet and dist.is_main:
        rate = f", {summary.done / summary.seconds:.2f} img/s" if summary.done and summary.seconds > 0 else ""
        report.info(f"{task.command}: {summary.total} image(s): {summary.done} done, {summary.failed} failed, "
                    f"{summary.skipped} skipped (already done) in {summary.seconds:.1f} s{rate}; "
                    f"outputs in {args.output}" + ("  [RANDOM WEIGHTS]" if random_weights else ""))
    return summary.exit_code()


def _find(args: argparse.Namespace, report: Reporter, summary: Summary, is_main: bool) -> list[ImageSource]:
    """The images the inputs name; inputs that name none are failures (said and counted by rank 0)."""
    found = find_images(args.images, recursive=args.recursive)
    for note in found.notes:
        report.warn(note)
    problems = found.problems if is_main else []  # every rank finds them: rank 0 says so
    for _, reason in problems:
        report.error(reason)
    summary.failures += problems
    if not found.sources:
        raise CLIError("no images to process")
    summary.total = len(found.sources) + len(found.problems)
    return found.sources


def _run_all(args, task: Task, layout: Layout, sources: list[ImageSource], run_info: dict, report: Reporter,
             summary: Summary, dist) -> None:
    """This rank's share of ``sources``, then (rank 0, once every rank is done) the run-level files."""
    from .parallel import merge, share

    mine, summary.skipped = share(dist, layout, sources, args.overwrite)
    if dist.is_main:
        layout.write_run({**run_info, "last_run": None})
    run_images(args, layout=layout, sources=mine, infer=task.infer, write=task.write, report=report,
               summary=summary)
    merge(dist, summary)  # waits for every rank: the run-level files then see every image
    if not dist.is_main:
        return
    if task.finish is not None:
        try:
            task.finish(layout)
        except OSError as e:
            report.error(f"cannot write run-level files: {one_line(e)}")
    layout.write_run({**run_info, "last_run": summary.to_dict()})


# --- model side -------------------------------------------------------------------------------------
def similarity_maps(model, items: list[Item], text, size: tuple[int, int]) -> list:
    """Cosine similarity of each image with each query: a list of [Q, H, W] float tensors on the CPU at
    the model's input ``size`` (H, W); ``text`` is [Q, D] from ``model.encode_text``, computed once per run."""
    images = [it.loaded.image for it in items]
    extra = {}
    if model.needs_masks and model.mask_source is not None:  # corrclip: each image's
        from ..masks import label_maps  # masks, made once at its own size (mask files are found by its path)

        extra["masks"] = label_maps(model.mask_source, images, paths=[it.source.path for it in items], size=size)
    return list(model.heatmaps(images, text, size=size, **extra).float().cpu())  # B x (Q, H, W)

