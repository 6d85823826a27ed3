"""Trident (Shi, Dong, Xu, ICCV 2025, arXiv 2411.09219; code github.com/YuHengsss/Trident, Apache-2.0):
splice-then-segment. CLIP and a DINO proxy see sub-images (windows); CLIP's last block runs ProxyCLIP's
proxy attention in each window; the window outputs are spliced into one map of the whole image, which
SAM's encoder then aggregates globally.

For an image resized so that its sides are multiples of CLIP's patch (and at least one crop):

1. windows ``W_i`` (mmseg's sliding grid, ``crop``/``stride``); in each, DINO's normed last-block patch
   features ``f_i`` and CLIP's last-block values ``v_i = V(ln_1(x_i))``;
2. ``S_i = f̂_iᵀ f̂_i``, ``A_i = softmax(mask(γ (S_i − β μ)))`` with ``μ`` the mean of ``S`` over *all*
   windows of the image (the official code batches them), ``o_i = O(A_i · up(v_i))`` (no residual, no MLP);
3. ``X = splice(o_i)``: each window's map added at its place on the whole image's grid, divided by the
   number of windows covering each cell; then bilinearly resized to SAM's valid grid (``n`` cells);
4. with ``a_h`` [n, n] SAM's last-block attention and ``ŝ_h = v̂_hᵀ v̂_h`` the cosine of its values (head
   ``h``), ``t_m = min(c · mean_{h, n'} ŝ_h[m, n'], 0.9)`` (``c = cos_fac``; a negative ``t_m`` becomes 0.6
   unless ``refine_neg_cos``), ``G = row-normalize(mean_h a_h ⊙ [ŝ_h > t])``; tokens ``head(G · X)``.

Every step is ``trident.py: get_trident_seg/get_windowed_imgs/get_sam_feat``, ``seg_utils/utils.py:
preprocess_image`` and ``open_clip/transformer.py: VisionTransformer.custom_attn/guidance_attn/get_sam_sim``
of the official code (a93b346d1b1d); docs/methods.md has the citations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from ..backbones.sam import SamEncoder
from ..backbones.vfm import VisionBackbone
from ..config import GEMConfig, as_floats
from .baselines import trunk

DEFAULT_PROXY = "dino-b16"  # trident.py:48 torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')
DEFAULT_SAM = "sam-vit-b"  # configs/base_config.py:16 sam_model_type='vit_b' (sam_vit_b_01ec64.pth, line 2)


@dataclass(frozen=True)
class TridentConfig:
    """Trident's settings; defaults are the official base configuration (configs/base_config.py)."""

    beta: float = 1.2  # configs/base_config.py:11 beta=1.2
    gamma: float = 3.0  # trident.py:30 gamma=3.0 (no config overrides it)
    crop: int = 336  # configs/base_config.py:15 slide_crop=336
    stride: int = 224  # configs/base_config.py:14 slide_stride=224 (voc20: 112)
    cos_fac: float = 1.2  # configs/base_config.py:12 cos_fac=1.2 (cityscapes 3.0, voc20 0.0)
    refine_neg_cos: bool = True  # configs/base_config.py:13 (ade20k, cityscapes: False)
    neg_thresh: float = 0.6  # open_clip/transformer.py:651 (get_sam_sim), unless refine_neg_cos
    max_thresh: float = 0.9  # open_clip/transformer.py:653 thresholds above 0.9 become 0.9
    proxy_threshold: float = 0.0  # open_clip/transformer.py:572 similarity < 0.0 -> -inf
    split_halves: bool = False  # trident.py:141 Cityscapes: SAM sees the left and right halves apart
    sam: str = DEFAULT_SAM  # which SAM (gemseg.backbones.sam name; alias sam-b); its weights follow proxy_weights

    def __post_init__(self):
        as_floats(self, "Trident", ("beta", "gamma", "cos_fac", "neg_thresh", "max_thresh", "proxy_threshold"))
        for name in ("crop", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Trident {name} must be a positive integer number of pixels, got {value!r}")
        if self.stride > self.crop:
            raise ValueError(f"Trident stride {self.stride} must not exceed crop {self.crop}")

    def to_dict(self) -> dict:
        return asdict(self)


class TridentProxy(nn.Module):
    """What ``method="trident"`` takes as ``proxy=``: the DINO proxy, SAM's encoder and the settings."""

    def __init__(self, vfm: VisionBackbone, sam: SamEncoder, settings: TridentConfig | None = None):
        super().__init__()
        if not isinstance(vfm, VisionBackbone) or vfm.kind == "sam" or vfm.input_size is not None:
            raise TypeError("Trident's proxy must be a ViT VisionBackbone that runs at its input's size "
                            "(gemseg.backbones.vfm.create_vfm('dino-b16'))")
        if not isinstance(sam, SamEncoder):
            raise TypeError("Trident's sam must be a SamEncoder (gemseg.backbones.sam.create_sam)")
        self.vfm, self.sam = vfm.eval(), sam.eval()
        self.settings = settings or TridentConfig()
        if not isinstance(self.settings, TridentConfig):
            raise TypeError("Trident settings must be a TridentConfig")

    def describe(self) -> dict:
        """What identifies the proxy in a run's record."""
        return {"name": self.vfm.name, "kind": self.vfm.kind, "pretrained": self.vfm.pretrained,
                "sam_name": self.sam.name, "sam_pretrained": self.sam.pretrained, **self.settings.to_dict()}

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The output grid ``(h, w)`` for an input of ``size`` pixels: SAM's valid grid."""
        H, W = _ceil16(size)
        if self.settings.split_halves:
            h, w = self.sam.grid(H, W // 2)
            return h, 2 * w
        return self.sam.grid(H, W)

    def pad_multiple(self, clip_patch: tuple[int, int]) -> tuple[int, int]:
        """No padding: Trident resizes its input itself (``preprocess_image``) and covers the whole image."""
        return (1, 1)


def trident_size(height: int, width: int, stride: int, crop: int) -> tuple[int, int]:
    """``seg_utils/utils.py: preprocess_image``: the longer side rounded up to a multiple of ``stride`` (CLIP's
    patch), the other scaled alike, both rounded up to multiples and to at least ``crop``. The official code
    keeps an image whose sides are already multiples as it is; here it is also brought up to ``crop`` (the
    official code fails on such an image smaller than a crop)."""
    if height % stride == 0 and width % stride == 0:
        return max(height, crop), max(width, crop)
    longer = max(height, width)
    dst = -(-longer // stride) * stride
    h, w = int(height * dst / longer), int(width * dst / longer)
    h, w = -(-h // stride) * stride, -(-w // stride) * stride
    return max(h, crop), max(w, crop)


def trident_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y1, x1, y2, x2)`` of ``get_windowed_imgs``, row-major: mmseg's grid, last row/column moved back to
    end at the border."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            out.append((max(y2 - crop, 0), max(x2 - crop, 0), y2, x2))
    return out


def window_proxy_attention(feats: torch.Tensor, *, beta: float, gamma: float, threshold: float) -> torch.Tensor:
    """``custom_attn``'s attention for all windows of one image: DINO features [n, C', h, w] -> [n, hw, hw],
    the mean of the similarities taken over every window together. A fully masked row attends to itself
    (ours; the official code gives NaN there)."""
    f = F.normalize(feats.flatten(2).float(), dim=1)  # (n, C', hw)
    sim = torch.einsum("bcm,bcn->bmn", f, f)  # (n, hw, hw)
    sim = (sim - beta * sim.mean()) * gamma
    masked = sim < threshold
    dead = masked.all(dim=-1)  # (n, hw)
    if dead.any():
        masked.diagonal(dim1=1, dim2=2).logical_and_(~dead)
    return sim.masked_fill(masked, float("-inf")).softmax(dim=-1)


def splice(maps: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> torch.Tensor:
    """Window maps [n, D, h, w] placed at ``boxes`` (``(y1, x1, y2, x2)`` in cells of the output) of a
    [D, *size] map, each cell the mean of the windows covering it (``guidance_attn``'s ``dst_v / count_mat``)."""
    total = maps.new_zeros((maps.shape[1], *size))
    count = maps.new_zeros((1, *size))
    for m, (y1, x1, y2, x2) in zip(maps, boxes):
        total[:, y1:y2, x1:x2] += m
        count[:, y1:y2, x1:x2] += 1
    return total / count


def sam_guidance(attn: torch.Tensor, v: torch.Tensor, *, cos_fac: float, refine_neg_cos: bool = True,
                 neg_thresh: float = 0.6, max_thresh: float = 0.9) -> torch.Tensor:
    """``get_sam_sim``: SAM's last-block attention [heads, n, n] and values [heads, n, d] -> the aggregation
    [n, n] (rows sum to 1): attention kept where the value cosine exceeds the row's threshold, averaged over
    heads, row-normalized. Computed head by head to bound memory (the threshold's mean uses
    ``mean_n' v̂[m]·v̂[n'] = v̂[m]·mean_n' v̂[n']``)."""
    vn = F.normalize(v.float(), dim=-1)  # (heads, n, d)
    thresh = cos_fac * torch.einsum("hmd,hd->hm", vn, vn.mean(dim=1)).mean(dim=0)  # (n,)
    if not refine_neg_cos:
        thresh = torch.where(thresh < 0.0, torch.full_like(thresh, neg_thresh), thresh)
    thresh = thresh.clamp(max=max_thresh)[:, None]  # (n, 1)
    kept = attn.new_zeros(attn.shape[1:], dtype=torch.float32)  # (n, n)
    for h in range(attn.shape[0]):
        kept += torch.where(vn[h] @ vn[h].T > thresh, attn[h].float(), 0.0)
    kept = kept / attn.shape[0]
    return kept / kept.sum(dim=-1, keepdim=True)


def _unnormalize(images: torch.Tensor, pre) -> torch.Tensor:
    mean = torch.tensor(pre.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * std + mean  # RGB in [0, 1]


def _sam_maps(sam: SamEncoder, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``get_sam_feat`` for one image RGB [1, 3, H, W] (sides multiples of 16): the last block's attention
    [heads, n, n] and values [heads, n, d] on the valid grid ``(h, w)``."""
    _, attn, v = sam.encode(sam.prepare(rgb))
    h, w = sam.grid(*rgb.shape[-2:])
    g = sam.image_size // sam.patch_size
    attn = attn[0].reshape(sam.heads, g, g, g, g)[:, :h, :w, :h, :w].reshape(sam.heads, h * w, h * w)
    return attn, v[0, :, :h, :w].reshape(sam.heads, h * w, -1), (h, w)


def window_outputs(backbone: Backbone, crops: torch.Tensor, proxy: TridentProxy) -> torch.Tensor:
    """Windows [n, 3, c, c] (CLIP-normalized) -> ``custom_attn``'s outputs [n, C, h, w] on DINO's grid."""
    s = proxy.settings
    feats = proxy.vfm(crops, backbone.preprocess)  # (n, C', h, w)
    x = trunk(backbone, crops)  # (n, 1 + gh*gw, C)
    blk = backbone.blocks[-1]
    _, _, v = blk.qkv(blk.ln_1(x))  # (n, heads, N, d)
    n, heads, _, d = v.shape
    gh, gw = crops.shape[-2] // backbone.patch_size[0], crops.shape[-1] // backbone.patch_size[1]
    h, w = feats.shape[-2:]
    v = v[:, :, backbone.num_prefix_tokens:].reshape(n * heads, gh, gw, d).permute(0, 3, 1, 2)
    v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)  # (n*heads, d, h, w)
    v = v.flatten(2).transpose(1, 2).reshape(n, heads, h * w, d)
    attn = window_proxy_attention(feats, beta=s.beta, gamma=s.gamma, threshold=s.proxy_threshold).to(v.dtype)
    out = blk.attn_out(attn[:, None] @ v)  # (n, hw, C)
    return out.transpose(1, 2).reshape(n, -1, h, w)


def _ceil16(size: tuple[int, int]) -> tuple[int, int]:
    """``get_trident_seg``: the image SAM sees has its sides rounded up to multiples of 16."""
    return tuple(-(-int(s) // 16) * 16 for s in size)


def sam_aggregate(spliced: torch.Tensor, sam: SamEncoder, rgb: torch.Tensor, settings: TridentConfig) -> torch.Tensor:
    """``guidance_attn`` after the splice: the spliced map [C, h', w'] and the image RGB [1, 3, H, W] (sides
    multiples of 16) -> aggregated tokens [h * w, C] on SAM's valid grid (both halves side by side with
    ``split_halves``)."""
    s = settings
    parts = [rgb] if not s.split_halves else [rgb[..., : rgb.shape[-1] // 2], rgb[..., rgb.shape[-1] // 2:]]
    maps = [spliced] if not s.split_halves else [spliced[..., : spliced.shape[-1] // 2],
                                                  spliced[..., spliced.shape[-1] // 2:]]
    outs = []
    for part, m in zip(parts, maps):
        attn, v, (h, w) = _sam_maps(sam, part)
        x = F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0]  # (C, h, w)
        g = sam_guidance(attn, v, cos_fac=s.cos_fac, refine_neg_cos=s.refine_neg_cos, neg_thresh=s.neg_thresh,
                         max_thresh=s.max_thresh)  # (hw, hw)
        outs.append((g.to(x.dtype) @ x.flatten(1).T).reshape(h, w, -1))  # (h, w, C)
    return torch.cat(outs, dim=1).flatten(0, 1)


def trident_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, proxy: TridentProxy,
                   return_ori: bool = False) -> tuple[torch.Tensor, None]:
    """Trident: ``images`` [B, 3, H, W] (normalized for CLIP) -> tokens [B, h * w, D] on SAM's valid grid
    ``(h, w) = proxy.grid((H, W))``, covering the whole image (no class token). Each image is resized
    (:func:`trident_size`), cut into windows that CLIP and DINO see in one batch, spliced and aggregated
    with SAM's attention, then CLIP's final norm and projection."""
    if not isinstance(proxy, TridentProxy):
        raise TypeError(f"method 'trident' takes a TridentProxy (DINO + SAM), got {type(proxy).__name__}; build the "
                        "model with create_model(..., method='trident') instead of a variant of another method's")
    if return_ori:
        raise ValueError("method 'trident' has no original-path view (return_ori); use method='clip' for CLIP's own tokens")
    s, (ph, pw) = proxy.settings, backbone.patch_size
    if ph != pw or s.crop % ph or s.stride % ph or any(s.crop % p for p in proxy.vfm.patch_size):
        raise ValueError(f"Trident crop {s.crop} and stride {s.stride} must be multiples of CLIP's patch {ph} (crop "
                         f"also of the proxy's {proxy.vfm.patch_size[0]}); the official ones are 336 and 224")
    out = []
    for image in images:
        H, W = image.shape[-2:]
        size = trident_size(H, W, ph, s.crop)
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)  # (1, 3, Hc, Wc)
        boxes = trident_windows(*size, s.crop, s.stride)
        crops = torch.cat([x[..., y1:y2, x1:x2] for y1, x1, y2, x2 in boxes])  # (n, 3, crop, crop)
        maps = window_outputs(backbone, crops, proxy)  # (n, C, h, w)
        g = s.crop // ph  # CLIP cells per window side
        if maps.shape[-1] % g:
            ratio = int(round(maps.shape[-2] / g))
            maps = F.interpolate(maps, size=(g * ratio, g * ratio), mode="bilinear", align_corners=False)
        else:
            ratio = maps.shape[-1] // g
        cells = [tuple(c // ph * ratio for c in b) for b in boxes]
        spliced = splice(maps, cells, (size[0] // ph * ratio, size[1] // ph * ratio))  # (C, h', w')
        rgb = _unnormalize(image[None], backbone.preprocess)
        rgb = F.interpolate(rgb, size=_ceil16((H, W)), mode="bilinear", align_corners=False)
        out.append(backbone.head(sam_aggregate(spliced, proxy.sam, rgb, s)[None].to(maps.dtype))[0])
    return torch.stack(out), None


def build_trident_proxy(proxy=None, settings: TridentConfig | None = None, *, weights: str = "pretrained",
                        device="cpu", cache_dir: str | None = None) -> TridentProxy:
    """The :class:`TridentProxy` ``create_model(method="trident", proxy=, proxy_weights=, proxy_settings=)``
    builds: ``proxy`` a VFM name or :class:`VisionBackbone` (default ``dino-b16``) with ``weights``, and SAM
    ``settings.sam`` (random if ``weights`` is, else from the hub cache). A ready :class:`TridentProxy` is
    returned as it is."""
    if isinstance(proxy, TridentProxy):
        return proxy.to(device)
    from ..backbones.sam import create_sam
    from ..backbones.vfm import create_vfm

    settings = settings or TridentConfig()
    if not isinstance(settings, TridentConfig):
        raise TypeError(f"method 'trident' takes proxy_settings=TridentConfig(...), got {type(settings).__name__}")
    if not isinstance(proxy, VisionBackbone):
        proxy = create_vfm(proxy or DEFAULT_PROXY, weights=weights, device=device, cache_dir=cache_dir)
    sam = create_sam(settings.sam, weights="random" if weights == "random" else "pretrained", device=device,
                     cache_dir=cache_dir)
    return TridentProxy(proxy.to(device), sam, settings)


trident_tokens.make_proxy = build_trident_proxy  # read by create_model through Method's attributes
trident_tokens.proxy_settings_type = TridentConfig  # --method-setting (alias --proxy-settings) K=V parse into it
trident_tokens.on_proxy_grid = True  # its tokens lie on SAM's valid grid (TridentProxy.grid), without prefix tokens
