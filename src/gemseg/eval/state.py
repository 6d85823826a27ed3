"""Resumable evaluation state, written atomically so that an interrupted run continues where it stopped
without counting an image twice or losing one.

Layout under ``<out>/state/``:

- ``run.json``: the settings of the run (dataset, protocol, model); a resumed run must match them.
- ``part-g<G>-r<R>.pt``: the image ids rank R finished in session G and the counts they added. Each
  save replaces the file whole (write a temporary file, then rename), so ids and counts always agree;
  images finished after the last save are simply evaluated again by the next session.

A new session reads every part: the union of their ids is done, the sum of their counts is carried
over, and its own parts get the next session number G.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import StateError  # noqa: F401  (defined with gemseg's errors: the CLI catches it without torch)
from ..files import atomic_write, read_json

_PART = re.compile(r"part-g(\d+)-r(\d+)\.pt\Z")


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it
    (:func:`gemseg.files.atomic_write`: an interruption leaves the old file or none, and stays an interruption)."""
    atomic_write(str(path), lambda f: torch.save(obj, f))


def _normalized(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


class RunState:
    """The ``state/`` folder of one evaluation output folder."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir) / "state"

    def prepare(self, settings: dict, *, restart: bool = False) -> tuple[int, set[str], dict[str, torch.Tensor]]:
        """Start a session (rank 0 only): check or record ``settings``, and read what earlier sessions did.

        Returns:
            ``(session number, ids already done, their summed counts)``.
        Raises:
            StateError: the folder holds a run with other settings, or parts that overlap.
        """
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = _normalized(settings)
        run_file = self.dir / "run.json"
        if run_file.exists():
            try:
                previous = read_json(run_file, "run state")
            except (OSError, ValueError) as e:
                raise StateError(f"{e}; pass --restart to discard the state, or choose another --out") from e
            if previous != settings:
                changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
                raise StateError(f"{self.dir.parent} holds an evaluation with other settings ({', '.join(changed)} "
                                   "differ); pass --restart to discard it, or choose another --out")
        else:
            tmp = run_file.with_name(".run.json.tmp")
            tmp.write_text(json.dumps(settings, indent=1, sort_keys=True))
            os.replace(tmp, run_file)
        done: set[str] = set()
        totals: dict[str, torch.Tensor] = {}
        last = -1
        for path in sorted(self.dir.iterdir()):
            m = _PART.match(path.name)
            if not m:
                continue
            last = max(last, int(m.group(1)))
            part = _read_part(path)
            overlap = done.intersection(part["ids"])
            if overlap:
                raise StateError(f"{path} repeats {len(overlap)} finished images; the state is inconsistent, "
                                   "pass --restart")
            done.update(part["ids"])
            for key, value in part["counts"].items():
                totals[key] = totals[key] + value if key in totals else value.clone()
        return last + 1, done, totals

    def writer(self, session: int, rank: int) -> "PartWriter":
        return PartWriter(self.dir / f"part-g{session:03d}-r{rank:03d}.pt")


def _read_part(path: Path) -> dict:
    """A part file's ``{"ids": [str], "counts": {str: tensor}}``; anything else (truncated, not a torch
    file, a pickle that needs code to run, other content) raises :class:`StateError` naming the file."""
    fix = "; pass --restart to discard the run state"
    try:
        part = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; none of them is a bug of ours
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise StateError(f"run state file {path} cannot be read ({reason}){fix}") from e
    ok = isinstance(part, dict) and isinstance(part.get("ids"), list) and isinstance(part.get("counts"), dict) \
        and all(isinstance(i, str) for i in part["ids"]) \
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in part["counts"].items())
    if not ok:
        raise StateError(f"run state file {path} does not hold image ids and counts{fix}")
    return part


class PartWriter:
    """What one rank adds during one session, saved whole on every :meth:`save`."""

    def __init__(self, path: Path):
        self.path = path
        self.ids: list[str] = []
        self.counts: dict[str, torch.Tensor] = {}
        self.unsaved = 0

    def add(self, image_id: str, counts: dict[str, torch.Tensor]) -> None:
        """Record one finished image and its counts (CPU int64 tensors)."""
        for key, value in counts.items():
            value = value.detach().cpu().long()
            self.counts[key] = self.counts[key] + value if key in self.counts else value.clone()
        self.ids.append(image_id)
        self.unsaved += 1

    def save(self) -> None:
        if self.ids and self.unsaved:
            atomic_save({"ids": list(self.ids), "counts": dict(self.counts)}, self.path)
        self.unsaved = 0
