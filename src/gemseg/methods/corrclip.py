"""CorrCLIP (Zhang, Liu & Tang, ICCV 2025, arXiv 2411.10086; code zdk258/CorrCLIP, ``CorrCLIPv1``): CLIP's
patch correlations rebuilt from class-agnostic masks and a self-supervised model.

Per image, with ``f`` the L2-normalized ``q + k`` features of DINO's last block ([N', C'] on DINO's grid) and
``L`` the image's mask label map on that grid (0 or, officially, the smallest id: pixels in no mask):

1. *Mask merging*: each region's mean ``f``, normalized; DBSCAN (precomputed distance ``max(S) - S`` of their
   cosine similarities ``S``, ``eps``, ``min_samples``) merges regions of one cluster (the "rest" excluded).
2. *Scope reconstruction*: patches attend only within their region; the rest's patches attend (and are
   attended) wherever ``f_i · f_j`` exceeds the image's mean similarity.
3. *Value reconstruction*: ``A = softmax(τ f fᵀ)`` over that scope replaces the last block's attention of
   the *main* branch (the tokens entering the last block) and of the *spatial* branch (the mean of the
   tokens leaving blocks ``L-1-n .. L-2``): ``O(A · up(v))``, no residual, no MLP, ``up`` bilinear from
   CLIP's grid to DINO's.
4. *Semantic branch*: one extra class token per region ("mask class token") that attends only to the class
   token and its region's patches in every block (the last one run in full); every patch takes its region's.
5. tokens = ``head(main) + α head(spatial) + β head(semantic)``.
6. *Map correction* (after the argmax, a refiner): each mask's pixels take its most frequent label.

Every step follows ``open_clip/transformer.py: VisionTransformer.forward`` (lines 506-634) and
``corrclip_segmentor.py`` at zdk258/CorrCLIP@103bc18213e6; docs/methods.md has the details.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..backbones.base import Backbone, ViTBlock
from ..backbones.vfm import VisionBackbone
from ..config import GEMConfig, as_floats
from ..masks.base import resize_label_map
from .baselines import token_grid
from .proxyclip import VFMProxy

DEFAULT_PROXY = "dino-b8"  # configs/base_config.py: dino_type='dino_vitb8'
RESTS = ("mean", "none")


@dataclass(frozen=True)
class CorrCLIPConfig:
    """CorrCLIP's settings; defaults are the official ones (open_clip/transformer.py lines cited)."""

    alpha: float = 1.0  # :528 ALPHA, weight of the spatial branch
    beta: float = 0.5  # :528 BETA, weight of the semantic branch
    num_spatial: int | None = None  # :530-537 NUM_SPATIAL; None: 5 / 12 / 28 for 12 / 24 / 32 blocks, else blocks - 4
    tau: float = 4.0  # :538 TAU, the inverse temperature of the reconstructed attention
    dbscan_eps: float = 0.2  # :539 EPS of the mask merging
    dbscan_min_samples: int = 1  # :539 MIN_SAMPLES
    merge: bool = True  # :544-562 mask merging on (an ablation switch of ours)
    rest: str = "mean"  # :571-576 "mean": the official method 1 (rest attends where similarity > mean); "none": method 2

    def __post_init__(self):
        as_floats(self, "CorrCLIP", ("alpha", "beta", "tau", "dbscan_eps"))
        if self.num_spatial is not None and (isinstance(self.num_spatial, bool) or not isinstance(self.num_spatial, int)
                                             or self.num_spatial < 1):
            raise ValueError(f"CorrCLIP num_spatial must be a positive integer or None, got {self.num_spatial!r}")
        if isinstance(self.dbscan_min_samples, bool) or not isinstance(self.dbscan_min_samples, int) \
                or self.dbscan_min_samples < 1:
            raise ValueError(f"CorrCLIP dbscan_min_samples must be an integer >= 1, got {self.dbscan_min_samples!r}")
        if self.rest not in RESTS:
            raise ValueError(f"CorrCLIP rest must be one of {', '.join(RESTS)}, got {self.rest!r}")

    def spatial_blocks(self, depth: int) -> int:
        """NUM_SPATIAL for a CLIP of ``depth`` blocks, kept within 1 .. depth - 2 (the blocks before the last
        but one; below 6 blocks the official ``depth - 4`` would leave the spatial branch empty: ours)."""
        n = self.num_spatial if self.num_spatial is not None else {12: 5, 24: 12, 32: 28}.get(depth, depth - 4)
        return max(1, min(n, depth - 2))

    def to_dict(self) -> dict:
        return asdict(self)


