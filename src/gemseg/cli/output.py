"""The output folder: its layout, the resume check, and the pictures' common finishing touches.

``DIR/run.json`` holds the settings of the run and the summary of its latest invocation; each image
gets ``DIR/<key>/`` with its files and, written last, ``record.json``.

Replacing an image's results (:meth:`Layout.commit`): the files are written into a staging folder
``DIR/<key>/.gemseg-tmp<pid>/``, flushed to disk, the old ``record.json`` is removed, each file is
renamed into place, and the new record (with each file's SHA-256) is written last, atomically. An image
is finished only if its record has these settings and every file it lists exists with that digest, so
an interruption at any point leaves the image either finished or redone by the next run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

from ..files import TEMP_MARK, file_digest, fsync_dir, write_json
from ..viz import RANDOM_BANNER
from .report import CLIError

RUN_FILE = "run.json"  # settings of the run and the summary of the latest invocation
RECORD_FILE = "record.json"  # per image, written last: its presence means the image is finished
RESERVED = (RUN_FILE, "legend.png")  # run-level names an image folder must not take


def settings_id(command: str, settings: dict) -> str:
    blob = json.dumps({"command": command, "settings": settings}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_key(key: str) -> list[str]:
    """The '/'-separated parts of an image key; a key that could leave the output folder (absolute,
    empty parts, ``.`` or ``..``) is refused with one line."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise ValueError(f"image key {key!r} would leave the output folder; rename the input or give it "
                         "from inside its folder")
    return parts


class Layout:
    """``DIR/run.json``, ``DIR/legend.png`` and one folder per image, ``DIR/<key>/``, where ``key`` is
    the image's path relative to the folder or glob it came from (the file name for a file given
    alone), extension included; a key whose first part is a run-level name (``run.json``,
    ``legend.png``) gets a leading underscore on that part."""

    def __init__(self, root: str, command: str, settings: dict):
        self.root = root
        self.command = command
        self.settings = settings
        self.id = settings_id(command, settings)
        self.model_info: dict = {}  # filled in once the model is built

    def image_dir(self, key: str) -> str:
        parts = check_key(key)
        if parts[0] in RESERVED or parts[0].startswith("_") and parts[0].lstrip("_") in RESERVED:
            parts[0] = "_" + parts[0]  # `_run.json` too, so that `run.json` and `_run.json` stay apart
        return os.path.join(self.root, *parts)

    def is_done(self, key: str) -> bool:
        """The image has a record from these settings and every file the record lists exists with the
        SHA-256 the record gives it."""
        folder = self.image_dir(key)
        try:
            with open(os.path.join(folder, RECORD_FILE), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError, RecursionError):
            return False
        if not isinstance(record, dict) or record.get("settings_id") != self.id:
            return False
        digests = record.get("sha256")
        if not isinstance(digests, dict):
            return False
        try:
            return all(isinstance(digests.get(p), str) and os.path.isfile(os.path.join(folder, p))
                       and file_digest(os.path.join(folder, p)) == digests[p] for p in _listed_files(record))
        except OSError:
            return False

    @staticmethod
    def stage(folder: str) -> str:
        """A fresh, empty staging folder inside the image folder ``folder`` (leftovers of interrupted
        runs removed); the image's files are written there, then :meth:`commit` moves them in."""
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if TEMP_MARK in name:
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        staging = os.path.join(folder, f"{TEMP_MARK}{os.getpid()}")
        os.mkdir(staging)
        return staging

    @staticmethod
    def commit(folder: str, staging: str, record: dict) -> None:
        """Replace the image's results in ``folder`` with the files in ``staging``, then write ``record``
        (given each file's SHA-256 under ``"sha256"``) last."""
        names = sorted(os.listdir(staging))
        digests = {}
        for name in names:
            path = os.path.join(staging, name)
            if not os.path.isfile(path):
                raise RuntimeError(f"{path}: the writer left something other than a file in the staging folder")
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            digests[name] = file_digest(path)
        old = os.path.join(folder, RECORD_FILE)
        if os.path.lexists(old):
            os.remove(old)  # from here until the new record exists the image is not finished
            fsync_dir(folder)
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
        os.rmdir(staging)
        fsync_dir(folder)
        write_json(os.path.join(folder, RECORD_FILE), {**record, "sha256": digests})

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
