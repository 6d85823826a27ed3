"""A method's own settings (the ``settings_type`` dataclass some methods carry) from ``NAME=VALUE`` text,
as the command line's ``--method-setting`` gives them."""
from __future__ import annotations

import dataclasses
from typing import Sequence

_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def _value(kind: str, text: str, default):
    """``text`` as the field's type: its default's type, or the annotation's first type for a None default."""
    low = text.strip().lower()
    if isinstance(default, bool) or kind.startswith("bool"):
        if low not in _TRUE + _FALSE:
            raise ValueError("expected on or off")
        return low in _TRUE
    if isinstance(default, tuple) or kind.startswith("tuple"):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        number = float if any(isinstance(v, float) for v in default or ()) or "float" in kind else int
        return tuple(number(p) for p in parts)
    if low == "none" and default is None:
        return None
    if isinstance(default, int) or kind.startswith("int"):
        return int(text)
    if isinstance(default, float) or kind.startswith("float"):
        return float(text)
    return text.strip()


def settings_from_text(kind: type, items: Sequence[str]) -> dict:
    """``["pre_adjust=8", "rcs_weights=2.0,0.3", "use_sfr=off"]`` -> the field values of dataclass ``kind``
    they name (numbers, on/off, comma-separated tuples, ``none`` for a field whose default is None)."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise ValueError(f"method setting {item!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
        f = fields[name]
        try:
            out[name] = _value(str(f.type), text, f.default)
        except ValueError as e:
            raise ValueError(f"method setting {item!r}: {e}") from None
    return out