class CorrCLIPProxy(VFMProxy):
    """The DINO model of a CorrCLIP model and CorrCLIP's settings (the ``proxy`` it is built with). It runs at
    the input size, so input sides are multiples of CLIP's and DINO's patches (the official code pads crops
    to 56: :meth:`VFMProxy.pad_multiple`)."""

    settings_type = CorrCLIPConfig
    settings_error = "CorrCLIP settings must be a {}"

    def __init__(self, vfm: VisionBackbone, settings: CorrCLIPConfig | None = None):
        if not isinstance(vfm, VisionBackbone) or vfm.kind == "sam" or vfm.input_size is not None:
            raise TypeError("CorrCLIP's proxy must be a DINO/DINOv2 VisionBackbone running at the input size "
                            "(gemseg.backbones.vfm.create_vfm('dino-b8'))")
        super().__init__(vfm, settings)


def dbscan(dist: torch.Tensor, eps: float, min_samples: int) -> list[int]:
    """DBSCAN on a precomputed distance matrix [M, M] (as scikit-learn's ``DBSCAN(metric='precomputed')``:
    neighbours at distance ``<= eps``, the point itself included; clusters numbered in order of their
    first core point; border points join the first cluster that reaches them; noise is -1)."""
    M = dist.shape[0]
    near = (dist <= eps).tolist()
    neighbours = [[j for j in range(M) if near[i][j]] for i in range(M)]
    core = [len(n) >= min_samples for n in neighbours]
    labels = [-1] * M
    cluster = 0
    for i in range(M):
        if labels[i] != -1 or not core[i]:
            continue
        labels[i], stack = cluster, [i]
        while stack:
            p = stack.pop()
            if not core[p]:
                continue
            for q in neighbours[p]:
                if labels[q] == -1:
                    labels[q] = cluster
                    stack.append(q)
        cluster += 1
    return labels


def merge_regions(labels: torch.Tensor, feats: torch.Tensor, *, eps: float, min_samples: int) -> torch.Tensor:
    """Mask merging: ``labels`` [N] (one image's label map on DINO's grid, flattened) and ``feats`` [N, C']
    (normalized) -> labels [N] where the regions of one DBSCAN cluster share a new id. The smallest id
    (the rest) is never merged; nothing is merged unless there are at least two regions besides it."""
    values = torch.unique(labels)  # sorted
    if values.numel() <= 2:
        return labels
    regions = [labels == v for v in values.tolist()]
    means = F.normalize(torch.stack([feats[r].mean(dim=0) for r in regions]), dim=1)[1:]  # (R-1, C')
    sim = means @ means.T
    clusters = dbscan(sim.max() - sim, eps, min_samples)
    offset = int(values.max()) + 1  # the official code adds 10000; any offset above every id is the same
    out = labels.clone()
    for region, c in zip(regions[1:], clusters):
        if c != -1:
            out[region] = c + offset
    return out


def scope_attention(sim: torch.Tensor, labels: torch.Tensor, *, tau: float, rest: str = "mean") -> torch.Tensor:
    """Scope reconstruction: similarities [N, N] and region labels [N] -> attention [N, N] (rows sum to 1).

    Patches of one region attend to each other; the rest (smallest id) with ``rest="mean"`` attends, and is
    attended, wherever the similarity exceeds its mean over the image; with ``"none"`` it is a region too.
    A row left without any allowed entry (the official code gives NaN there) attends to itself: ours.
    """
    values = torch.unique(labels)
    onehot = labels[:, None] == values[None, :]  # (N, R)
    own = onehot.float() @ onehot.float().T > 0  # same region
    if rest == "mean":
        r = onehot[:, 0]
        own = own & ~(r[:, None] & r[None, :])  # the rest is no region of its own here
        own |= (r[:, None] | r[None, :]) & (sim > sim.mean())
    dead = ~own.any(dim=1)
    if dead.any():
        own[dead, dead] = True
    return (sim * tau).masked_fill(~own, float("-inf")).softmax(dim=-1)


