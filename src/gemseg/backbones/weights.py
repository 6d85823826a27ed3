"""Safe checkpoint loading and the one-line message for weights that cannot be found."""
from __future__ import annotations

import os
import pickle

import torch
from torch import nn

from ..errors import WeightsUnavailableError

_HOW_TO = {
    "openclip": ("pass a pretrained tag (`gemseg models` lists them) with the weights in the open_clip/"
                 "Hugging Face cache (HF_HOME, or cache_dir=), or a local file with checkpoint=PATH "
                 "(--checkpoint PATH)"),
    "hf": ("pass a Hugging Face id with the model in the hub cache (HF_HOME / HF_HUB_CACHE), or a local "
           "folder saved with save_pretrained()"),
}


def weights_unavailable(what: str, backend: str, err: BaseException) -> WeightsUnavailableError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    offline = " (offline mode is on: HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    return WeightsUnavailableError(
        f"cannot load weights for {what}{offline}: {first[:200]}. To supply them, {_HOW_TO[backend]}.")


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
