"""Dense vision foundation models without text (DINO, DINOv2, SAM's image encoder, MAE): the proxies of
ProxyCLIP, behind one small interface, :class:`VisionBackbone`.

They are built with ``timm`` (already installed as a dependency of open_clip): one library carries all
four families with the same ViT modules, their pretrained tags on the Hugging Face hub with their own
mean/std, converters for the original checkpoints (``dino_vitbase8_pretrain.pth``, ``sam_vit_b_*.pth``,
``mae_pretrain_vit_base.pth``) and tiny random instances from keyword overrides. ``transformers`` has
DINO and DINOv2 but SAM only inside its full mask model and no MAE encoder without the decoder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..files import read_json
from .base import Preprocess

KINDS = ("dino", "dinov2", "dinov2-reg", "mae", "sam")
POS_MODES = ("offset", "size-antialias", "size")


@dataclass(frozen=True)
class VFMEntry:
    """One known VFM: the ``timm`` model (``architecture.tag``) and its ``kind``."""

    name: str
    timm_name: str
    kind: str


# Short names -> timm models. ProxyCLIP's own choices (proxyclip_segmentor.py): dino_vitb8 (and, commented
# out, vits8 / vitb16 / vits16), dinov2_vitb14_reg (and vits14_reg), SAM vit_b, MAE vit_base_patch16.
VFM_MODELS: dict[str, VFMEntry] = {e.name: e for e in (
    VFMEntry("dino-s8", "vit_small_patch8_224.dino", "dino"),
    VFMEntry("dino-b8", "vit_base_patch8_224.dino", "dino"),
    VFMEntry("dino-s16", "vit_small_patch16_224.dino", "dino"),
    VFMEntry("dino-b16", "vit_base_patch16_224.dino", "dino"),
    VFMEntry("dinov2-s14", "vit_small_patch14_dinov2.lvd142m", "dinov2"),
    VFMEntry("dinov2-b14", "vit_base_patch14_dinov2.lvd142m", "dinov2"),
    VFMEntry("dinov2-l14", "vit_large_patch14_dinov2.lvd142m", "dinov2"),
    VFMEntry("dinov2-s14-reg", "vit_small_patch14_reg4_dinov2.lvd142m", "dinov2-reg"),
    VFMEntry("dinov2-b14-reg", "vit_base_patch14_reg4_dinov2.lvd142m", "dinov2-reg"),
    VFMEntry("dinov2-l14-reg", "vit_large_patch14_reg4_dinov2.lvd142m", "dinov2-reg"),
    VFMEntry("sam-b16", "samvit_base_patch16.sa1b", "sam"),
    VFMEntry("mae-b16", "vit_base_patch16_224.mae", "mae"),
)}

# How each family resamples its learned position embeddings to another grid, as its original code does:
# DINO (facebookresearch/dino vision_transformer.py interpolate_pos_encoding) and DINOv2 without registers
# (dinov2 hub defaults interpolate_offset=0.1, interpolate_antialias=False): bicubic with
# scale_factor=(h + 0.1) / gh; DINOv2 with registers (hub: interpolate_offset=0, antialias=True): bicubic to
# the size, antialiased; MAE (mae util/pos_embed.py interpolate_pos_embed, applied once at load for
# img_size=slide_crop): bicubic to the size. SAM runs at its native 1024 and never resamples.
_POS_MODE = {"dino": "offset", "dinov2": "offset", "dinov2-reg": "size-antialias", "mae": "size", "sam": "size"}
MAE_INPUT_SIZE = 336  # ProxyCLIP builds MAE with img_size=slide_crop (336 in proxyclip_segmentor.py) and resizes to it


def kind_of(timm_name: str) -> str:
    """The VFM family of a timm model name (``vit_base_patch14_reg4_dinov2.lvd142m`` -> ``dinov2-reg``)."""
    n = timm_name.lower()
    if "samvit" in n:
        return "sam"
    if "dinov2" in n:
        return "dinov2-reg" if "reg" in n else "dinov2"
    if "mae" in n:
        return "mae"
    if "dino" in n:
        return "dino"
    raise ValueError(f"cannot tell which VFM family {timm_name!r} is; pass kind= one of {', '.join(KINDS)}")


def resample_grid_pos(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], mode: str) -> torch.Tensor:
    """Position embeddings of a patch grid ``pos`` [gh * gw, C] -> [h * w, C], resampled the way ``mode``
    names (see ``_POS_MODE``). An unchanged grid is returned as is, as every original code does."""
    if tuple(old) == tuple(new):
        return pos
    C = pos.shape[-1]
    g = pos.float().reshape(1, old[0], old[1], C).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    if mode == "offset":
        g = F.interpolate(g, scale_factor=((new[0] + 0.1) / old[0], (new[1] + 0.1) / old[1]), mode="bicubic",
                          align_corners=False)
    elif mode in ("size-antialias", "size"):
        g = F.interpolate(g, size=tuple(new), mode="bicubic", align_corners=False, antialias=mode == "size-antialias")
    else:
        raise ValueError(f"position mode must be one of {', '.join(POS_MODES)}, got {mode!r}")
    assert tuple(g.shape[-2:]) == tuple(new), "resampled grid has the wrong size"
    return g.permute(0, 2, 3, 1).reshape(-1, C).to(pos.dtype)


class VisionBackbone(nn.Module):
    """A dense vision model without text, seen through one small interface.

    Attributes:
        name: the name it was created from.
        kind: ``dino``, ``dinov2``, ``dinov2-reg``, ``mae`` or ``sam``.
        pretrained: where the weights came from (``None``: random).
        patch_size: ``(ph, pw)`` in pixels of its own input.
        num_prefix_tokens: class and register tokens before the patch tokens (0 for SAM).
        width: channels of :meth:`features`.
        preprocess: its pixel statistics (RGB in [0, 1], ``(x - mean) / std``) and native size.
        input_size: ``(H, W)`` every image is resized to first (SAM 1024, MAE 336), or ``None``: it runs at
            the resolution it is given.
        model: the underlying ``timm`` model (read through its public modules, never modified).
    """

    def __init__(self, model: nn.Module, *, name: str, kind: str, pretrained: str | None,
                 input_size: tuple[int, int] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.model = model.eval()
        self.name, self.kind, self.pretrained = name, kind, pretrained
        cfg = getattr(model, "pretrained_cfg", None) or {}
        ps = model.patch_embed.proj.kernel_size
        self.patch_size = (int(ps[0]), int(ps[1]))
        self.num_prefix_tokens = 0 if kind == "sam" else int(model.num_prefix_tokens)
        native = tuple(int(s) for s in model.patch_embed.img_size)
        if kind == "sam":
            input_size = input_size or native
        elif kind == "mae" and input_size is None:
            input_size = (MAE_INPUT_SIZE, MAE_INPUT_SIZE)
        self.input_size = tuple(int(s) for s in input_size) if input_size else None
        self.width = int(model.neck[-2].out_channels if kind == "sam" else model.embed_dim)
        self.preprocess = Preprocess(mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                                     std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                                     interpolation="bilinear", image_size=native)
        if kind != "sam" and getattr(model, "reg_token", None) is not None and not model.no_embed_class:
            raise ValueError(f"{name}: register tokens that take a position embedding are not supported")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The feature grid ``(h, w)`` for an input of ``size`` (H, W) pixels (before ``input_size``)."""
        H, W = self.input_size or size
        return H // self.patch_size[0], W // self.patch_size[1]

    def prepare(self, images: torch.Tensor, source: Preprocess) -> torch.Tensor:
        """Images normalized with ``source`` [B, 3, H, W] -> this model's input: un-normalized, normalized
        with its own mean/std, then resized bilinearly to ``input_size`` if it has one."""
        def stat(values):
            return torch.tensor(values, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)

        x = images * stat(source.std) + stat(source.mean)  # RGB in [0, 1]
        x = (x - stat(self.preprocess.mean)) / stat(self.preprocess.std)
        if self.input_size and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def tokens(self, x: torch.Tensor, *, layer: int = -1) -> torch.Tensor:
        """Own-normalized input ``x`` [B, 3, H, W] -> output of block ``layer`` after the final norm,
        [B, prefix + h * w, width] (ViTs; position embeddings resampled as the family's code does)."""
        blocks = list(self.model.blocks)
        last = layer % len(blocks)
        t = self._embed(x)
        for blk in blocks[: last + 1]:
            t = blk(t)
        return self.model.norm(t)

    def attention_qkv(self, x: torch.Tensor, *, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Own-normalized input ``x`` [B, 3, H, W] -> the query, key and value projections inside block
        ``layer``'s attention, each [B, heads, prefix + h * w, width // heads] (the output of the block's
        ``attn.qkv`` linear layer on ``norm1`` of its input, split per head: what CASS reads as DINO's keys
        and LPOSS as its values, both from the last block). ViTs only."""
        blocks = list(self.model.blocks)
        last = layer % len(blocks)
        t = self._embed(x)
        for blk in blocks[:last]:
            t = blk(t)
        blk = blocks[last]
        qkv = blk.attn.qkv(blk.norm1(t))  # (B, N, 3 C)
        B, N, C3 = qkv.shape
        heads = blk.attn.num_heads
        q, k, v = qkv.reshape(B, N, 3, heads, C3 // 3 // heads).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        return q, k, v

    def qk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Own-normalized input ``x`` [B, 3, H, W] -> ``q + k`` of the last block's attention (its qkv
        projection of the normed tokens entering it), patch tokens only, [B, width, h, w]: CorrCLIP's
        proxy features (zdk258/CorrCLIP@103bc18213e6:CorrCLIPv1/corrclip_segmentor.py:109-110)."""
        t = self._embed(x)
        blocks = list(self.model.blocks)
        for blk in blocks[:-1]:
            t = blk(t)
        last = blocks[-1]
        q, k, _ = last.attn.qkv(last.norm1(t)).chunk(3, dim=-1)  # timm's layout: [q | k | v], heads inside
        t = (q + k)[:, self.num_prefix_tokens:]  # (B, h*w, C)
        h, w = x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]
        return t.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Own-normalized input [B, 3, H, W] -> the tokens entering the first block [B, prefix + h * w, C]."""
        if self.kind == "sam":
            raise RuntimeError("SAM's image encoder has no tokens; use features()")
        m = self.model
        t = m.patch_embed.proj(x)  # (B, C, h, w)
        B, C, h, w = t.shape
        t = m.patch_embed.norm(t.flatten(2).transpose(1, 2))  # (B, h*w, C)
        lead = 0 if m.no_embed_class else 1
        pos = m.pos_embed[0]
        grid = tuple(int(s) for s in m.patch_embed.grid_size)
        patch_pos = resample_grid_pos(pos[lead:], grid, (h, w), _POS_MODE[self.kind]).to(t.dtype)
        t = t + patch_pos
        cls = m.cls_token.expand(B, -1, -1).to(t.dtype)
        prefix = [cls if m.no_embed_class else cls + pos[:1].to(t.dtype)]  # the class token's own position
        if getattr(m, "reg_token", None) is not None:
            prefix.append(m.reg_token.expand(B, -1, -1).to(t.dtype))
        return m.norm_pre(torch.cat(prefix + [t], dim=1))  # (B, prefix + h*w, C)

    def features(self, x: torch.Tensor, *, layer: int = -1) -> torch.Tensor:
        """Own-normalized input ``x`` [B, 3, H, W] (already at ``input_size``) -> dense features
        [B, width, h, w]: the normed patch tokens of block ``layer`` (ViTs), SAM's neck output."""
        if self.kind == "sam":
            if layer != -1:
                raise ValueError("SAM's features are its neck output; layer must be -1")
            return self.model.forward_features(x)  # (B, 256, H/16, W/16)
        t = self.tokens(x, layer=layer)[:, self.num_prefix_tokens:]  # (B, h*w, C)
        h, w = x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]
        return t.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def forward(self, images: torch.Tensor, source: Preprocess, *, layer: int = -1) -> torch.Tensor:
        """Images normalized with ``source`` [B, 3, H, W] -> features [B, width, h, w] (:meth:`grid`)."""
        return self.features(self.prepare(images, source), layer=layer)


