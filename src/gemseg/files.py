"""Small file helpers every layer may use: atomic replacement and JSON files read with one-line errors.

Nothing here imports the rest of gemseg (it sits in the core layer).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

TEMP_MARK = ".gemseg-tmp"  # part of every temporary name gemseg writes; a leftover one is never a result


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Create or replace ``path`` whole: ``write(f)`` fills a temporary file in the same folder, which is
    flushed to disk and then renamed over ``path``. An interruption leaves the old file (or none) and a
    temporary ``*.gemseg-tmp*`` file, never a truncated ``path``."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        interrupt = _interrupt_behind(e)
        if interrupt is not None:  # a writer's clean-up (torch.save's zip) failed after Ctrl-C / SIGTERM
            raise interrupt from None
        raise
    fsync_dir(folder)


def _interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C / SIGTERM (a KeyboardInterrupt) that another exception raised while handling it hides, e.g.
    torch.save's zip writer failing in its ``__exit__`` after the interrupt cut a write short; None when
    ``e`` is the interrupt itself or none is behind it."""
    seen, cause = 0, e.__context__
    while cause is not None and seen < 16:
        if isinstance(cause, KeyboardInterrupt):
            return None if isinstance(e, KeyboardInterrupt) else cause
        cause, seen = cause.__context__, seen + 1
    return None


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON to ``path`` atomically (see :func:`atomic_write`)."""
    def dump(f) -> None:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")

    atomic_write(path, dump, binary=False)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The content of a JSON file; a missing, unreadable or invalid file raises one line naming it
    (``FileNotFoundError`` or ``ValueError``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a folder, not a file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} {path} does not exist") from e
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except RecursionError as e:
        raise ValueError(f"{what} {path} is nested too deeply to read") from e


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