def _masked_block(blk: ViTBlock, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """A block as its model runs it, with attention only where ``allowed`` [N, N] is True. [B, N, C]"""
    q, k, v = blk.qkv(blk.ln_1(x))
    x = x + blk.attn_out(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
    return x + blk.mlp_residual(x)


def _mct_allowed(regions: torch.Tensor, prefix: int) -> torch.Tensor:
    """Attention mask of [R mask class tokens, prefix tokens, patches]: the ordinary tokens attend among
    themselves only; mask class token r to the class token and its region's patches (not to itself)."""
    R, P = regions.shape
    N = R + prefix + P
    allowed = torch.zeros(N, N, dtype=torch.bool, device=regions.device)
    allowed[R:, R:] = True
    allowed[:R, R:R + prefix] = True
    allowed[:R, R + prefix:] = regions
    return allowed


def _branches(backbone: Backbone, x: torch.Tensor, regions: torch.Tensor, n_spatial: int):
    """One image's tokens ``x`` [1, prefix + P, C] entering block 0 -> (main [1, prefix + P, C] entering the
    last block, spatial mean [1, prefix + P, C], mask class tokens [R, C] leaving the last block)."""
    R, prefix = regions.shape[0], backbone.num_prefix_tokens
    allowed = _mct_allowed(regions, prefix)
    seq = torch.cat([x[:, :1].expand(1, R, -1), x], dim=1)  # (1, R + prefix + P, C): copies of the class token
    L = len(backbone.blocks)
    spatial = []
    for i, blk in enumerate(backbone.blocks[:-1]):
        seq = _masked_block(blk, seq, allowed)
        if L - 2 - n_spatial <= i <= L - 3:
            spatial.append(seq[:, R:])
    main = seq[:, R:]
    mct = _masked_block(backbone.blocks[-1], seq, allowed)[0, :R]  # (R, C)
    return main, torch.stack(spatial).mean(dim=0), mct


def corrclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, proxy: CorrCLIPProxy,
                    masks: torch.Tensor, return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CorrCLIP: ``images`` [B, 3, H, W] (normalized for CLIP) and their mask label maps ``masks`` [B, H', W']
    (integers, at most the input size: a padded border becomes a region of its own) -> tokens [B, h * w, D]
    on DINO's grid ``(h, w) = proxy.grid((H, W))``, and with ``return_ori`` CLIP's unmodified tokens."""
    if backbone.num_prefix_tokens != 1:
        raise ValueError("CorrCLIP needs a class-token ViT (its mask class tokens are copies of it)")
    masks = _pad_masks(masks, images.shape[-2:])
    s = proxy.settings
    feats = F.normalize(proxy.vfm.qk_features(proxy.vfm.prepare(images, backbone.preprocess)), dim=1)  # (B, C', h, w)
    h, w = feats.shape[-2:]
    x0 = backbone.embed(images)  # (B, 1 + gh*gw, C)
    gh, gw = token_grid(backbone, images, x0.shape[1])
    blk = backbone.blocks[-1]
    n_spatial = s.spatial_blocks(len(backbone.blocks))
    out = []
    for b in range(images.shape[0]):
        f = feats[b].flatten(1).T  # (h*w, C')
        lab = resize_label_map(masks[b], (h, w)).flatten()  # (h*w,)
        if s.merge:
            lab = merge_regions(lab, f, eps=s.dbscan_eps, min_samples=s.dbscan_min_samples)
        attn = scope_attention(f @ f.T, lab, tau=s.tau, rest=s.rest)  # (h*w, h*w)
        lab_c = resize_label_map(lab.reshape(h, w), (gh, gw)).flatten()  # (gh*gw,)
        regions = lab_c[None, :] == torch.unique(lab_c)[:, None]  # (R, gh*gw)
        main, spatial, mct = _branches(backbone, x0[b:b + 1], regions, n_spatial)
        ys = []
        for z in (main, spatial):
            _, _, v = blk.qkv(blk.ln_1(z))  # (1, heads, 1 + gh*gw, d)
            heads, d = v.shape[1], v.shape[-1]
            v = v[0, :, 1:].reshape(heads, gh, gw, d).permute(0, 3, 1, 2)  # (heads, d, gh, gw)
            v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
            ys.append(blk.attn_out((attn.to(v.dtype) @ v)[None]))  # (1, h*w, C)
        up = F.interpolate(regions.reshape(1, -1, gh, gw).to(mct.dtype), size=(h, w), mode="nearest")
        semantic = (up.flatten(2)[0].T @ mct)[None]  # (1, h*w, C): each patch its region's class token
        out.append(backbone.head(ys[0]) + s.alpha * backbone.head(ys[1]) + s.beta * backbone.head(semantic))
    ori = None
    if return_ori:
        x = x0
        for b_ in backbone.blocks:
            x = b_.plain(x)
        ori = backbone.head(x)
    return torch.cat(out), ori


def _pad_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """Label maps [B, H', W'] -> [B, H, W]: the right/bottom padding of the input is a region of its own."""
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or masks.is_floating_point():
        raise ValueError("CorrCLIP needs integer mask label maps [B, H, W] (gemseg.masks); got "
                         + (f"{masks.dtype} {list(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__))
    H, W = size
    if masks.shape[-2] > H or masks.shape[-1] > W:
        raise ValueError(f"mask label maps of {masks.shape[-2]}x{masks.shape[-1]} are larger than the input "
                         f"{H}x{W}; resize them to the input (gemseg.masks.resize_label_map)")
    pad_h, pad_w = H - masks.shape[-2], W - masks.shape[-1]
    if pad_h or pad_w:
        masks = F.pad(masks.long(), (0, pad_w, 0, pad_h), value=int(masks.max()) + 1)
    return masks.long()


corrclip_tokens.proxy_type = CorrCLIPProxy  # what create_model and GEMModel.variant hold the VFM in (Method.needs "proxy")
corrclip_tokens.default_proxy = DEFAULT_PROXY
corrclip_tokens.proxy_settings_type = CorrCLIPConfig  # --method-setting (alias --proxy-settings) K=V parse into it
corrclip_tokens.on_proxy_grid = True  # its tokens lie on the VFM's grid, without prefix tokens
# the mask generator the command line uses when --masks is not given: CorrCLIP's own, SAM 2 Hiera-L
# (zdk258/CorrCLIP@103bc18213e6:CorrCLIPv1/corrclip_segmentor.py:264-272, build_sam2("sam2_hiera_l.yaml", ...))
corrclip_tokens.default_masks = "sam2-hiera-l"


def map_correction(labels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Map correction: class labels [H, W] and a mask label map [H, W] -> labels where every mask (each id
    but the smallest, the rest) takes its most frequent label (torch.mode: the smallest on ties), as
    corrclip_segmentor.py:216-222 does after the argmax and the background threshold."""
    out = labels.clone()
    values = torch.unique(regions)[1:]
    for v in values.tolist():
        m = regions == v
        out[m] = torch.mode(labels[m])[0]
    return out


def correct_scores(scores: torch.Tensor, labels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Map correction on scores, for a predictor whose labels come from its scores: ``scores`` [B, Q, H, W],
    the labels they give ``labels`` [B, H, W] and mask label maps ``regions`` [B, H, W] -> scores where every
    pixel of a mask (each id but the smallest) carries the scores of one pixel of the mask's most frequent
    label (the one with the highest score), so the labels are exactly :func:`map_correction`'s."""
    out = scores.clone()
    for b in range(scores.shape[0]):
        lab, reg = labels[b], regions[b]
        for v in torch.unique(reg)[1:].tolist():
            m = reg == v
            mode = torch.mode(lab[m])[0]
            pick = m & (lab == mode)
            idx = torch.where(pick.flatten(), scores[b].flatten(1).max(dim=0).values, float("-inf")).argmax()
            out[b][:, m] = scores[b].flatten(1)[:, idx, None]
    return out
