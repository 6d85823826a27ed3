"""Exceptions gemseg raises on purpose (besides ``ValueError``/``TypeError`` for bad input), and the one
line a command or page shows for an exception."""
from __future__ import annotations


class WeightsUnavailableError(RuntimeError):
    """The requested model weights (or, for a hub id, its config) are neither cached locally nor
    downloadable.

    Besides the message (worded for Python callers), it carries what the command line needs to word
    its own: ``model`` (what was asked for), ``missing`` (``"weights"`` or ``"config"``), ``backend``
    (``"openclip"`` or ``"hf"``) and ``reason`` (the first line of the underlying error, whole).
    """

    def __init__(self, message: str, *, model: str | None = None, missing: str = "weights",
                 backend: str | None = None, reason: str = ""):
        super().__init__(message)
        self.model = model
        self.missing = missing
        self.backend = backend
        self.reason = reason


class StateError(RuntimeError):
    """An evaluation output folder's state cannot be resumed (other settings, inconsistent parts);
    raised by :mod:`gemseg.eval.state`."""


class CLIError(Exception):
    """A problem that stops a command before any image is processed; printed as one line."""


def one_line(e: BaseException) -> str:
    """The first line of ``e``'s message; unexpected exception types keep their name in front."""
    text = str(e.args[0]) if isinstance(e, KeyError) and len(e.args) == 1 else str(e).strip()
    first = text.splitlines()[0] if text else ""
    if first and isinstance(e, (CLIError, ValueError, OSError, ImportError, WeightsUnavailableError)):
        return first
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
