"""CASS (Kim et al., "Distilling Spectral Graph for Object-Context Aware Open-Vocabulary Semantic
Segmentation", CVPR 2025, arXiv 2411.17150; code github.com/MICV-yonsei/CASS, which carries no licence:
this is written from the paper and from reading that code, nothing copied).

Spectral object-level context distillation, in CLIP's last block (NACLIP's reduced block: no residual, no
MLP). Per image, with ``K`` CLIP's keys and ``K'`` a DINO ViT's last-block keys resized bilinearly to
CLIP's patch grid and min-max mapped onto the range of ``K`` (patch tokens only, ``s = d^-1/2``):

    A_h = s K_h K_hᵀ,   A'_g = s K'_g K'_gᵀ                       (one graph per head)
    λ(A): the ``k_eigen`` largest eigenvalues, L2- then L1-normalized
    w_hg = Σ |sort λ(A'_h) − sort λ(A_g)|                        (1-D Wasserstein distance)
    π = argmin_π Σ_h (1 − w_h,π(h))                               (Hungarian matching of the heads)
    D_h = low-rank (``rank``) A'_π(h), singular values optionally rescaled, zero diagonal,
          min-max mapped onto the range of A_h
    Â_h = (w_hπ(h) c D_h + A_h) / (w_hπ(h) c + 1)                 (c = ``scale_factor``)
    out = O(softmax(Â + ω) V)                                     (ω: NACLIP's Gaussian window)

then CLIP's final norm and projection. Note how the official code indexes the pair: the cost matrix's
rows are DINO heads and its columns CLIP heads, but the loop combines CLIP head ``h`` with DINO head
``π(h)``; that is what this module does. Two matchings can cost exactly the same (the distance of
L1-normalized spectra is piecewise linear); such a tie is broken by our Hungarian's order, which need not
be scipy's. The text side (object-presence prior) is
:mod:`gemseg.methods.cass_text`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..backbones.base import Backbone, Preprocess
from ..backbones.vfm import VisionBackbone
from ..config import GEMConfig, as_floats
from .baselines import neighbourhood_bias, token_grid, trunk
from .cass_text import presence_scores
from .proxyclip import VFMProxy

DEFAULT_PROXY = "dino-b8"  # configs/base_config.py dino_type='dino_vitb8'


@dataclass(frozen=True)
class CASSConfig:
    """CASS's settings; defaults are the official ones (MICV-yonsei/CASS clip/model.py, cass_segmentor.py)."""

    scale_factor: float = 10.0  # clip/model.py custom_attn config 'scale_factor': weight c of the DINO graph
    k_eigen: int = 20  # clip/model.py custom_attn config 'k_eigen': eigenvalues compared per head
    rank: int = 10  # clip/model.py optimal_q(initial_q=10): its energy test always passes at q = 10
    scale_singular_values: bool = True  # clip/model.py _scale_singular_values: off only for voc20, city_scapes
    gaussian_std: float = 5.0  # cass_segmentor.py gaussian_std=5.: NACLIP's window, in patches
    vfm_layer: int = -1  # dino/dino_attention.py forward: the keys of the DINO's last block
    # the text side (gemseg.methods.cass_text); cass_segmentor.py defaults, set per dataset in configs/cfg_*.py
    global_semantics_weight: float = 0.0  # cass_segmentor.py global_semantics_weight=0.0
    mean_vector_weight: float = 0.0  # cass_segmentor.py mean_vector_weight=0.0
    h_threshold: float = 0.0  # cass_segmentor.py h_threshold=0.0: Ward clustering cut of the queries
    topk: int = 2  # cass_segmentor.py _compute_topk_similarities(k=2): patches averaged per class

    def __post_init__(self):
        as_floats(self, "CASS", ("scale_factor", "gaussian_std", "global_semantics_weight", "mean_vector_weight", "h_threshold"))
        for name in ("k_eigen", "rank", "topk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CASS {name} must be a positive integer, got {value!r}")
        if not self.gaussian_std > 0 or self.scale_factor < 0 or self.h_threshold < 0:
            raise ValueError("CASS gaussian_std must be > 0, scale_factor and h_threshold >= 0")
        for name in ("global_semantics_weight", "mean_vector_weight"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"CASS {name} must lie in [0, 1], got {getattr(self, name)}")
        if not isinstance(self.scale_singular_values, bool) or isinstance(self.vfm_layer, bool) \
                or not isinstance(self.vfm_layer, int):
            raise TypeError("CASS scale_singular_values must be a bool and vfm_layer an integer")

    def to_dict(self) -> dict:
        return asdict(self)


