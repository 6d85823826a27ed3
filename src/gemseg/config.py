"""Configuration of the Grounding Everything Module (GEM).

Each setting is written once, as a dataclass field whose ``metadata`` holds its help text and, where it
differs from ``--<name>``, its command-line flag; ``gemseg.cli.common`` builds the CLI's GEM options
from these fields.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

_PROJECTIONS = ("v", "k", "q")


def as_floats(settings, label: str, names) -> None:
    """Check that each of ``names`` of the frozen dataclass ``settings`` is a number (not a bool) and store it
    as a float; ``label`` (the method, e.g. "ProxyCLIP") begins the message of a value that is not."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{label} {name} must be a number, got {value!r}")
        object.__setattr__(settings, name, float(value))


def _setting(default, help: str, *, flag: str | None = None, shown: str | None = None):
    """A GEMConfig field: ``help`` for ``--help`` and docs; ``flag`` the CLI option (default
    ``--<name>``; a boolean flag turns the setting away from its default); ``shown`` the default as
    ``--help`` prints it (default: the value itself; booleans print none)."""
    return field(default=default, metadata={"help": help, "flag": flag, "shown": shown})


@dataclass(frozen=True)
class GEMConfig:
    """Settings of the GEM path. The defaults are the GEM paper's (and ``gem-torch``'s).

    ``depth`` follows the reference's convention: the last ``depth - 1`` transformer blocks get a
    self-self attention path, so ``depth=7`` modifies 6 blocks of a 12-block ViT-B and ``depth`` 0 or 1
    modifies none (the output is then exactly the base model's). The largest valid value is the
    number of blocks + 1.
    """

    depth: int = _setting(7, "last depth-1 blocks get the GEM path")  # the reference's convention
    iterations: int = _setting(1, "self-self attention iterations")  # before the final assignment to v
    temperature: float | None = _setting(  # adaptive: mean ||ln_1(x)|| * head_dim**-0.5 per image
        None, "fixed inverse temperature", shown="adaptive")
    projections: tuple[str, ...] = _setting(  # any distinct values of "q", "k", "v"
        _PROJECTIONS, "self-self projections to ensemble", shown="v,k,q")
    l2_normalize: bool = _setting(  # each head's tokens, before every self-self attention
        True, "ablation: no L2 normalization in self-self attention", flag="--no-l2")
    gem_mlp: bool = _setting(False, "ablation: apply the MLP on the GEM path")  # off in the paper

    def __post_init__(self):
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"GEM depth must be an integer >= 0, got {self.depth!r}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"GEM iterations must be an integer >= 0, got {self.iterations!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(
                f"GEM temperature must be > 0 or None (adaptive), got {self.temperature!r}")
        projections = tuple(self.projections)
        if not projections or any(p not in _PROJECTIONS for p in projections) \
                or len(set(projections)) != len(projections):
            raise ValueError(
                f"GEM projections must be distinct values from {_PROJECTIONS}, got {self.projections!r}")
        object.__setattr__(self, "projections", projections)

    @property
    def num_blocks(self) -> int:
        """How many final blocks carry the GEM path."""
        return max(self.depth - 1, 0)

    def to_dict(self) -> dict:
        return asdict(self)
