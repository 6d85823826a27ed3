"""Weights that cannot be loaded, found out before torch is imported.

Offline (``HF_HUB_OFFLINE=1``, or the hub probe of :mod:`gemseg.hub` found the hub unreachable), a model
whose files are not on this machine cannot be built, and importing torch with open_clip or transformers
to find that out takes seconds on a small machine. :func:`unavailable` looks at the files the model needs
with light code only: an open_clip pretrained tag's weights (where open_clip loads them from, read from
a table of the installed open_clip version, ``gemseg/data/open_clip/``, or the one ``gemseg models``
keeps) and a Hugging Face id's ``config.json`` and weights in the hub cache. It answers only when the
real loader is sure to fail the same way (for open_clip, the same cache lookup,
:func:`gemseg.hub.cached_open_clip_weights`, that the backend makes offline); local configs, checkpoints,
folders, ``--random-weights``, ``hf-hub:`` repos, a reachable hub and anything it does not know go to
the real loader. The proxy VFM of ``proxyclip``, ``cass`` and ``corrclip`` (``--proxy``, a short name of
:data:`gemseg.names.VFMS`, or the method's default) is checked the same way in timm's hub repo; Trident's
DINO + SAM pair and the mask generators of ``--masks`` are left to their loaders.
"""
from __future__ import annotations

import argparse
import json
import os
from importlib.metadata import PackageNotFoundError, version

from ..errors import WeightsUnavailableError
from ..hub import cached_file, cached_open_clip_weights, offline_mode

TABLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "open_clip")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def open_clip_version() -> str | None:
    """The installed open_clip_torch's version (package metadata: open_clip itself is not imported)."""
    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return None


def table_path(open_clip_version: str) -> str:
    """The shipped table of one open_clip version: ``{"open_clip_version", "models": [{"model",
    "pretrained", "cfg"}]}`` (cfg: the ``file``/``hf_hub``/``url`` of ``open_clip.get_pretrained_cfg``)."""
    return os.path.join(TABLE_DIR, f"pretrained-{open_clip_version}.json")


def open_clip_sources(name: str, tag: str) -> dict | None:
    """Where open_clip loads ``name``/``tag`` from (``file``, ``hf_hub``, ``url``), from the table of
    the installed open_clip version; None when no table knows the pair."""
    found = open_clip_version()
    if found is None:
        return None
    from .models import cached_tables

    for rows in (_shipped_rows(found), (cached_tables() or {}).get("open_clip", [])):
        for r in rows:
            if r.get("model") == name and r.get("pretrained") == tag and isinstance(r.get("cfg"), dict):
                return r["cfg"]
    return None


def _shipped_rows(open_clip_version: str) -> list:
    try:
        with open(table_path(open_clip_version), encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError):
        return []
    ok = isinstance(table, dict) and table.get("open_clip_version") == open_clip_version
    return table.get("models", []) if ok else []


def unavailable(args: argparse.Namespace) -> WeightsUnavailableError | None:
    """The error the real loader would raise for the CLIP model ``args`` describe (worded by the library,
    as :func:`gemseg.cli.common.cli_weights_error` then words it for the command line), when it is
    sure to; None otherwise. Call it after :func:`gemseg.cli.common.prepare_hub`."""
    from ..backbones import default_pretrained, resolve_backend

    if not offline_mode():
        return None
    error = None
    if not (os.path.isdir(args.model) or args.model.endswith(".json")):  # a local model needs nothing here
        which = resolve_backend(args.model, args.backend)  # a folder without config.json raises as the loader does
        if which == "open_clip" and _installed("open_clip", "huggingface_hub"):
            error = _open_clip(args, default_pretrained)
        elif which in ("hf", "hf-blip", "hf-siglip") and _installed("transformers", "huggingface_hub"):
            error = _hugging_face(args)
        # else: a backend missing (the loader says what to pip install), or one registered in Python
    return error if error is not None else _proxy(args)  # the CLIP model is built first, then its proxy


def _installed(*modules: str) -> bool:
    """Whether each of ``modules`` can be imported (found on the path, not imported)."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in modules)


def _open_clip(args: argparse.Namespace, default_pretrained) -> WeightsUnavailableError | None:
    if args.checkpoint or args.random_weights:
        return None
    name = args.model.replace("/", "-")
    tag = args.pretrained if args.pretrained is not None else default_pretrained(args.model, args.backend)
    if tag and os.path.isfile(tag):  # a weights file given as the tag
        return None
    if name.startswith("hf-hub:"):
        return None  # the repo holds config and weights: left to open_clip
    cfg = open_clip_sources(name, tag) if tag else None
    if cfg and (cfg.get("hf_hub") or cfg.get("url")) and cached_open_clip_weights(cfg, args.cache_dir) is None:
        where = (cfg.get("hf_hub") or cfg.get("url") or "").rstrip("/")
        return _error(f"{name} ({tag})", "openclip", f"{where} is not in the local cache")
    return None


def _hugging_face(args: argparse.Namespace) -> WeightsUnavailableError | None:
    if args.pretrained or args.checkpoint:
        return None  # refused with its own message by the real loader
    if cached_file(args.model, ["config.json"], args.cache_dir) is None:
        return _error(args.model, "hf", f"{args.model}/config.json is not in the local cache", missing="config")
    if not args.random_weights and cached_file(args.model, list(HF_WEIGHTS), args.cache_dir) is None:
        return _error(args.model, "hf", f"no weights file of {args.model} ({', '.join(HF_WEIGHTS)}) is in the "
                                        "local cache")
    return None


def _proxy(args: argparse.Namespace) -> WeightsUnavailableError | None:
    """The proxy VFM's timm weights (``--proxy-weights pretrained``), when the method's proxy is one VFM."""
    from ..names import DEFAULT_PROXIES, VFMS, method_needs

    method = getattr(args, "method", "gem")
    if "proxy" not in (method_needs(method) or ()) or args.random_weights or \
            getattr(args, "proxy_weights", "pretrained") != "pretrained" or method not in DEFAULT_PROXIES:
        return None
    if getattr(args, "masks", None) is not None:
        return None  # the mask generator is loaded before the proxy: its loader speaks first
    name = getattr(args, "proxy", None) or DEFAULT_PROXIES[method]
    if name not in VFMS or not _installed("timm", "huggingface_hub"):
        return None  # a timm name, a folder or a file: left to the loader
    repo = "timm/" + VFMS[name]
    if cached_file(repo, ["model.safetensors", "pytorch_model.bin"], args.cache_dir) is not None:
        return None
    from ..hub import offline_note

    return WeightsUnavailableError(
        f"cannot load weights for VFM {name} ({VFMS[name]}){offline_note()}: {repo} is not in the local cache. To "
        "supply them, put timm's weights in the hub cache (HF_HOME, or --cache-dir DIR), pass --proxy-weights PATH "
        "with the original or timm checkpoint file, or run with --random-weights for a demo.")


def _error(what: str, backend: str, reason: str, *, missing: str = "weights") -> WeightsUnavailableError:
    return WeightsUnavailableError(f"cannot load {'the model config' if missing == 'config' else 'weights'} for "
                                   f"{what}: {reason}", model=what, missing=missing, backend=backend, reason=reason)


def check(args: argparse.Namespace) -> None:
    """Raise the command line's one-line weights error when :func:`unavailable` finds one."""
    error = unavailable(args)
    if error is not None:
        from .common import cli_weights_error

        raise cli_weights_error(error)
