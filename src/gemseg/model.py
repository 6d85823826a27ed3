"""``GEMModel``: a backbone plus GEM settings, with text encoding and dense image-text heatmaps."""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .backbones.base import Backbone, check_pos_embed_mode
from .config import GEMConfig
from .maps import min_max, pad_to_multiple, upsample_to  # noqa: F401  (min_max: gemseg.min_max, eval, compat)
from .methods import get_method
from .postprocess import DEFAULT_REDUCTION
from .refiners import RefineSpec, get_refiner
from .segment import DEFAULT_LOGIT_SCALE, Segmentation, clean_prompts
from .segmenter import Segmenter
from .templates import check_template, fill

DEFAULT_TEMPLATES = ("a photo of a {}.",)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Prompts = Union[Sequence[str], Sequence[Sequence[str]], torch.Tensor]
Images = Union[torch.Tensor, Image.Image, np.ndarray, Sequence[Image.Image], Sequence[np.ndarray]]
Size = Union[int, Sequence[int], None]


class GEMModel(nn.Module):
    """Open-vocabulary localization with the Grounding Everything Module.

    Build one with :func:`gemseg.create_model`. Images are ``[B, 3, H, W]`` float tensors, RGB,
    normalized with ``self.backbone.preprocess`` (see :func:`gemseg.preprocess`); :meth:`heatmaps` and
    :meth:`segment` also take PIL images, which they preprocess at ``size``.
    """

    def __init__(self, backbone: Backbone, *, config: GEMConfig | None = None, precision: str = "fp32",
                 method: str = "gem", pos_embed: str = "bicubic-aa", proxy: nn.Module | None = None,
                 method_settings=None, masks=None):
        super().__init__()
        # a gemseg.masks source (image -> MaskSet) for the methods and refiners that need masks, or None
        self.mask_source = masks
        self.pos_embed = check_pos_embed_mode(pos_embed)  # position-embedding resampling, see POS_EMBED_MODES
        if pos_embed != "bicubic-aa" and type(backbone).embed is not Backbone.embed:
            warnings.warn(f"{type(backbone).__name__} resamples its position embeddings its own way; "
                          f"pos_embed={pos_embed!r} is ignored", stacklevel=2)
        self._tokens = get_method(method)
        self.method = method
        if ("proxy" in self._tokens.needs) != (proxy is not None):  # ProxyCLIP: the VFM and settings
            raise ValueError(f"method {method!r} " + ("needs a proxy VFM: create_model(..., proxy='dino-b8')"
                             if proxy is None else
                             "takes no proxy; use method='proxyclip' or 'cass', or drop proxy"))
        if proxy is not None and not isinstance(proxy, getattr(self._tokens, "proxy_type", nn.Module)):
            raise TypeError(f"method {method!r} takes a {self._tokens.proxy_type.__name__} as proxy, "
                            f"got {type(proxy).__name__}")
        self.proxy = proxy.eval() if proxy is not None else None
        self.method_settings = _method_settings(self._tokens, method, method_settings)  # None: the method has none
        if self.method_settings is not None and hasattr(self.method_settings, "check"):
            self.method_settings.check(len(backbone.blocks))  # layer indices must fit: refused here, not per image
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.backbone = backbone.eval()
        self.config = config or GEMConfig()
        self.precision = precision
        if "depth" in (self._tokens.uses or ()):  # the depth must fit the backbone: refused here, not at run time
            from .gem import check_depth

            check_depth(backbone, self.config)

    # --- properties ---------------------------------------------------------------------------
    @property
    def patch_size(self) -> tuple[int, int]:
        return self.backbone.patch_size

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def _pad_multiple(self) -> tuple[int, int]:
        return self.patch_size if self.proxy is None else self.proxy.pad_multiple(self.patch_size)

    def variant(self, *, method: str | None = None, pos_embed: str | None = None, proxy=None,
                precision: str | None = None, method_settings=None, **gem_settings) -> "GEMModel":
        """A model sharing these weights with some settings changed: another ``method``, position-embedding
        mode (``"bicubic-aa"``, ``"bicubic-scale"``, ``"bicubic"`` or ``"bilinear"``, see
        :func:`~gemseg.backbones.base.resample_pos_embed`), ``precision`` or GEM settings
        (:class:`~gemseg.GEMConfig` fields, e.g. ``depth=4``). A method that needs a proxy keeps this
        model's unless ``proxy`` (a :class:`~gemseg.methods.ProxyAttention`) is given; one that needs
        none drops it. ``method_settings`` (a method's own settings, e.g. a
        :class:`~gemseg.methods.ResCLIPConfig` or a dict of its fields): by default this model's when the
        method has the same kind of settings (``naclip+resclip`` -> ``sclip+resclip``), else the method's
        official ones. Unchanged arguments keep this model's values.

        Raises:
            ValueError: an unknown method or setting, a depth the backbone has no blocks for, or a
                method that needs a proxy this model does not have.
        """
        method = self.method if method is None else method
        needs_proxy = "proxy" in get_method(method).needs
        if proxy is not None and not needs_proxy:
            raise ValueError(f"method {method!r} takes no proxy; drop proxy= or pick a method that uses one")
        proxy = (proxy if proxy is not None else self.proxy) if needs_proxy else None
        kind = getattr(get_method(method), "proxy_type", None)  # ProxyAttention, CASSProxy, CorrCLIPProxy: the VFM's holder
        if proxy is not None and kind is not None and not isinstance(proxy, kind):
            proxy = kind(proxy.vfm)  # another method's holder of the same VFM, with this method's default settings
        if needs_proxy and proxy is None:
            raise ValueError(f"method {method!r} needs a proxy vision model: create_model(..., method={method!r}, "
                             "proxy='dino-b8'), or pass proxy=")
        unknown = sorted(set(gem_settings) - {f.name for f in dataclasses.fields(GEMConfig)})
        if unknown:
            raise ValueError(f"unknown GEM setting(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(f.name for f in dataclasses.fields(GEMConfig))}")
        if method_settings is None and type(self.method_settings) is getattr(get_method(method), "settings_type", None):
            method_settings = self.method_settings  # the same kind: kept (None for methods without settings)
        return GEMModel(self.backbone, config=dataclasses.replace(self.config, **gem_settings),
                        precision=self.precision if precision is None else precision, method=method,
                        pos_embed=self.pos_embed if pos_embed is None else pos_embed, proxy=proxy,
                        method_settings=method_settings, masks=self.mask_source)

    def with_config(self, **changes) -> "GEMModel":
        """``variant(**changes)``: a model sharing these weights with some GEM settings changed."""
        return self.variant(**changes)

    def with_pos_embed(self, pos_embed: str) -> "GEMModel":
        """``variant(pos_embed=pos_embed)``."""
        return self.variant(pos_embed=pos_embed)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def preprocess(self, images, *, size=448) -> torch.Tensor:
        """PIL image(s) / uint8 arrays -> normalized [3, H, W] (or [B, 3, H, W] for a list) with this
        checkpoint's mean, std and interpolation; see :func:`gemseg.preprocess` for ``size``."""
        from .transforms import preprocess

        p = self.backbone.preprocess
        return preprocess(images, size=size, mean=p.mean, std=p.std, interpolation=p.interpolation)

    # --- text ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str], *, templates: Sequence[str] | None = None) -> torch.Tensor:
        """Embed ``prompts`` (P strings) -> [P, D], L2-normalized.

        Each prompt is put into every template (``"{}"`` or ``"{label}"`` marks where it goes; default
        ``"a photo of a {}."``); the normalized embeddings are averaged over templates and normalized
        again. Compute this once for a vocabulary and pass the tensor to :meth:`heatmaps`.
        """
        prompts = clean_prompts(prompts, "prompt", unique=False)  # one row per prompt, duplicates kept
        templates = list(templates) if templates is not None else list(DEFAULT_TEMPLATES)
        if not templates:
            raise ValueError("templates is empty; pass None for the default 'a photo of a {}.'")
        for t in templates:
            check_template(t)  # exactly one '{}' or '{label}'
        texts = [fill(t, p) for p in prompts for t in templates]
        with self._autocast():
            emb = self.backbone.encode_text(texts).float()  # (P*T, D)
        emb = F.normalize(emb, dim=-1).reshape(len(prompts), len(templates), -1)
        return F.normalize(emb.mean(dim=1), dim=-1)  # (P, D)

    # --- image --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: torch.Tensor, *, return_ori: bool = False,
                     text: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Dense patch embeddings in the joint space, L2-normalized.

        Args:
            images: [B, 3, H, W]. Sizes that are not multiples of the patch size are zero-padded
                (right and bottom, i.e. the mean colour) up to the next multiple.
            return_ori: the original (unmodified) path's tokens instead of GEM's.
            text: the queries' embeddings [P, D] or [B, P, D], for methods that need them
                (``needs`` has ``"text"``: ResCLIP's semantic feedback); :meth:`heatmaps` passes them.
            masks: methods that need masks (``corrclip``): mask label maps [B, H, W] (integers, 0: in no
                mask; :mod:`gemseg.masks`); ``None``: made from ``images`` by :attr:`mask_source`.
        Returns:
            [B, D, ceil(H / ph), ceil(W / pw)]; ``proxyclip``: [B, D, h, w] on its VFM's grid
            (``self.proxy.grid``), unless ``return_ori``.
        """
        return self._encode(images, return_ori=return_ori, text=text, masks=masks)[0]

    def _encode(self, images: torch.Tensor, *, return_ori: bool, text: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode_image`, and the L2-normalized prefix tokens [B, p, D] (class token) beside it."""
        images = self._check_images(images)
        padded = pad_to_multiple(images, self._pad_multiple)
        extra = self._method_inputs(text)
        if "masks" in self._tokens.needs:
            extra["masks"] = self.masks_for(images, masks)
        with self._autocast(), self.backbone.resampling(self.pos_embed):
            gem, ori = self._tokens(self.backbone, padded, self.config, return_ori=return_ori, **extra)
        B, _, Hp, Wp = padded.shape
        gh, gw = Hp // self.patch_size[0], Wp // self.patch_size[1]
        prefix = self.backbone.num_prefix_tokens
        if self._on_proxy_grid and not return_ori:  # ProxyCLIP's and CorrCLIP's tokens lie on the VFM's grid
            prefix, (gh, gw) = 0, self.proxy.grid((Hp, Wp))
        tokens = F.normalize((ori if return_ori else gem).float(), dim=-1)
        feats = tokens[:, prefix:].transpose(1, 2).reshape(B, -1, gh, gw)  # (B, D, h, w)
        return feats, tokens[:, :prefix]

    @property
    def _on_proxy_grid(self) -> bool:
        return self.proxy is not None and getattr(self._tokens, "on_proxy_grid", False)

    def _method_inputs(self, text: torch.Tensor | None) -> dict:
        """The keyword inputs the method takes besides the images: its proxy, settings, text, refiner."""
        extra = {} if self.proxy is None else {"proxy": self.proxy}
        if self.method_settings is not None:
            extra["settings"] = self.method_settings
        if "text" in self._tokens.needs:
            extra["text"] = text
        if "refine" in self._tokens.needs:
            extra["refine"] = get_refiner("pamr")  # (scores, *, image, model, steps, dilations) -> scores
        return extra

    def forward(self, images: torch.Tensor, *, return_ori: bool = False) -> torch.Tensor:
        """Same as :meth:`encode_image`."""
        return self.encode_image(images, return_ori=return_ori)

    @property
    def needs_masks(self) -> bool:
        """Whether this model's method takes class-agnostic masks (``corrclip``; :attr:`mask_source`)."""
        return "masks" in self._tokens.needs

    def masks_for(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Mask label maps [B, H, W] long for normalized ``images`` [B, 3, H, W]: ``masks`` checked, or made
        by :attr:`mask_source` from the images themselves (denormalized to uint8 RGB)."""
        B, _, H, W = images.shape
        if masks is None:
            if self.mask_source is None:
                raise ValueError(f"method {self.method!r} needs masks: create_model(..., masks='sam2-hiera-l') "
                                 "(--masks), or pass masks= label maps [B, H, W]")
            from .masks import label_maps
            from .transforms import denormalize

            p = self.backbone.preprocess
            pixels = denormalize(images, mean=p.mean, std=p.std)  # (B, H, W, 3) uint8
            masks = label_maps(self.mask_source, list(pixels))
        if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or masks.is_floating_point() \
                or tuple(masks.shape) != (B, H, W):
            got = f"{masks.dtype} {list(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise ValueError(f"masks must be integer label maps [{B}, {H}, {W}] (one per image, at the input "
                             f"size; gemseg.masks.resize_label_map), got {got}")
        return masks.to(images.device)

    @torch.no_grad()
    def heatmaps(self, images: Images, prompts: Prompts, *, templates: Sequence[str] | None = None,
                 normalize: bool = False, return_ori: bool = False, size: Size = 448,
                 masks: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity between every pixel and every prompt.

        Args:
            images: [B, 3, H, W] normalized tensor, or PIL image(s) / uint8 arrays [H, W, 3], which are
                resized to ``size`` and normalized with :meth:`preprocess` (a tensor is used as it is).
            prompts: one list of P strings for all images, or B lists (one per image, each of P
                strings), or precomputed text embeddings from :meth:`encode_text`: [P, D] for all
                images or [B, P, D] per image.
            templates: prompt templates used when ``prompts`` are strings.
            normalize: min-max normalize each map to [0, 1] (a constant map becomes 0).
            return_ori: use the original path instead of GEM's.
            size: input size of PIL/array images: ``448``, ``(H, W)`` or ``None`` (their own size).
            masks: mask label maps [B, H, W] for methods that need masks (see :meth:`encode_image`).
        Returns:
            [B, P, H, W] cosine similarities in [-1, 1] (or [0, 1] with ``normalize``), patch
            similarities upsampled bilinearly to the input size.
        """
        images = self._as_batch(images, size)
        B, _, H, W = images.shape if isinstance(images, torch.Tensor) and images.ndim == 4 else (None,) * 4
        text = self._text_for_batch(prompts, B, templates)  # (P, D) or (B, P, D)
        feats, prefix = self._encode(images, return_ori=return_ori, text=text, masks=masks)  # (B, D, gh, gw), (B, p, D)
        text = text.to(feats.device)
        scores = getattr(self._tokens, "scores", None)  # CASS: its object-presence prior
        if scores is not None and not return_ori:
            sims = scores(feats, prefix, text.float(), self.proxy)
        elif text.ndim == 2:
            sims = torch.einsum("bdhw,pd->bphw", feats, text)
        else:
            sims = torch.einsum("bdhw,bpd->bphw", feats, text)
        full = None  # ProxyCLIP: the VFM grid covers the padded input
        if self._on_proxy_grid and not return_ori:
            full = tuple(-(-s // m) * m for s, m in zip((H, W), self._pad_multiple))
        sims = upsample_to(sims, (H, W), self.patch_size, full=full)
        return min_max(sims) if normalize else sims

    @torch.no_grad()
    def segment(self, images: Images, classes: Sequence[str], *, background: str | Sequence[str] | None = "auto",
                threshold: float | None = None, logit_scale: float = DEFAULT_LOGIT_SCALE, size: Size = 448,
                out_size: Sequence[int] | None = None, templates: Sequence[str] | None = None,
                reduction: str = DEFAULT_REDUCTION, refine: RefineSpec = None) -> Segmentation:
        """Label every pixel with one of ``classes`` or background (label 0): the one-call form of
        ``gemseg.Segmenter.from_classes(self, classes, ...).predict(images, out_size=out_size)``; build the
        :class:`~gemseg.Segmenter` yourself to encode the vocabulary once for many calls.

        Args:
            images: as in :meth:`heatmaps` (PIL images are resized to ``size``).
            classes: C class names; label ``k`` is ``classes[k - 1]``.
            background: ``"auto"`` (generic scene prompts, :data:`gemseg.segment.AUTO_BACKGROUND`, minus
                the classes), ``"none"``, or your own background prompts (a list or ``"a,b,c"``).
            threshold: pixels whose top class probability is below it become background (``None``: 0.5
                with background prompts, off with ``"none"``; ``0``: off).
            logit_scale: probabilities are ``softmax(logit_scale * cosine)``.
            out_size: ``(H, W)`` of the outputs; the query maps are resized bilinearly before the
                reduction (default: the model input size).
            templates: prompt templates (default ``"a photo of a {}."``).
            reduction: ``"softmax_then_max"`` (default: softmax over all queries, then max per class, as
                SCLIP/ClearCLIP/NACLIP) or ``"max_then_softmax"``.
            refine: refiners run on the scores at the output size, e.g. ``"pamr"`` (:mod:`gemseg.refiners`).
        Returns:
            A :class:`gemseg.Segmentation`: ``labels`` [B, H, W], ``probabilities`` and ``scores``
            [B, 1 + C, H, W], ``confidence`` [B, H, W], ``areas`` [B, 1 + C].
        """
        seg = Segmenter.from_classes(self, classes, background=background, threshold=threshold,
                                     logit_scale=logit_scale, reduction=reduction, templates=templates, size=size,
                                     refine=refine)
        return seg.predict(images, out_size=out_size)

    # --- checks -------------------------------------------------------------------------------
    def _as_batch(self, images: Images, size: Size) -> torch.Tensor:
        """A tensor as it is; PIL image(s) / uint8 arrays preprocessed at ``size`` -> [B, 3, H, W]."""
        if isinstance(images, torch.Tensor):
            return images
        if isinstance(images, (list, tuple)) and images and all(isinstance(i, torch.Tensor) for i in images):
            raise TypeError("images must be one [B, 3, H, W] tensor, not a list of tensors; torch.stack them")
        x = self.preprocess(images, size=size)
        return x[None] if x.ndim == 3 else x  # (B, 3, H, W)

    def _check_images(self, images) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}; "
                            "use gemseg.preprocess() to convert PIL images")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}"
                             + ("; add a batch dimension with images[None]" if images.ndim == 3 else ""))
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch")
        ph, pw = self.patch_size
        if images.shape[2] < ph or images.shape[3] < pw:
            raise ValueError(f"images of {images.shape[2]}x{images.shape[3]} are smaller than one "
                             f"{ph}x{pw} patch; resize them")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor, got {images.dtype}")
        return images.to(self.device)

    def _text_for_batch(self, prompts: Prompts, batch: int | None, templates) -> torch.Tensor:
        if isinstance(prompts, torch.Tensor):
            if prompts.ndim not in (2, 3) or prompts.shape[-1] != self.backbone.embed_dim:
                raise ValueError(f"text embeddings must be [P, {self.backbone.embed_dim}] or "
                                 f"[B, P, {self.backbone.embed_dim}], got {list(prompts.shape)}")
            if prompts.ndim == 3 and batch is not None and prompts.shape[0] != batch:
                raise ValueError(f"got text embeddings for {prompts.shape[0]} images but {batch} images")
            return F.normalize(prompts.float(), dim=-1)
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a single string; wrap it: [prompt]")
        prompts = list(prompts)
        if prompts and all(not isinstance(p, str) for p in prompts):  # one list per image
            if batch is not None and len(prompts) != batch:
                raise ValueError(f"got {len(prompts)} prompt lists for {batch} images; pass one list per image")
            lengths = {len(p) for p in prompts}
            if len(lengths) > 1:
                raise ValueError(f"per-image prompt lists must have equal lengths, got {sorted(lengths)}; "
                                 "call heatmaps() per image or use gemseg.compat batched_forward")
            flat = [p for sub in prompts for p in sub]
            unique = list(dict.fromkeys(flat))  # each distinct prompt is encoded once
            emb = self.encode_text(unique, templates=templates)  # (U, D)
            position = {p: i for i, p in enumerate(unique)}
            index = torch.tensor([position[p] for p in flat], device=emb.device)
            return emb[index].reshape(len(prompts), -1, self.backbone.embed_dim)  # (B, P, D)
        return self.encode_text(prompts, templates=templates)


def _method_settings(method, name: str, settings):
    """The method's settings dataclass from ``settings`` (None: its defaults; a dict: fields to change)."""
    kind = getattr(method, "settings_type", None)
    if kind is None:
        if settings is not None:
            raise ValueError(f"method {name!r} has no settings of its own; drop method_settings")
        return None
    if settings is None:
        return kind()
    if isinstance(settings, dict):
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f"method {name!r} has no setting(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(sorted(names))}")
        return kind(**settings)
    if not isinstance(settings, kind):
        raise TypeError(f"method {name!r} takes a {kind.__name__} (or a dict of its fields) as method_settings, "
                        f"got {type(settings).__name__}")
    return settings