def list_vfms() -> list[VFMEntry]:
    """The VFMs known by short name (any timm ViT of these families works by its timm name too)."""
    return list(VFM_MODELS.values())


def resolve_vfm(name: str) -> tuple[str, str]:
    """``name`` -> ``(timm name or "local-dir:" folder, kind)``."""
    if not isinstance(name, str) or not name:
        raise TypeError("a VFM name must be a non-empty string, e.g. 'dinov2-b14'")
    if name in VFM_MODELS:
        return VFM_MODELS[name].timm_name, VFM_MODELS[name].kind
    if os.path.isdir(name) or name.startswith("local-dir:"):
        folder = name.removeprefix("local-dir:")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ValueError(f"{folder} has no config.json; save the model with timm.models.save_for_hf()")
        cfg = read_json(os.path.join(folder, "config.json"), "model config")
        if not isinstance(cfg, dict):
            raise ValueError(f"{folder}/config.json is not a JSON object")
        tag = (cfg.get("pretrained_cfg") or {}).get("tag") or ""  # "dino", "mae", "sa1b": the family
        return "local-dir:" + folder, kind_of(f"{cfg.get('architecture', '')}.{tag}")
    timm_name = name.removeprefix("timm/").removeprefix("hf-hub:timm/")
    try:
        return timm_name, kind_of(timm_name)
    except ValueError:
        raise ValueError(f"unknown VFM {name!r}; choose from {', '.join(VFM_MODELS)}, a timm DINO/DINOv2/SAM/"
                         "MAE name or a folder saved with timm") from None


