"""GEM ablations, planning: the paper's experiments as named sweeps or grids of :class:`~gemseg.GEMConfig`
settings (parsing ``--sweep``/``--grid`` values, the distinct settings to run, which methods read which
setting). Running them is :func:`gemseg.eval.ablation.run_ablation`; the table and plots are
:mod:`gemseg.eval.ablation_report`. See docs/ablations.md.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from typing import Sequence

from ..config import GEMConfig
from .datasets import DatasetSpec
from .protocols import Protocol
from .report import setting_text

FACTORS = ("depth", "iterations", "temperature", "projections", "l2_normalize", "gem_mlp")  # GEMConfig fields
SWEEPS = {"projections": "projections", "temperature": "temperature", "iterations": "iterations",
          "depth": "depth", "l2": "l2_normalize", "mlp": "gem_mlp"}  # sweep name -> the GEMConfig field it varies
METHOD = "method"  # the grid factor that varies the method itself, plug-ins included (naclip,naclip+resclip)
REFINE = "refine"  # the grid factor that varies the post-processing: a registered refiner name or none
_ALIASES = {**{f: f for f in FACTORS}, **SWEEPS, "iters": "iterations", "temp": "temperature", "proj": "projections",
            METHOD: METHOD, "methods": METHOD, REFINE: REFINE, "refiner": REFINE}
_ORDER = ("v", "k", "q")  # GEMConfig's projection order
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")

@dataclass
class AblationDataset:
    """A dataset of an ablation: its metadata, root folder, protocol and image limit."""

    spec: DatasetSpec
    root: str | os.PathLike
    protocol: Protocol
    protocol_source: dict[str, str] | None = None  # where each protocol setting came from
    limit: int | None = None  # the first images only


def sweep_values(factor: str, num_blocks: int) -> list:
    """The values a named sweep tries for ``factor`` (a GEMConfig field) on a model of ``num_blocks`` blocks:
    each projection alone and the ensemble; the adaptive temperature and fixed inverse temperatures 0.001
    to 100; 0 to 5 iterations; depths 1 (no GEM path) to blocks + 1 (at most 13 of them); L2 off/on; MLP
    off/on."""
    if factor == "projections":
        return [("q",), ("k",), ("v",), _ORDER]
    if factor == "temperature":
        return [None, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    if factor == "iterations":
        return list(range(6))
    if factor == "depth":
        step = -(-num_blocks // 12)
        return sorted({*range(1, num_blocks + 2, step), num_blocks + 1})
    if factor in ("l2_normalize", "gem_mlp"):
        return [False, True]
    raise ValueError(f"unknown GEM setting {factor!r}; choose from {', '.join(FACTORS)}")


def _parse(factor: str, text: str):
    low = text.lower()
    if factor in ("depth", "iterations"):
        return int(text)
    if factor == "temperature":
        return None if low in ("adaptive", "none", "auto") else float(text)
    if factor == "projections":
        letters = [c for c in low if c != "+"]
        if not letters or any(c not in _ORDER for c in letters) or len(set(letters)) != len(letters):
            raise ValueError(text)
        return tuple(p for p in _ORDER if p in letters)
    if low not in _TRUE + _FALSE:
        raise ValueError(text)
    return low in _TRUE


def parse_value(factor: str, text: str):
    """One grid value from text: integers for depth and iterations; ``adaptive`` or a number > 0 for the
    (inverse) temperature; letters of ``qkv`` for projections (``v``, ``qk``, ``v+k+q``); on/off for
    ``l2_normalize`` and ``gem_mlp``."""
    if factor == METHOD:
        from ..methods import get_method

        return get_method(text.strip()).name  # refuses unknown names and plug-ins on bases they do not take
    if factor == REFINE:
        from ..refiners import get_refiner

        name = text.strip()
        if name.lower() == "none":
            return None
        get_refiner(name)  # refuses unknown refiners, naming the registered ones
        return name
    if factor not in FACTORS:
        raise ValueError(f"unknown GEM setting {factor!r}; choose from {', '.join(FACTORS)}")
    try:
        return _parse(factor, text.strip())
    except ValueError:
        kinds = {"depth": "an integer", "iterations": "an integer", "temperature": "'adaptive' or a number",
                 "projections": "distinct letters of qkv, e.g. v or vkq", "l2_normalize": "on or off",
                 "gem_mlp": "on or off"}
        raise ValueError(f"{factor}={text.strip()!r}: expected {kinds[factor]}") from None


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["iterations=0,1,2", "temperature=adaptive,0.1"]`` -> ``{"iterations": [0, 1, 2], "temperature":
    [None, 0.1]}`` (names may be aliases: l2, mlp, temp, iters, proj)."""
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        factor = _ALIASES.get(name.strip().lower().replace("-", "_"))
        if not sep or factor is None:
            raise ValueError(f"grid entry {item!r}: expected SETTING=V1,V2,... with SETTING one of "
                             f"{', '.join(FACTORS)}, method, refine (or l2, mlp, temp, iters, proj)")
        if factor in grid:
            raise ValueError(f"grid entry {item!r}: {factor} is given twice")
        parsed = [parse_value(factor, v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ValueError(f"grid entry {item!r} has no values")
        grid[factor] = list(dict.fromkeys(parsed))
    return grid


def factor_text(factor: str, value) -> str:
    if factor == "temperature" and value is None:
        return "adaptive"
    if factor == "projections":
        return "".join(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return setting_text(value)


@dataclass
class Setting:
    """One GEM configuration (and method) of an ablation, the sweeps that contain it and its changes from
    the base."""

    config: GEMConfig
    changes: dict  # GEMConfig field (or "method") -> value, what differs from the base
    sweeps: list[str]  # the named sweeps (or "grid") that include this setting
    method: str | None = None  # the method of this setting; None: the base model's
    refine: str | None = None  # the refiner run after the protocol's (a registered name); None: none

    @property
    def label(self) -> str:
        """``base``, or the changes from the base: ``iterations=3, temperature=0.1``."""
        return ", ".join(f"{k}={factor_text(k, v)}" for k, v in self.changes.items()) or "base"

    @property
    def slug(self) -> str:
        """The run folder's name, naming every GEM setting: ``d7-i1-tadaptive-pvkq-l2on-mlpoff``."""
        c = self.config
        t = "adaptive" if c.temperature is None else repr(float(c.temperature))
        method = f"-m{self.method.replace('+', '_')}" if METHOD in self.changes else ""
        refine = f"-r{self.refine}" if REFINE in self.changes else ""
        return (f"d{c.depth}-i{c.iterations}-t{t}-p{''.join(c.projections)}-l2{factor_text('', c.l2_normalize)}"
                f"-mlp{factor_text('', c.gem_mlp)}{method}{refine}")


def _config(base: GEMConfig, changes: dict) -> GEMConfig:
    changes = dict(changes)
    if "projections" in changes and set(changes["projections"]) == set(base.projections):
        changes["projections"] = base.projections  # the same ensemble in the base's order
    return dataclasses.replace(base, **changes)


def plan_settings(base: GEMConfig, *, sweeps: Sequence[str] = (), grid: dict[str, list] | None = None,
                  num_blocks: int = 12, method: str | None = None) -> list[Setting]:
    """The distinct settings of named ``sweeps`` (each varies one field of ``base``; ``all`` is every
    sweep) and of a ``grid`` (the product of its values, other fields from ``base``; its ``method``
    values vary the method, ``method`` being the base's), in order of first appearance (the base first);
    a configuration reached by several sweeps (the base, typically) is run once."""
    names = list(SWEEPS) if "all" in sweeps else list(dict.fromkeys(sweeps))
    unknown = [s for s in names if s not in SWEEPS]
    if unknown:
        raise ValueError(f"unknown sweep {unknown[0]!r}; choose from {', '.join(SWEEPS)}, all")
    entries = [(_config(base, {SWEEPS[s]: v}), method, None, s) for s in names
               for v in sweep_values(SWEEPS[s], num_blocks)]
    if grid:
        for combo in itertools.product(*grid.values()):
            changes = dict(zip(grid, combo))
            entries.append((_config(base, {k: v for k, v in changes.items() if k not in (METHOD, REFINE)}),
                            changes.get(METHOD, method), changes.get(REFINE), "grid"))
    if not entries:
        raise ValueError("nothing to ablate: give a sweep or a grid")
    settings: dict[tuple, Setting] = {}
    for config, m, r, sweep in entries:
        if (config, m, r) not in settings:
            changes = {f: getattr(config, f) for f in FACTORS if getattr(config, f) != getattr(base, f)}
            if m != method:
                changes[METHOD] = m
            if r is not None:
                changes[REFINE] = r
            settings[config, m, r] = Setting(config, changes, [], m, r)
        if sweep not in settings[config, m, r].sweeps:
            settings[config, m, r].sweeps.append(sweep)
    ordered = list(settings.values())
    return sorted(ordered, key=lambda s: bool(s.changes))  # the base first (a stable sort keeps the rest)

def check_method(method: str, settings: Sequence[Setting]) -> None:
    """Refuse GEM settings varied for a method that does not read them (each setting's own method)."""
    by_method: dict[str, list[Setting]] = {}
    for s in settings:
        by_method.setdefault(s.method or method, []).append(s)
    for name, group in by_method.items():
        _check_one(name, group)


def _check_one(method: str, settings: Sequence[Setting]) -> None:
    from ..methods import get_method

    uses = get_method(method).uses  # the settings the method declares it reads (None: not declared)
    varied = sorted({f for s in settings for f in s.changes if f not in (METHOD, REFINE)})
    if uses is None or not varied:
        return
    if not uses:
        raise ValueError(f"method {method!r} reads no GEM setting, so every setting would give the same "
                         "numbers; ablate --method gem (or vv for depth)")
    if set(varied) - set(uses):
        raise ValueError(f"method {method!r} reads only {', '.join(uses)}, not "
                         f"{', '.join(f for f in varied if f not in uses)}")
