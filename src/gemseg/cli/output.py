"""The output folder: its layout, the resume check, and the pictures' common finishing touches.

``DIR/run.json`` holds the settings of the run and the summary of its latest invocation; each image
gets ``DIR/<key>/`` with its files and, written last, ``record.json``.
"""
from __future__ import annotations

import hashlib
import json
import os

from ..viz import RANDOM_BANNER
from .report import CLIError

RUN_FILE = "run.json"  # settings of the run and the summary of the latest invocation
RECORD_FILE = "record.json"  # per image, written last: its presence means the image is finished
RESERVED = (RUN_FILE, "legend.png")  # run-level names an image folder must not take


def settings_id(command: str, settings: dict) -> str:
    blob = json.dumps({"command": command, "settings": settings}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


class Layout:
    """``DIR/run.json``, ``DIR/legend.png`` and one folder per image, ``DIR/<key>/``, where ``key`` is
    the image's path relative to the folder or glob it came from (the file name for a file given
    alone), extension included; a key equal to a run-level name gets a leading underscore."""

    def __init__(self, root: str, command: str, settings: dict):
        self.root = root
        self.command = command
        self.settings = settings
        self.id = settings_id(command, settings)
        self.model_info: dict = {}  # filled in once the model is built

    def image_dir(self, key: str) -> str:
        if key in RESERVED:
            key = "_" + key
        return os.path.join(self.root, *key.split("/"))

    def is_done(self, key: str) -> bool:
        """The image has a record from these settings and every file the record lists exists."""
        folder = self.image_dir(key)
        try:
            with open(os.path.join(folder, RECORD_FILE), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return False
        if record.get("settings_id") != self.id:
            return False
        return all(os.path.isfile(os.path.join(folder, p)) for p in _listed_files(record))

    def prepare(self, overwrite: bool) -> None:
        """Create DIR, check it is writable, and refuse to mix results of different settings."""
        try:
            os.makedirs(self.root, exist_ok=True)
            probe = os.path.join(self.root, f".gemseg-write-test-{os.getpid()}")
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise CLIError(f"cannot write to output folder {self.root}: {e.strerror or e}") from e
        previous = self.read_run()
        if previous is None or overwrite:
            return
        if previous.get("command") != self.command or previous.get("settings_id") != self.id:
            old = previous.get("settings", {})
            changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
            what = (f"`gemseg {previous.get('command')}`" if previous.get("command") != self.command
                    else f"other settings ({', '.join(changed[:4]) or 'unknown'})")
            raise CLIError(f"{self.root} holds results of {what}; pass --overwrite to replace them, "
                           "or choose another -o")

    def read_run(self) -> dict | None:
        try:
            with open(os.path.join(self.root, RUN_FILE), encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def write_run(self, info: dict) -> None:
        from .. import __version__

        write_json(os.path.join(self.root, RUN_FILE), {
            "gemseg_version": __version__, "command": self.command, "settings_id": self.id,
            "settings": self.settings, **info})


def _listed_files(record: dict) -> list[str]:
    files = record.get("files", {})
    out = [v for v in files.values() if isinstance(v, str)] if isinstance(files, dict) else []
    for p in record.get("prompts", []) or []:
        out += [v for v in (p.get("files") or {}).values() if isinstance(v, str)]
    return out


class Fonts:
    """Fonts by size from --font (checked once at start) or PIL's built-in one."""

    def __init__(self, path: str | None):
        from .. import viz

        self.path = path
        self._cache: dict[int, object] = {}
        if path:
            try:
                viz.get_font(12, path)
            except ValueError as e:
                raise CLIError(str(e)) from e

    def for_size(self, width: int, height: int):
        from .. import viz

        size = viz.font_size_for(width, height)
        if size not in self._cache:
            self._cache[size] = viz.get_font(size, self.path)
        return self._cache[size]


def save_png(image, path: str, *, random_weights: bool, font=None) -> None:
    """Save a picture, with the random-weights banner on top when the model is untrained."""
    from .. import viz

    if random_weights:
        image = viz.banner(image, RANDOM_BANNER, font=font)
    image.save(path)


def grid_size(size: tuple[int, int], height: int = 384) -> tuple[int, int]:
    """(width, height) of one grid panel: ``size`` scaled to ``height`` pixels (never up)."""
    w, h = size
    if h <= height:
        return w, h
    return max(1, round(w * height / h)), height
