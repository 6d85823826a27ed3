"""The web demo: a Gradio page (:mod:`gemseg.demo.app`) over one adapter (:mod:`gemseg.demo.logic`).

``gemseg serve`` and the top-level ``app.py`` (Hugging Face Spaces) both run :func:`build_app`.
Gradio is optional: ``pip install 'gemseg[demo]'``.
"""
from .app import API_NAME, Settings, build_app, launch
from .logic import MODES, DemoError, Limits, Result, run

__all__ = ["build_app", "launch", "Settings", "API_NAME", "run", "Result", "Limits", "DemoError", "MODES"]
