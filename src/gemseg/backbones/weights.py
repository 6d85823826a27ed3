"""Safe checkpoint loading and the one-line message for weights that cannot be found."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
from typing import Iterator

import torch
from torch import nn

from ..errors import WeightsUnavailableError
from ..hub import offline_note

# how to supply what is missing, in Python terms (the command line words its own: gemseg.cli.common)
_HOW_TO = {
    ("openclip", "weights"): ("pass a pretrained tag (gemseg.list_models() lists them) with the weights in "
                              "the open_clip/Hugging Face cache (HF_HOME, or cache_dir=), a local file with "
                              "checkpoint=PATH, or pretrained=None for random weights"),
    ("hf", "weights"): ("pass a Hugging Face id with the model in the hub cache (HF_HOME, or cache_dir=), "
                        "or a local folder saved with save_pretrained()"),
    ("hf", "config"): ("put the model in the hub cache (HF_HOME, or cache_dir=) or pass a local folder "
                       "saved with save_pretrained(); even random weights need the config"),
}


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, whole (never cut: a cut mid-word reads as a typo)."""
    text = str(err).strip()
    return text.splitlines()[0].rstrip(". ") if text else type(err).__name__


def weights_unavailable(what: str, backend: str, err: BaseException, *,
                        missing: str = "weights") -> WeightsUnavailableError:
    """The error for ``what`` (a model name, with its tag) whose ``missing`` part cannot be loaded."""
    reason = first_line(err)
    noun = "the model config" if missing == "config" else "weights"
    return WeightsUnavailableError(
        f"cannot load {noun} for {what}{offline_note()}: {reason}. To supply "
        f"{'it' if missing == 'config' else 'them'}, {_HOW_TO[backend, missing]}.",
        model=what, missing=missing, backend=backend, reason=reason)


@contextlib.contextmanager
def root_log_as_warnings(*, drop: tuple[str, ...] = ()) -> Iterator[None]:
    """Collect what a library logs through the root logger (open_clip calls ``logging.warning``, which
    sets up a ``WARNING:root:`` handler on first use) and re-issue it as ``warnings.warn`` once the block
    succeeds, leaving out messages that contain one of ``drop``. When the block raises, the records are
    dropped: the error says what went wrong."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # a Handler of our own: collecting is all it does
    root = logging.getLogger()
    root.addHandler(handler)  # root now has a handler, so logging.warning() sets up no other
    try:
        yield
    finally:
        root.removeHandler(handler)
    for record in records:
        text = record.getMessage()
        if not any(d in text for d in drop):
            warnings.warn(text, stacklevel=3)


# what loading a hub folder's weights raises for a corrupt file or a pickle that needs code to run
# (torch.load with weights_only=True refuses those: UnpicklingError; truncated zips: RuntimeError)
UNREADABLE_WEIGHTS = (pickle.UnpicklingError, EOFError, RuntimeError)


def unreadable_weights(name: str, err: BaseException) -> ValueError:
    """The one-line error for a model folder or hub id whose weights file is corrupt or unsafe."""
    return ValueError(f"the weights of {name} cannot be loaded: corrupt, or a pickle that would run code and "
                      f"is refused ({_reason(err)[:120]}); save the model again with safetensors")


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Unwraps ``{"state_dict": ...}``/``{"model": ...}`` containers and a DDP ``module.`` prefix. A file
    that is missing, a folder, unreadable, truncated, malformed, a pickle that needs code to run, or not a
    mapping of names to tensors raises one line naming it (``FileNotFoundError`` or ``ValueError``).
    """
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path} is a folder, not a weights file; give the .pt/.bin/.safetensors "
                         "file (a Hugging Face folder goes to --model instead)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".safetensors"):
        state = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, a pickle of code, not a torch file at all
            raise ValueError(f"checkpoint {path} cannot be read as a torch weights file ({_reason(e)}); "
                             "use a state dict saved with torch.save or .safetensors") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    bad = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ValueError(f"checkpoint {path} is not a state dict: entry {str(bad[0])[:60]!r} holds a "
                         f"{type(bad[1]).__name__}, not a tensor")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:160] if text else "") or type(e).__name__


def _read_safetensors(path: str) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ImportError("reading .safetensors needs `pip install safetensors`") from e
    try:
        return load_file(path, device="cpu")
    except MemoryError as e:
        raise ValueError(f"checkpoint {path} declares tensors too large to load") from e
    except Exception as e:  # SafetensorError (header too small, too large, invalid), overflowing shapes, ...
        raise ValueError(f"checkpoint {path} is not a valid .safetensors file ({_reason(e)})") from e


def load_checkpoint_strict(model: nn.Module, path: str, name: str) -> None:
    """Load ``path`` into ``model``; every name and shape must match."""
    state = load_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(s for s in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:3]]}" if wrong else "",
        ) if s)
        raise ValueError(f"checkpoint {path} does not fit {name}: {detail}")
    model.load_state_dict(state, strict=True)
