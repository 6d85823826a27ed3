"""SFP (Jin et al., "Feature Purification Matters: Suppressing Outlier Propagation for Training-Free
Open-Vocabulary Semantic Segmentation", ICCV 2025; code github.com/Kimsure/SFP, MIT).

With ``F_i`` the outputs of blocks 1 .. L-1 (indexed from 0), ``A`` the attention of block L-1 and
``X = F_{L-1}``:

1. *Outlier mitigation*: outlier patches of block L-1 are found by ``outliers``: ``"som"`` (the
   default) takes the patches whose class-token attention, scaled by ``res_cls · res_scale``, exceeds
   their self-attention (head-averaged), at most ``num_outliers`` of them, strongest first; ``"l2"``
   the ``num_outliers`` patches of largest norm; ``"lof"`` SC-CLIP's local outlier factor; ``"none"``
   no repair. They are replaced by the mean of their non-outlier 8-neighbours in ``X`` and in
   ``F_ref``.
2. *Attention enhancement*: ``S = cos(F_ref)·[≥ 0.4]``; ``X <- agg(X, S)``; the last block is re-run
   without residual and MLP with the attention ``(softmax(s k kᵀ) + softmax(s q qᵀ) +
   softmax(mask(3 (S - mean S)))) / 3`` plus ``res_cls · X_cls``; then ``agg(·, S')`` with
   ``S' = cos(F_aux)·[≥ 0.4]``.
3. *Multi-layer integration*: ``M = Σ_{i = start}^{end - 1} F_i`` goes through the last block's value
   path with the attention ``softmax(mask(3 (S - mean S)))`` (``integration="similarity"``, what the
   official code runs) plus ``res_cls · M_cls``, then ``agg(·, S')``, and is added.
   ``integration="attention"`` uses instead the attention of blocks 1 .. L-1 averaged over blocks and
   heads (patches only), which the official code computes but does not use; an ablation of ours.

Steps and constants: ``SFP_ICCV/clip/model.py: VisionTransformer.forward``, ``custom_attn``,
``sinkhorn_attn``, ``mean_interpolation`` and ``adaptively_aggregate`` at the commit cited in
docs/methods.md. Ours: statistics per image; row-major positions on non-square grids; a backbone
without a class token adds no class-token term and cannot use ``"som"``; ``outliers="none"`` (the
official ``purify=False`` fails with an undefined name).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..backbones.base import Backbone
from ..config import GEMConfig
from .baselines import token_grid
from .purify import (aggregate, block_with_attention, cosine_affinity, fill_outliers, lof_outliers,
                     mixed_attention_output, similarity_attention, thresholded, top_outliers)

OUTLIERS = ("som", "l2", "lof", "none")
INTEGRATIONS = ("similarity", "attention")


@dataclass(frozen=True)
class SFPConfig:
    """SFP's settings; defaults are the official ones for ViT-B/16 (layer indices count the outputs of
    blocks 1 .. L-1 from 0; the official code fixes them in clip/model.py)."""

    outliers: str = "som"  # configs/base_config.py pm='SOM', purify=True
    num_outliers: int = 10  # clip/model.py forward: order_idx[:10] (SOM), norm_order[:10] (L2)
    res_cls: float = 0.3  # configs/base_config.py res_cls=0.3 (class-token weight, and SOM's scale)
    res_scale: float = 5.0  # clip/model.py VisionTransformer.res_scale (SOM: cls attention x res_cls x 5)
    cross_start: int = 3  # clip/model.py forward: hidden_states[3:10] (= base_config.py cross_s=3)
    cross_end: int = 10  # (= base_config.py cross_e=10, which model.py never reads); exclusive
    ref_layer: int = 8  # clip/model.py forward: ref_feat = hidden_states[8]
    aux_layer: int = 3  # clip/model.py forward: aux_feat = hidden_states[3]
    threshold: float = 0.4  # clip/model.py forward: pre_sim[pre_sim < 0.4] = 0 (also post_sim)
    gamma: float = 3.0  # clip/model.py custom_attn / sinkhorn_attn: (sim - mean) * 3.0
    lof_neighbors: int = 30  # clip/model.py forward: lof_pytorch(n_neighbors=30) ("lof" only)
    lof_contamination: float = 0.05  # clip/model.py forward: lof_pytorch(contamination=0.05)
    integration: str = "similarity"  # sinkhorn_attn(..., pre_sim) as called; "attention": ablation, ours

    def __post_init__(self):
        if self.outliers not in OUTLIERS:
            raise ValueError(f"SFP outliers must be one of {', '.join(OUTLIERS)}, got {self.outliers!r}")
        if self.integration not in INTEGRATIONS:
            raise ValueError(f"SFP integration must be one of {', '.join(INTEGRATIONS)}, got {self.integration!r}")
        for name in ("num_outliers", "cross_start", "cross_end", "ref_layer", "aux_layer", "lof_neighbors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(f"SFP {name} must be a non-negative integer, got {value!r}")
        if not self.cross_start < self.cross_end:
            raise ValueError(f"SFP needs cross_start < cross_end, got {self.cross_start}, {self.cross_end}")

    def check(self, num_blocks: int) -> None:
        """Refuse layer indices that a backbone of ``num_blocks`` blocks does not have."""
        n = num_blocks - 1
        bad = [f"{f}={getattr(self, f)}" for f in ("cross_start", "ref_layer", "aux_layer") if getattr(self, f) >= n]
        if self.cross_end > n:
            bad.append(f"cross_end={self.cross_end}")
        if bad:
            raise ValueError(f"SFP layer setting(s) {', '.join(bad)} out of range for {num_blocks} blocks "
                             f"(indices 0 .. {n - 1}, cross_end <= {n}); the defaults are ViT-B/16's")

    def to_dict(self) -> dict:
        return asdict(self)


def _outlier_mask(s: SFPConfig, x: torch.Tensor, attn: torch.Tensor, p: int, name: str) -> torch.Tensor:
    """Outlier patches of block L-1: x [B, N, C] its output, attn [B, heads, N, N] its attention -> [B, n]."""
    patches = x[:, p:]
    if s.outliers == "none":
        return torch.zeros(patches.shape[:2], dtype=torch.bool, device=x.device)
    if s.outliers == "l2":
        return top_outliers(patches.norm(dim=-1), s.num_outliers)
    if s.outliers == "lof":
        return lof_outliers(patches, n_neighbors=s.lof_neighbors, contamination=s.lof_contamination)
    if p == 0:
        raise ValueError(f"SFP's 'som' outlier detection needs a class token, which {name} lacks; "
                         "use --method-setting outliers=lof (or l2)")
    a = attn.mean(dim=1)  # (B, N, N)
    cls_to_patch = a[:, 0, p:] * (s.res_cls * s.res_scale)
    patch_self = a[:, p:, p:].diagonal(dim1=1, dim2=2)
    return top_outliers(cls_to_patch, s.num_outliers, candidates=cls_to_patch > patch_self)


def sfp_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, return_ori: bool = False,
               settings: SFPConfig | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SFP: ``images`` [B, 3, H, W] -> tokens [B, p + n, D] (prefix tokens: the head of block L-1's,
    unused by the dense maps), and with ``return_ori`` the unmodified encoder's tokens."""
    s = settings or SFPConfig()
    s.check(len(backbone.blocks))
    p = backbone.num_prefix_tokens
    x = backbone.embed(images)  # (B, N, C)
    hidden, accumulated = [], 0
    for blk in backbone.blocks[:-1]:
        x, attn = block_with_attention(blk, x)  # attn (B, heads, N, N)
        hidden.append(x)
        if s.integration == "attention":
            accumulated = accumulated + attn[:, :, p:, p:].mean(dim=1)
    grid = token_grid(backbone, images, x.shape[1])
    cls = x[:, :1] if p else x.new_zeros(x.shape[0], 1, x.shape[-1])
    outliers = _outlier_mask(s, x, attn, p, backbone.name)  # (B, n)
    patches = fill_outliers(x[:, p:], outliers, grid)
    pre = thresholded(cosine_affinity(fill_outliers(hidden[s.ref_layer][:, p:], outliers, grid)), s.threshold)
    patches = aggregate(patches, pre)
    blk = backbone.blocks[-1]
    sim_attn = similarity_attention(pre, s.gamma)  # (B, n, n)
    y = mixed_attention_output(blk, patches, sim_attn, ("k", "q")) + s.res_cls * cls
    post = thresholded(cosine_affinity(hidden[s.aux_layer][:, p:]), s.threshold)
    y = aggregate(y, post)
    state = torch.stack(hidden[s.cross_start:s.cross_end]).sum(dim=0)  # (B, N, C)
    integ = sim_attn if s.integration == "similarity" else \
        similarity_attention(accumulated / (len(backbone.blocks) - 1), s.gamma)
    state_cls = state[:, :1] if p else torch.zeros_like(cls)
    m = mixed_attention_output(blk, state[:, p:], integ, ()) + s.res_cls * state_cls
    y = y + aggregate(m, post)
    out = backbone.head(torch.cat([x[:, :p], y], dim=1))  # (B, p + n, D)
    ori = backbone.head(blk.plain(x)) if return_ori else None
    return out, ori


sfp_tokens.settings_type = SFPConfig  # GEMModel passes its method settings as settings=
