"""Training-free dense methods, selectable by name. Each maps ``(backbone, images [B, 3, H, W], config,
return_ori=...)`` to ``(tokens [B, N, D], original tokens [B, N, D] or None)`` after the final norm and
projection."""
from __future__ import annotations

from typing import Callable

from .gem import gem_tokens

METHODS: dict[str, Callable] = {
    "gem": gem_tokens,
}


def get_method(name: str) -> Callable:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
