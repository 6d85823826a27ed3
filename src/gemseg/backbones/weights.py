"""Safe checkpoint loading and the one-line message for weights that cannot be found."""
from __future__ import annotations

import os

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


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Unwraps ``{"state_dict": ...}``/``{"model": ...}`` containers and a DDP ``module.`` prefix.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError("reading .safetensors needs `pip install safetensors`") from e
        state = load_file(path, device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"checkpoint {path} cannot be read as a torch weights file "
                             f"({type(e).__name__}); use a state dict saved with torch.save or .safetensors") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


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
