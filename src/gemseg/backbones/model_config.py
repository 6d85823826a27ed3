"""Checking an open_clip model config file before anything is built from it.

A config is data from a user: every key must be one open_clip knows, the sizes must be positive
integers, and the weights they imply must fit in memory. Without this check a typo is silently ignored
(or a ``TypeError`` deep inside open_clip), and ``"width": 65536`` tries to allocate terabytes.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os

from ..files import read_json

# sizes that must be positive integers, per section ("" is the top level)
_POSITIVE = {"": ("embed_dim",),
             "vision_cfg": ("width", "head_width", "patch_size", "layers"),
             "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers")}
# settings open_clip defaults to None that take a number
_OPTIONAL_NUMBERS = ("ls_init_value", "init_logit_bias", "timm_drop_path", "init_logit_scale")
BYTES_PER_PARAMETER = 4  # open_clip builds the model in float32
MEMORY_SHARE = 0.8  # refuse a model whose weights alone need more than this share of the free memory


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _known_keys(open_clip) -> dict[str, dict[str, object]]:
    """Section -> {key: default} of what ``open_clip.CLIP`` accepts."""
    from open_clip import model as oc_model

    top = {n: p.default for n, p in inspect.signature(open_clip.CLIP).parameters.items()}
    return {"": top,
            "vision_cfg": {f.name: f.default for f in dataclasses.fields(oc_model.CLIPVisionCfg)},
            "text_cfg": {f.name: f.default for f in dataclasses.fields(oc_model.CLIPTextCfg)}}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_value(where: str, section: str, key: str, value, default) -> None:
    """One setting against its kind: sizes positive integers, then by the type of open_clip's default."""
    if key in _POSITIVE[section] and not (section == "vision_cfg" and key == "layers" and isinstance(value, list)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{where}{key} must be a positive integer, got {value!r}")
    elif key == "layers":  # a ResNet tower: four stage depths
        if len(value) != 4 or not all(_is_int(v) and v >= 1 for v in value):
            raise ValueError(f"{where}layers must be a positive integer (or four for a ResNet), got {value!r}")
    elif key == "image_size":
        sizes = value if isinstance(value, list) else [value]
        if len(sizes) not in (1, 2) or not all(_is_int(v) and v >= 1 for v in sizes):
            raise ValueError(f"{where}image_size must be a positive integer or [height, width], got {value!r}")
    elif key in _OPTIONAL_NUMBERS:
        if value is not None and not _is_number(value):
            raise ValueError(f"{where}{key} must be a number or null, got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}{key} must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if not (_is_int(value) if isinstance(default, int) else _is_number(value)) or key == "mlp_ratio" and value <= 0:
            raise ValueError(f"{where}{key} must be a {'whole' if isinstance(default, int) else 'finite'} "
                             f"number{' > 0' if key == 'mlp_ratio' else ''}, got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{where}{key} must be a string, got {value!r}")


def _check_section(path: str, section: str, cfg: dict, known: dict) -> None:
    where = f"{path}: {section + '.' if section else ''}"
    for key, value in cfg.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}{key} is not an open_clip setting{hint}")
        _check_value(where, section, key, value, known[key])
    if section == "" and "embed_dim" not in cfg:
        raise ValueError(f"{where}embed_dim is missing")
    if section == "vision_cfg" and cfg.get("width", 768) % cfg.get("head_width", 64):
        raise ValueError(f"{where}width {cfg.get('width', 768)} must be a multiple of head_width "
                         f"{cfg.get('head_width', 64)}")
    if section == "text_cfg" and cfg.get("width", 512) % cfg.get("heads", 8):
        raise ValueError(f"{where}width {cfg.get('width', 512)} must be a multiple of heads {cfg.get('heads', 8)}")
    size = cfg.get("image_size")
    if section == "vision_cfg" and size is not None:
        if any(s < cfg.get("patch_size", 16) for s in (size if isinstance(size, list) else [size])):
            raise ValueError(f"{where}image_size {size} is smaller than one patch ({cfg.get('patch_size', 16)})")


def parameter_count(cfg: dict, known: dict) -> int:
    """Parameters (and float buffers) of the CLIP model ``cfg`` describes, estimated from its sizes: the
    transformer blocks (attention 4 w² + MLP 2 r w²), embeddings, position tables and projections."""
    v = {**known["vision_cfg"], **cfg.get("vision_cfg", {})}
    t = {**known["text_cfg"], **cfg.get("text_cfg", {})}
    embed = cfg["embed_dim"]
    size = v["image_size"] if isinstance(v["image_size"], list) else [v["image_size"]] * 2
    grid = (size[0] // v["patch_size"]) * (size[-1] // v["patch_size"])
    vision = (v["layers"] if isinstance(v["layers"], int) else sum(v["layers"])) \
        * (4 + 2 * float(v["mlp_ratio"])) * v["width"] ** 2 \
        + 3 * v["patch_size"] ** 2 * v["width"] + (grid + 1) * v["width"] + v["width"] * embed
    text = t["layers"] * (4 + 2 * float(t["mlp_ratio"])) * t["width"] ** 2 + t["vocab_size"] * t["width"] \
        + t["context_length"] * t["width"] + t["context_length"] ** 2 + t["width"] * embed  # ^2: the causal mask
    return int(vision + text)


def read_open_clip_config(path: str, open_clip) -> dict:
    """The checked content of an open_clip model config file (``{"embed_dim", "vision_cfg", "text_cfg"}``).

    Raises:
        FileNotFoundError / ValueError: one line naming the file and the problem: not JSON, an unknown
            key (with the closest known one), a size that is not a positive integer, or weights that
            would need more memory than is free.
    """
    cfg = read_json(path, "open_clip model config")
    if not isinstance(cfg, dict):
        raise ValueError(f"open_clip model config {path} holds a JSON {type(cfg).__name__}, not an object")
    known = _known_keys(open_clip)
    for section in ("vision_cfg", "text_cfg"):
        if not isinstance(cfg.get(section, {}), dict):
            raise ValueError(f"{path}: {section} must be an object of settings")
    _check_section(path, "", {k: v for k, v in cfg.items() if k not in ("vision_cfg", "text_cfg")}, known[""])
    for section in ("vision_cfg", "text_cfg"):
        _check_section(path, section, cfg.get(section, {}), known[section])
    if not isinstance(cfg.get("vision_cfg", {}).get("layers", 12), int):
        return cfg  # a timm tower or a ResNet: open_clip checks those itself
    need = parameter_count(cfg, known) * BYTES_PER_PARAMETER
    free = available_memory()
    if free is not None and need > MEMORY_SHARE * free:
        raise ValueError(f"{path}: this model's weights need about {need / 2**30:,.1f} GiB, more than the "
                         f"{free / 2**30:,.1f} GiB of memory free; check its sizes (width, layers, vocab_size, ...)")
    return cfg
