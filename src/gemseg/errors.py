"""Exceptions gemseg raises on purpose (besides ``ValueError``/``TypeError`` for bad input)."""
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
