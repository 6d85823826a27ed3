"""The values of one API request, checked before the demo's logic sees them.

Gradio's own checks of its components (a slider's range, a radio's choices) raise with a traceback in
the server's log; the demo's inputs therefore hand over the raw values (see ``gemseg.demo.app``) and
this module checks each one, raising :class:`~gemseg.demo.logic.DemoError` with one line for the client.
"""
from __future__ import annotations

import math

from .logic import MASK_CHOICES, MODES, DemoError, Limits

MAX_TEXT = 10_000  # characters in the prompts or background box: far beyond any vocabulary (our choice)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def text(value, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DemoError(f"{name} must be text, got {_shown(value)}")
    if len(value) > MAX_TEXT:
        raise DemoError(f"{name} is {len(value):,} characters long; at most {MAX_TEXT:,}")
    return value


def choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise DemoError(f"unknown {name} {_shown(value)}; use one of {', '.join(choices)}")
    return value


def number(value, name: str, lo: float, hi: float, *, whole: bool = False, optional: bool = False):
    """``value`` as a float (an int with ``whole``) in [lo, hi], or one line saying what is wrong."""
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and whole and value != int(value):
        ok = False
    if not ok or not lo <= value <= hi:
        kind = "a whole number" if whole else "a number"
        raise DemoError(f"{name} must be {kind} between {lo:g} and {hi:g}, got {_shown(value)}")
    return int(value) if whole else float(value)


def request(prompts, mode, background, threshold, method, depth, iterations, masks=None, *, methods,
            max_depth: int, limits: Limits) -> dict:
    """The checked keyword arguments of :func:`gemseg.demo.logic.run` for one request."""
    return dict(prompts=text(prompts, "prompts"), mode=choice(mode, "mode", MODES),
                background=text(background, "the background rule", optional=True),
                threshold=number(threshold, "threshold", 0, 1, optional=True),
                method=choice(method, "method", methods) if method is not None else None,
                depth=number(depth, "depth", 0, max_depth, whole=True, optional=True),
                iterations=number(iterations, "iterations", 0, limits.max_iterations, whole=True, optional=True),
                masks=choice(masks, "masks choice", MASK_CHOICES) if masks is not None else None)
