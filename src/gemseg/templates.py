"""Prompt templates: text with one slot, ``{}`` (or ``{label}``), where a class name or prompt goes."""
from __future__ import annotations

import string

_NEEDS = "it needs exactly one '{}' placeholder where the prompt goes (write a literal brace as '{{' or '}}')"


def _field_text(name: str, spec: str, conversion: str | None) -> str:
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def check_template(template: str, where: str = "") -> str:
    """``template`` if it has exactly one slot, ``{}`` or ``{label}`` (``{{``/``}}`` are literal braces);
    otherwise one line naming it (and ``where`` it came from): no slot, two slots, a named field such as
    ``{style}``, a format spec, or an unmatched brace."""
    if not isinstance(template, str):
        raise TypeError(f"a template must be a string, got {type(template).__name__}")
    prefix = f"{where}: " if where else ""
    shown = template if len(template) <= 80 else template[:77] + "..."
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        raise ValueError(f"{prefix}template {shown!r}: {e}; {_NEEDS}") from e
    if len(fields) == 1 and fields[0][0] in ("", "label") and not fields[0][1] and not fields[0][2]:
        return template
    if not fields:
        what = "no '{}'"
    elif len(fields) > 1:
        what = f"{len(fields)} slots"
    else:
        what = "the field " + _field_text(*fields[0])
    raise ValueError(f"{prefix}template {shown!r} has {what}; {_NEEDS}")


def fill(template: str, text: str) -> str:
    """``template`` with ``text`` in its slot (the template is checked first)."""
    check_template(template)
    return template.replace("{label}", "{}").format(text)