def create_vfm(name: str = "dino-b8", *, weights: str = "pretrained", device: str | torch.device = "cpu",
               cache_dir: str | None = None, input_size: int | tuple[int, int] | None = None,
               kind: str | None = None, **overrides) -> VisionBackbone:
    """Build a :class:`VisionBackbone`.

    Args:
        name: a short name from :data:`VFM_MODELS` (``"dinov2-b14"``), a timm name
            (``"vit_base_patch8_224.dino"``) or a folder saved with ``timm.models.save_for_hf``.
        weights: ``"pretrained"`` (timm's hub weights, from the cache or downloaded when online),
            ``"random"``, or a local checkpoint file (the original release or timm's, ``.pth``/``.bin``
            read with ``weights_only=True`` or ``.safetensors``; timm converts and loads it strictly).
        input_size: resize every input to this size first (default: SAM 1024, MAE 336, others none).
        kind: the family, when the name does not tell (see :data:`KINDS`).
        overrides: timm model keywords, e.g. ``embed_dim=32, depth=2`` for a tiny random test model.
    """
    try:
        import timm
    except ImportError as e:
        raise ImportError("vision foundation models need timm: `pip install timm`") from e
    timm_name, found_kind = resolve_vfm(name)
    kind = kind or found_kind
    if weights == "random":
        source, kwargs = None, dict(pretrained=False)
    elif weights == "pretrained":
        source, kwargs = timm_name, dict(pretrained=True)
    elif isinstance(weights, str) and os.path.isfile(weights):
        source, kwargs = weights, dict(pretrained=True, pretrained_cfg_overlay=dict(file=weights))
    else:
        raise ValueError(f"weights must be 'pretrained', 'random' or an existing checkpoint file, got {weights!r}")
    if timm_name.startswith("local-dir:") and weights == "random":
        kwargs = dict(pretrained=False)
    try:
        model = timm.create_model(timm_name, num_classes=0, cache_dir=cache_dir, **kwargs, **overrides)
    except (OSError, RuntimeError) as e:  # hub offline / not cached / unreadable file
        if source is None:
            raise
        from ..errors import WeightsUnavailableError
        from ..hub import offline_note
        from .weights import first_line

        raise WeightsUnavailableError(
            f"cannot load weights for VFM {name} ({timm_name}){offline_note()}: {first_line(e)}. To supply them, put "
            "timm's weights in the hub cache (HF_HOME), or pass weights=PATH (--proxy-weights PATH) with the "
            "original or timm checkpoint file, or a folder saved with timm.models.save_for_hf()") from e
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    vfm = VisionBackbone(model, name=name, kind=kind, pretrained=source, input_size=input_size)
    return vfm.to(device)
