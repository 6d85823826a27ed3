"""A method's settings from ``NAME=VALUE`` text, as the command line's ``--method-setting`` gives them: its
own (the ``settings_type`` dataclass some methods carry) and its proxy's (``proxy_settings_type``), in one
namespace."""
from __future__ import annotations

import dataclasses
import re
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


_ITEM_START = re.compile(r",(?=\s*[A-Za-z_][\w.\-]*\s*=)")  # a comma that begins another NAME=


def split_items(items: Sequence[str]) -> list[str]:
    """Repeated and comma-separated ``NAME=VALUE`` items, one each: a comma starts a new item only where
    ``NAME=`` follows it, so tuple values keep theirs (``"rcs_weights=2.0,0.3,use_sfr=off"`` -> two items)."""
    return [p.strip() for item in items for p in _ITEM_START.split(item) if p.strip()]


def _parse(item: str, fields: dict, names: str, label: str = "method setting"):
    """``(name, value)`` of ``item`` against ``fields`` (name -> dataclass field); ``names``, ``label`` for messages."""
    name, sep, text = item.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in fields:
        raise ValueError(f"{label} {item!r}: expected NAME=VALUE with NAME one of {names}")
    f = fields[name]
    try:
        return name, _value(str(f.type), text, f.default)
    except ValueError as e:
        raise ValueError(f"{label} {item!r}: {e}") from None


def settings_from_text(kind: type, items: Sequence[str], *, label: str = "method setting") -> dict:
    """``["pre_adjust=8", "rcs_weights=2.0,0.3", "use_sfr=off"]`` -> the field values of dataclass ``kind``
    they name (numbers, on/off, comma-separated tuples, ``none`` for a field whose default is None); ``label``
    begins each message (the flag's name on the command line)."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    return dict(_parse(item, fields, ", ".join(fields), label) for item in split_items(items))


def resolve_settings(method, items: Sequence[str], *, label: str = "method setting") -> tuple[dict, dict]:
    """``items`` (``NAME=VALUE``, repeated or comma-separated) for ``method`` (a registered
    :class:`~gemseg.methods.Method`) -> ``(own settings, proxy settings)``, the field values of its
    ``settings_type`` and ``proxy_settings_type``, one namespace over both; a later item wins over an earlier
    one. A name both kinds have must be written ``method.NAME`` or ``proxy.NAME``. ``label`` begins each
    message (the flag's name on the command line).

    Raises:
        ValueError: the method has no settings, or a name is unknown or ambiguous (the valid names listed).
    """
    kinds = {"method": getattr(method, "settings_type", None), "proxy": getattr(method, "proxy_settings_type", None)}
    fields = {scope: {f.name: f for f in dataclasses.fields(k)} for scope, k in kinds.items() if k is not None}
    out: dict = {"method": {}, "proxy": {}}
    items = split_items(items)
    if items and not fields:
        raise ValueError(f"method {method.name!r} has no settings of its own (nor proxy settings); drop "
                         "--method-setting, or pick a method that has them (gemseg models --methods)")
    both = set(fields.get("method", ())) & set(fields.get("proxy", ()))
    names = ", ".join([*(n for fs in fields.values() for n in fs if n not in both),
                       *(f"{scope}.{n}" for scope in fields for n in sorted(both))])
    for item in items:
        name = item.partition("=")[0].strip().replace("-", "_")
        scope, dot, bare = name.rpartition(".")
        if not dot:
            scopes = [sc for sc in fields if bare in fields[sc]]
            if len(scopes) > 1:
                raise ValueError(f"{label} {item!r}: {bare} is both one of {method.name}'s own settings and "
                                 f"one of its proxy's; write method.{item.strip()} or proxy.{item.strip()}")
            scope = scopes[0] if scopes else next(iter(fields))
        elif scope not in fields:
            raise ValueError(f"{label} {item!r}: expected NAME=VALUE with NAME one of {names}")
        _, sep, text = item.partition("=")
        key, value = _parse(f"{bare}={text}" if sep else item, fields[scope], names, label)
        out[scope][key] = value
    return out["method"], out["proxy"]
