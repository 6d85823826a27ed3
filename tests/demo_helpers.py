"""Helpers for the web demo tests: a tiny model, a server on a free localhost port, decoded pictures."""
from __future__ import annotations

import contextlib
import io
import os
import socket
import warnings

import numpy as np
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from the tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHELSEA = os.path.join(ROOT, "examples", "chelsea.png")  # 451x300 RGB
ARTIFACTS = os.path.join(ROOT, "outputs", "test-artifacts")  # screenshots (git-ignored)


def require(module: str):
    """Import ``module``; skip with the reason, or fail under GEMSEG_REQUIRE_BACKENDS=1 (CI)."""
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("GEMSEG_REQUIRE_BACKENDS") == "1":
            raise
        pytest.skip(f"{module} not installed (pip install 'gemseg[demo]')")


def random_model(tiny_model_files, depth: int = 3, masks=None):
    """The tiny open_clip config with random weights (``backbone.pretrained is None``); ``masks``: its
    mask source (``create_model(masks=)``)."""
    import torch

    from gemseg import create_model

    cfg, _ = tiny_model_files["open_clip"]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random weights.*")
        return create_model(cfg, depth=depth, masks=masks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model, settings, **launch_kwargs):
    """Run the demo for ``model`` on 127.0.0.1:<free port>; yields its URL, closes it after."""
    from gemseg.demo import build_app, launch

    app = build_app(model, settings=settings)
    port = free_port()
    launch(app, host="127.0.0.1", port=port, settings=settings, block=False, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def decode(data: bytes | str) -> Image.Image:
    """PNG/WebP bytes or a file path -> a loaded PIL image (fails on anything that is not a picture)."""
    im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    im.load()
    return im


def png_bytes(w=40, h=30, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