class CASSProxy(VFMProxy):
    """The DINO model of a CASS model and CASS's settings (``GEMModel(method="cass", proxy=...)``)."""

    settings_type = CASSConfig
    settings_error = "CASS settings must be a {}"

    def __init__(self, vfm: VisionBackbone, settings: CASSConfig | None = None):
        if not isinstance(vfm, VisionBackbone):
            raise TypeError(f"the CASS proxy must be a VisionBackbone (gemseg.backbones.vfm.create_vfm), got "
                            f"{type(vfm).__name__}")
        if vfm.kind == "sam":
            raise ValueError("CASS reads a ViT's attention keys; SAM's encoder has none: use dino-b8")
        super().__init__(vfm, settings)
        n = len(vfm.model.blocks)
        if not -n <= self.settings.vfm_layer < n:
            raise ValueError(f"CASS vfm_layer {self.settings.vfm_layer} is out of range for {vfm.name} ({n} blocks)")

    def pad_multiple(self, clip_patch: tuple[int, int]) -> tuple[int, int]:
        """Input sides must be multiples of CLIP's patch only (DINO's input is resized, then trimmed)."""
        return tuple(clip_patch)

    def keys(self, images: torch.Tensor, source: Preprocess, grid: tuple[int, int]) -> torch.Tensor:
        """CLIP-normalized images [B, 3, H, W] -> DINO's last-block keys of the patches on CLIP's ``grid``,
        [B, heads, gh * gw, d]. As the official code: the image resized to a ``min(H, W)`` square (PIL's
        default bicubic; here antialiased bicubic), trimmed to a multiple of DINO's patch, keys resized
        bilinearly per channel."""
        v = self.vfm
        s = min(images.shape[-2:])
        mean = torch.tensor(source.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(source.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        rgb = images * std + mean
        if tuple(rgb.shape[-2:]) != (s, s):
            rgb = F.interpolate(rgb, size=(s, s), mode="bicubic", align_corners=False, antialias=True)
        ph, pw = v.patch_size
        rgb = rgb[..., : s - s % ph, : s - s % pw]
        vmean = torch.tensor(v.preprocess.mean, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        vstd = torch.tensor(v.preprocess.std, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        _, k, _ = v.attention_qkv((rgb - vmean) / vstd, layer=self.settings.vfm_layer)  # (B, heads, N, d)
        k = k[:, :, v.num_prefix_tokens:]
        B, heads, _, d = k.shape
        dh, dw = rgb.shape[-2] // ph, rgb.shape[-1] // pw
        k = k.transpose(2, 3).reshape(B * heads, d, dh, dw)
        k = F.interpolate(k, size=tuple(grid), mode="bilinear", align_corners=False)  # (B*heads, d, gh, gw)
        return k.reshape(B, heads, d, -1).transpose(2, 3)


def assignment(cost: torch.Tensor) -> list[int]:
    """The minimum-cost assignment of a square cost matrix [n, n] (Hungarian method, O(n³)): ``col[i]``
    for each row ``i``; what ``scipy.optimize.linear_sum_assignment`` returns as its column indices."""
    n = cost.shape[0]
    a = cost.double().tolist()
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (n + 1)
    match, way = [0] * (n + 1), [0] * (n + 1)  # match[j]: row (1-based) assigned to column j
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv, used = [inf] * (n + 1), [False] * (n + 1)
        while match[j0]:
            used[j0] = True
            i0, delta, j1 = match[j0], inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = a[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    col = [0] * n
    for j in range(1, n + 1):
        col[match[j] - 1] = j - 1
    return col


def _spectrum(adj: torch.Tensor, k: int) -> torch.Tensor:
    """[heads, N, N] symmetric -> the ``k`` largest eigenvalues [heads, k], L2- then L1-normalized."""
    vals = torch.linalg.eigvalsh(adj.double()).flip(-1)[:, :k]  # descending
    vals = F.normalize(vals, p=2, dim=1)
    return F.normalize(vals, p=1, dim=1)


def _to_range(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` min-max mapped onto ``[like.min(), like.max()]``."""
    lo, hi = like.min(), like.max()
    return (x - x.min()) / (x.max() - x.min()) * (hi - lo) + lo


def _low_rank(adj: torch.Tensor, rank: int, rescale: bool) -> torch.Tensor:
    """[N, N] symmetric -> its best rank-``rank`` approximation ``U S Vᵀ`` (float64) with the singular values
    optionally mapped onto ``[0.5 min, 1.5 max]`` as clip/model.py _scale_singular_values; zero diagonal."""
    lam, U = torch.linalg.eigh(adj.double())
    top = lam.abs().argsort(descending=True)[:rank]
    lam, U = lam[top], U[:, top]
    s = lam.abs()  # singular values of a symmetric matrix; U sign(λ) are its right singular vectors
    if rescale and s.max() > s.min():
        lo, hi = s.min(), s.max()
        s = (s - lo) / (hi - lo) * (1.5 * hi - 0.5 * lo) + 0.5 * lo
    out = (U * (s * lam.sign())) @ U.T
    return out.fill_diagonal_(0)


def spectral_attention(k: torch.Tensor, k_dino: torch.Tensor, settings: CASSConfig) -> torch.Tensor:
    """One image: CLIP keys ``k`` [heads, N, d] and DINO keys ``k_dino`` [heads, N, d] on the same grid ->
    the distilled attention logits ``Â`` [heads, N, N] float64 (before ``ω`` and the softmax; module
    docstring). All of it runs in float64 (ours: the official code casts to float64 only for the
    eigendecompositions; in float32 a near tie of the head matching can flip)."""
    heads, N, d = k.shape
    scale = d ** -0.5
    k, k_dino = k.double(), k_dino.double()
    k_dino = _to_range(k_dino, k)
    A = (k @ k.transpose(1, 2)) * scale  # (heads, N, N)
    A_dino = (k_dino @ k_dino.transpose(1, 2)) * scale
    ev_d, ev_c = _spectrum(A_dino, settings.k_eigen), _spectrum(A, settings.k_eigen)
    w = (ev_d.sort(dim=1).values[:, None] - ev_c.sort(dim=1).values[None]).abs().sum(-1)  # (dino, clip)
    col = assignment(1 - w)
    out = torch.empty_like(A)
    for h in range(heads):
        g = col[h]
        wd = float(w[h, g].detach()) * settings.scale_factor
        D = _to_range(_low_rank(A_dino[g], min(settings.rank, N), settings.scale_singular_values), A[h])
        out[h] = (wd * D + A[h]) / (wd + 1)
    return out


def cass_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, proxy: CASSProxy,
                return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CASS: ``images`` [B, 3, H, W] (CLIP-normalized) -> tokens [B, prefix + gh * gw, D]: the patch tokens
    of the distilled last block (module docstring) and the prefix tokens of the unmodified one (the class
    token CASS compares with the text for its object-presence prior); with ``return_ori`` CLIP's
    unmodified tokens too."""
    s = proxy.settings
    x = trunk(backbone, images)  # (B, prefix + gh*gw, C)
    grid = token_grid(backbone, images, x.shape[1])
    blk, p = backbone.blocks[-1], backbone.num_prefix_tokens
    _, k, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
    k, v = k[:, :, p:], v[:, :, p:]
    k_dino = proxy.keys(images, backbone.preprocess, grid).to(k.dtype)  # (B, heads', N', d')
    if k_dino.shape[1:] != k.shape[1:]:
        raise ValueError(f"CASS needs a proxy with CLIP's heads x head width ({k.shape[1]} x {k.shape[-1]}), "
                         f"{proxy.vfm.name} has {k_dino.shape[1]} x {k_dino.shape[-1]}")
    omega = neighbourhood_bias(grid, std=s.gaussian_std, num_prefix_tokens=0, device=x.device).to(k.dtype)
    attn = torch.stack([spectral_attention(k[b], k_dino[b], s) for b in range(x.shape[0])])
    attn = (attn.to(v.dtype) + omega).softmax(dim=-1)  # (B, heads, N, N)
    plain = blk.plain(x)
    out = torch.cat([plain[:, :p], blk.attn_out(attn @ v)], dim=1)  # (B, prefix + N, C)
    return backbone.head(out), (backbone.head(plain) if return_ori else None)


def cass_scores(feats: torch.Tensor, prefix: torch.Tensor, text: torch.Tensor, proxy: CASSProxy) -> torch.Tensor:
    """CASS's patch scores with its object-presence prior (:func:`gemseg.methods.cass_text.presence_scores`):
    ``feats`` [B, D, h, w] and the prefix tokens ``prefix`` [B, p, D] (both L2-normalized), ``text`` [P, D]
    or per image [B, P, D] -> [B, P, h, w]. The presence is the first prefix token's (the class token's)."""
    s = proxy.settings
    if not (s.global_semantics_weight or s.mean_vector_weight):
        eq = "bdhw,pd->bphw" if text.ndim == 2 else "bdhw,bpd->bphw"
        return torch.einsum(eq, feats, text)
    if prefix.shape[1] == 0:
        raise ValueError("CASS's object-presence prior needs a class token, which this backbone has not; "
                         "set global_semantics_weight=0 and mean_vector_weight=0")
    glob = prefix[:, 0]
    if text.ndim == 2:
        return presence_scores(feats, glob, text, s)
    return torch.cat([presence_scores(feats[b:b + 1], glob[b:b + 1], text[b], s) for b in range(feats.shape[0])])


cass_tokens.proxy_type = CASSProxy  # what create_model wraps the VFM in (Method.needs "proxy")
cass_tokens.default_proxy = DEFAULT_PROXY
cass_tokens.proxy_settings_type = CASSConfig  # --method-setting (alias --proxy-settings) K=V parse into it
cass_tokens.scores = cass_scores  # GEMModel scores the text with it instead of plain cosines
