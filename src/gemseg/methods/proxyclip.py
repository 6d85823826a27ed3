"""ProxyCLIP (Lan et al., ECCV 2024, arXiv 2408.04883; code github.com/mc-lan/ProxyCLIP): the attention of
CLIP's last block is replaced by a *proxy attention* computed from the patch features of a vision
foundation model (VFM) that has no text.

With ``f`` the VFM's dense features [C', h, w] flattened to ``h * w`` columns and L2-normalized over
channels, ``S = fᵀ f`` [h w, h w], the proxy attention is

    A = softmax(mask(γ (S − β mean(S))))      mask: entries < 0 become −∞

(the mean over all entries of ``S`` of that image; one ``A`` shared by every head). CLIP's last block
then outputs ``O(A · up(v))`` with ``v`` the block's value projection of ``ln_1(x)`` (patch tokens only,
per head), ``up`` a bilinear resize of the value map from CLIP's grid to the VFM's, and ``O`` the output
projection: no residual, no MLP. The tokens, on the VFM's grid, go through CLIP's final norm and
projection. Every step above is ``open_clip/transformer.py: VisionTransformer.custom_attn`` and
``proxyclip_segmentor.py: forward_feature`` of the official code; docs/methods.md has the details.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from ..backbones.vfm import VisionBackbone
from ..config import GEMConfig, as_floats
from .baselines import token_grid, trunk

DEFAULT_PROXY = "dino-b8"  # configs/base_config.py vfm_model='dino' -> proxyclip_segmentor.py loads dino_vitb8


@dataclass(frozen=True)
class ProxyCLIPConfig:
    """The proxy attention's settings; defaults are the official ones."""

    beta: float = 1.2  # proxyclip_segmentor.py ProxyCLIPSegmentation(beta=1.2); no config overrides it
    gamma: float = 3.0  # proxyclip_segmentor.py ProxyCLIPSegmentation(gamma=3.0); no config overrides it
    threshold: float = 0.0  # open_clip/transformer.py custom_attn: similarity[similarity < 0.0] = -inf
    layer: int = -1  # VFM block whose normed output is the proxy: the last (get_intermediate_layers(n=1))

    def __post_init__(self):
        as_floats(self, "ProxyCLIP", ("beta", "gamma", "threshold"))
        if not self.gamma > 0:
            raise ValueError(f"ProxyCLIP gamma must be > 0, got {self.gamma!r}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise TypeError(f"ProxyCLIP layer must be an integer block index, got {self.layer!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class VFMProxy(nn.Module):
    """A method's proxy: a VFM (``vfm``) and the method's settings for it (``settings``, an instance of
    ``settings_type``; ``None`` gives the defaults). Subclasses check the VFM before calling this."""

    settings_type: type  # the settings dataclass of the method
    settings_error = "proxy settings must be a {}"  # the message for settings of another type

    def __init__(self, vfm: VisionBackbone, settings=None):
        super().__init__()
        self.vfm = vfm.eval()
        self.settings = settings or self.settings_type()
        if not isinstance(self.settings, self.settings_type):
            raise TypeError(self.settings_error.format(self.settings_type.__name__))

    def describe(self) -> dict:
        """What identifies the proxy in a run's record: VFM name, family, weights, settings."""
        v = self.vfm
        return {"name": v.name, "kind": v.kind, "pretrained": v.pretrained, **self.settings.to_dict()}

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The output grid ``(h, w)`` for an input of ``size`` pixels: the VFM's."""
        return self.vfm.grid(size)

    def pad_multiple(self, clip_patch: tuple[int, int]) -> tuple[int, int]:
        """Input sizes must be multiples of this: CLIP's patch and, for a VFM that runs at the input's own
        resolution, its patch too (the official code pads crops to multiples of 56 for the same reason)."""
        if self.vfm.input_size is not None:
            return tuple(clip_patch)
        return tuple(a * b // _gcd(a, b) for a, b in zip(clip_patch, self.vfm.patch_size))


class ProxyAttention(VFMProxy):
    """The VFM of a ProxyCLIP model and the settings of its proxy attention."""

    settings_type = ProxyCLIPConfig

    def __init__(self, vfm: VisionBackbone, settings: ProxyCLIPConfig | None = None):
        if not isinstance(vfm, VisionBackbone):
            raise TypeError("proxy must be a VisionBackbone (gemseg.backbones.vfm.create_vfm), "
                            f"got {type(vfm).__name__}")
        super().__init__(vfm, settings)
        n = len(vfm.model.blocks)
        if not -n <= self.settings.layer < n:
            raise ValueError(f"ProxyCLIP layer {self.settings.layer} is out of range for {vfm.name} with {n} blocks")


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def proxy_attention(feats: torch.Tensor, *, beta: float, gamma: float, threshold: float = 0.0) -> torch.Tensor:
    """VFM features [B, C', h, w] -> proxy attention [B, h w, h w] (rows sum to 1).

    A row whose entries are all masked (the official code gives NaN there) attends to itself; that
    fallback is ours and changes nothing where the official result is defined.
    """
    f = F.normalize(feats.flatten(2).float(), dim=1)  # (B, C', hw)
    sim = torch.einsum("bcm,bcn->bmn", f, f)  # (B, hw, hw)
    sim = (sim - beta * sim.mean(dim=(1, 2), keepdim=True)) * gamma
    masked = sim < threshold
    dead = masked.all(dim=-1)  # (B, hw)
    if dead.any():
        diag = masked.diagonal(dim1=1, dim2=2)
        diag &= ~dead
    return sim.masked_fill(masked, float("-inf")).softmax(dim=-1)


def proxyclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, proxy: ProxyAttention,
                     return_ori: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ProxyCLIP: ``images`` [B, 3, H, W] (normalized for CLIP) -> tokens [B, h * w, D] on the VFM's grid
    ``(h, w) = proxy.grid((H, W))`` (no class token), and with ``return_ori`` CLIP's unmodified tokens
    [B, 1 + H/ph * W/pw, D]. The VFM runs once on the same batch, renormalized with its own statistics."""
    s = proxy.settings
    feats = proxy.vfm(images, backbone.preprocess, layer=s.layer)  # (B, C', h, w)
    x = trunk(backbone, images)  # (B, 1 + gh*gw, C)
    gh, gw = token_grid(backbone, images, x.shape[1])
    blk = backbone.blocks[-1]
    _, _, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
    B, heads, _, d = v.shape
    h, w = feats.shape[-2:]
    v = v[:, :, backbone.num_prefix_tokens:].reshape(B * heads, gh, gw, d).permute(0, 3, 1, 2)  # (B*heads, d, gh, gw)
    v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)  # (B*heads, d, h, w)
    v = v.flatten(2).transpose(1, 2).reshape(B, heads, h * w, d)
    attn = proxy_attention(feats, beta=s.beta, gamma=s.gamma, threshold=s.threshold).to(v.dtype)  # (B, hw, hw)
    out = blk.attn_out(attn[:, None] @ v)  # (B, hw, C)
    ori = backbone.head(blk.plain(x)) if return_ori else None
    return backbone.head(out), ori


proxyclip_tokens.proxy_type = ProxyAttention  # what create_model wraps the VFM in (Method.needs "proxy")
proxyclip_tokens.default_proxy = DEFAULT_PROXY
proxyclip_tokens.proxy_settings_type = ProxyCLIPConfig  # --method-setting (alias --proxy-settings) K=V parse into it
proxyclip_tokens.on_proxy_grid = True  # its tokens lie on the VFM's grid, without prefix tokens
