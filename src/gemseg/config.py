"""Configuration of the Grounding Everything Module (GEM)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

_PROJECTIONS = ("v", "k", "q")


@dataclass(frozen=True)
class GEMConfig:
    """Settings of the GEM path. The defaults are the GEM paper's (and ``gem-torch``'s).

    ``depth`` follows the reference's convention: the last ``depth - 1`` transformer blocks get a
    self-self attention path, so ``depth=7`` modifies 6 blocks of a 12-block ViT-B and ``depth`` 0 or 1
    modifies none (the output is then exactly the base model's). The largest valid value is the
    number of blocks + 1.
    """

    depth: int = 7  # last depth-1 blocks get the GEM path (reference convention)
    iterations: int = 1  # self-self attention iterations before the final assignment to v
    temperature: float | None = None  # None: adaptive inverse temperature, mean ||ln_1(x)|| * head_dim**-0.5
    projections: tuple[str, ...] = _PROJECTIONS  # which self-self paths are ensembled, any of "q", "k", "v"
    l2_normalize: bool = True  # L2-normalize each head's tokens before every self-self attention
    gem_mlp: bool = False  # ablation: also apply the block's MLP on the GEM path

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
