"""SC-CLIP (Bai et al., "Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation", arXiv
2411.15869; code github.com/SuleBai/SC-CLIP, which carries no licence: read to understand, written here
from the paper's description and the code's formulas).

With ``F_i`` the output of block ``i`` (``F_1 .. F_{L-1}``, indexed from 0 as the official ``feats_list``)
and ``X = F_{L-1}`` the tokens entering the last block:

1. *Anomaly tokens*: the patches of ``X`` whose local outlier factor (30 neighbours) is in the top 5 %
   are replaced by the mean of their non-anomalous 8-neighbours (``fill_outliers``); the same
   positions are repaired in ``F_pre`` (``pre_adjust``).
2. *Self-adjusting*: ``S = cos(F_pre)`` between patches; ``X <- agg(X, S·[S ≥ β])`` (row-normalized
   weighted mean). The last block is re-run without residual and MLP with the attention
   ``(softmax(mask(3 (S - mean S))) + softmax(s k kᵀ)) / 2`` and the class token ``res_cls · X_cls``
   added; then ``agg(·, S'·[S' ≥ β])`` with ``S' = cos(F_post)``.
3. *Multi-level fusion*: ``M = Σ_{i = start}^{end - 1} F_i`` goes through the same re-run last block
   (with ``res_cls · M_cls``) and the same ``S'`` aggregation, and is added.

The patch tokens go through the final norm and projection. Steps and constants are those of
``clip/model.py: VisionTransformer.forward``, ``custom_attn`` and ``lof_pytorch`` at the commit cited
in docs/methods.md. Differences, all ours: statistics are taken per image (the official code runs one
image at a time); anomaly positions are read row-major on non-square grids (the official code divides
by the number of rows, which is the same on its square 224 crops); a backbone without a class token
adds no class-token term.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch

from ..backbones.base import Backbone
from ..config import GEMConfig
from .baselines import token_grid
from .purify import (aggregate, cosine_affinity, fill_outliers, lof_outliers, mixed_attention_output,
                     similarity_attention, thresholded)

# The authors' layer settings by number of blocks: ViT-B/16 (12) configs/base_config.py; ViT-L/14 (24)
# the authors' answer in the repository's issue #5.
SCCLIP_LAYERS = {12: dict(pre_adjust=8, post_adjust=3, multi_start=3, multi_end=10, res_cls=0.3),
                 24: dict(pre_adjust=16, post_adjust=6, multi_start=8, multi_end=19, res_cls=0.1)}


@dataclass(frozen=True)
class SCCLIPConfig:
    """SC-CLIP's settings; ``None``: the authors' value for the backbone's depth (:data:`SCCLIP_LAYERS`).
    Layer indices count the outputs of blocks 1 .. L-1 from 0, as the official code does."""

    pre_adjust: int | None = None  # base_config.py pre_adjust_idx=8 (ViT-B), 16 (ViT-L, issue #5)
    post_adjust: int | None = None  # base_config.py post_adjust_idx=3 (ViT-B), 6 (ViT-L)
    multi_start: int | None = None  # base_config.py multi_start_idx=3 (ViT-B), 8 (ViT-L)
    multi_end: int | None = None  # base_config.py multi_end_idx=10 (ViT-B), 19 (ViT-L); exclusive
    res_cls: float | None = None  # base_config.py res_cls=0.3 (ViT-B), 0.1 (ViT-L)
    beta: float = 0.4  # clip/model.py VisionTransformer.beta: affinities below it are dropped
    gamma: float = 3.0  # clip/model.py custom_attn: (mid_simi - mean) * 3.0
    lof_neighbors: int = 30  # clip/model.py forward: lof_pytorch(n_neighbors=30)
    lof_contamination: float = 0.05  # clip/model.py forward: lof_pytorch(contamination=0.05)

    def __post_init__(self):
        for name in ("pre_adjust", "post_adjust", "multi_start", "multi_end", "lof_neighbors"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"SC-CLIP {name} must be an integer, got {value!r}")
        for name in ("res_cls", "beta", "gamma", "lof_contamination"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TypeError(f"SC-CLIP {name} must be a number, got {value!r}")
        if not 0 < self.lof_contamination < 1:
            raise ValueError(f"SC-CLIP lof_contamination must be in (0, 1), got {self.lof_contamination!r}")

    def resolve(self, num_blocks: int) -> "SCCLIPConfig":
        """These settings with every ``None`` filled in for a backbone of ``num_blocks`` blocks."""
        missing = [f for f in SCCLIP_LAYERS[12] if getattr(self, f) is None]
        if missing and num_blocks not in SCCLIP_LAYERS:
            raise ValueError(f"SC-CLIP has layer settings for {sorted(SCCLIP_LAYERS)} blocks, not {num_blocks}; "
                             f"set {', '.join(missing)} (e.g. --method-setting {missing[0]}=...)")
        filled = dataclasses.replace(self, **{f: SCCLIP_LAYERS[num_blocks][f] for f in missing})
        n = num_blocks - 1  # outputs of blocks 1 .. L-1
        for name in ("pre_adjust", "post_adjust", "multi_start"):
            if not 0 <= getattr(filled, name) < n:
                raise ValueError(f"SC-CLIP {name}={getattr(filled, name)} is out of range: 0 .. {n - 1} "
                                 f"for {num_blocks} blocks")
        if not filled.multi_start < filled.multi_end <= n:
            raise ValueError(f"SC-CLIP needs multi_start < multi_end <= {n}, got {filled.multi_start}, "
                             f"{filled.multi_end}")
        return filled

    def check(self, num_blocks: int) -> None:
        """Refuse settings a backbone of ``num_blocks`` blocks cannot run (see :meth:`resolve`)."""
        self.resolve(num_blocks)

    def to_dict(self) -> dict:
        return asdict(self)


def scclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, return_ori: bool = False,
                  settings: SCCLIPConfig | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SC-CLIP: ``images`` [B, 3, H, W] -> tokens [B, p + n, D] (the ``p`` prefix tokens are the head of
    block L-1's, unused by the dense maps), and with ``return_ori`` the unmodified encoder's tokens."""
    s = (settings or SCCLIPConfig()).resolve(len(backbone.blocks))
    p = backbone.num_prefix_tokens
    x = backbone.embed(images)  # (B, N, C)
    feats = []
    for blk in backbone.blocks[:-1]:
        x = blk.plain(x)
        feats.append(x)
    grid = token_grid(backbone, images, x.shape[1])
    cls = x[:, :1] if p else x.new_zeros(x.shape[0], 1, x.shape[-1])  # (B, 1, C)
    anomalies = lof_outliers(x[:, p:], n_neighbors=s.lof_neighbors, contamination=s.lof_contamination)  # (B, n)
    patches = fill_outliers(x[:, p:], anomalies, grid)  # (B, n, C)
    mid = cosine_affinity(fill_outliers(feats[s.pre_adjust][:, p:], anomalies, grid))  # (B, n, n)
    patches = aggregate(patches, thresholded(mid, s.beta))
    blk = backbone.blocks[-1]
    sim_attn = similarity_attention(mid, s.gamma)  # (B, n, n)
    y = mixed_attention_output(blk, patches, sim_attn, ("k",)) + s.res_cls * cls
    post = thresholded(cosine_affinity(feats[s.post_adjust][:, p:]), s.beta)
    y = aggregate(y, post)
    multi = torch.stack(feats[s.multi_start:s.multi_end]).sum(dim=0)  # (B, N, C)
    multi_cls = multi[:, :1] if p else torch.zeros_like(cls)
    m = mixed_attention_output(blk, multi[:, p:], sim_attn, ("k",)) + s.res_cls * multi_cls
    y = y + aggregate(m, post)
    out = backbone.head(torch.cat([x[:, :p], y], dim=1))  # (B, p + n, D)
    ori = backbone.head(blk.plain(x)) if return_ori else None
    return out, ori


scclip_tokens.settings_type = SCCLIPConfig  # GEMModel passes its method settings as settings=
