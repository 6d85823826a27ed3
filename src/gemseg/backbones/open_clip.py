"""open_clip backend: any class-token ``VisionTransformer`` in open_clip 2.2x (sequence-first blocks) or
3.x (batch-first blocks).

The model's modules are read through public attributes; nothing is rebound or patched, and no block's
own ``forward`` is called, so the blocks' tensor layout does not matter.
"""
from __future__ import annotations

import inspect
import os

import torch
from torch import nn
import torch.nn.functional as F

from .base import Backbone, Preprocess, ViTBlock, lazy_import, square_grid
from .model_config import read_open_clip_config
from .weights import load_checkpoint_strict, root_log_as_warnings, weights_unavailable


def _open_clip():
    return lazy_import("open_clip", "openclip", "open_clip_torch")


class OpenCLIPBlock(ViTBlock):
    def __init__(self, block: nn.Module):
        attn = block.attn
        super().__init__(ln_1=block.ln_1, ln_2=block.ln_2, mlp=block.mlp, out_proj=attn.out_proj,
                         num_heads=attn.num_heads, ls_1=getattr(block, "ls_1", None),
                         ls_2=getattr(block, "ls_2", None))
        self.attn = attn

    def project_qkv(self, h):
        return F.linear(h, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)


def _standard_block(block: nn.Module) -> bool:
    attn = getattr(block, "attn", None)
    return isinstance(attn, nn.MultiheadAttention) and getattr(attn, "in_proj_weight", None) is not None \
        and hasattr(block, "ln_1") and hasattr(block, "mlp")


def _causal_text_blocks(model: nn.Module) -> list[OpenCLIPBlock] | None:
    """The text tower's blocks when it is a CLIP-style causal transformer pooled at the end-of-text
    token; then a text's embedding depends only on its tokens up to that one, and the padding after
    it can be dropped. ``None`` (run the model's own ``encode_text``) for any other text tower."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    mask = getattr(model, "attn_mask", None)
    pool = getattr(model, "text_pool_type", "argmax")
    if not all(hasattr(model, a) for a in needed) or not isinstance(mask, torch.Tensor) or mask.ndim != 2 \
            or pool not in ("argmax", "eos") or (pool == "eos" and getattr(model, "text_eos_id", None) is None):
        return None
    n = mask.shape[0]
    upper = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
    if not (bool(torch.isneginf(mask[upper]).all()) and bool((mask[~upper] == 0).all())):
        return None  # not exactly causal
    blocks = list(getattr(model.transformer, "resblocks", []))
    if not blocks or not all(_standard_block(b) for b in blocks):
        return None
    return [OpenCLIPBlock(b) for b in blocks]


def _check_supported(name: str, visual: nn.Module) -> None:
    required = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post")
    missing = [a for a in required if not hasattr(visual, a)]
    if missing:
        raise ValueError(
            f"{name}: image encoder {type(visual).__name__} is not a class-token ViT (no {', '.join(missing)}); "
            "GEM supports open_clip VisionTransformer models such as ViT-B-16")
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError(f"{name}: ViTs with an attentional pooler (e.g. CoCa) are not supported")
    if getattr(visual, "input_patchnorm", False):
        raise ValueError(f"{name}: ViTs with input patch norm are not supported")
    for i, block in enumerate(visual.transformer.resblocks):
        if not _standard_block(block):
            raise ValueError(
                f"{name}: block {i} ({type(block).__name__}) is not a standard pre-norm attention block "
                "(custom attention such as qk-norm or scaled-cosine attention is not supported)")


class OpenCLIPBackbone(Backbone):
    """An open_clip ``CLIP`` model seen through the :class:`Backbone` interface."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, pretrained: str | None = None):
        super().__init__()
        visual = getattr(model, "visual", None)
        if visual is None or not hasattr(model, "encode_text"):
            raise ValueError(f"{name}: expected an open_clip CLIP model, got {type(model).__name__}")
        _check_supported(name, visual)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name, self.pretrained = name, pretrained
        self.patch_size = tuple(visual.conv1.kernel_size)
        self.width = visual.conv1.out_channels
        proj = getattr(visual, "proj", None)
        self.embed_dim = proj.shape[1] if proj is not None else self.width
        self.context_length = int(getattr(tokenizer, "context_length", None) or model.context_length)
        self.blocks = [OpenCLIPBlock(b) for b in visual.transformer.resblocks]
        self.text_blocks = _causal_text_blocks(model)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        image_size = tuple(getattr(visual, "image_size", None) or (224, 224))
        defaults = Preprocess()
        self.preprocess = Preprocess(mean=tuple(cfg.get("mean") or defaults.mean),
                                     std=tuple(cfg.get("std") or defaults.std),
                                     interpolation=cfg.get("interpolation") if cfg.get("interpolation") in
                                     ("bicubic", "bilinear", "nearest", "lanczos") else "bicubic",
                                     image_size=image_size)

    # image side
    def _patch_embed(self, images):
        return self.model.visual.conv1(images)

    def _class_token(self):
        return self.model.visual.class_embedding

    def _pos_embed(self):
        pos = self.model.visual.positional_embedding  # (1 + gh*gw, C)
        grid = getattr(self.model.visual, "grid_size", None)
        grid = tuple(grid) if grid is not None and grid[0] * grid[1] == pos.shape[0] - 1 \
            else square_grid(pos.shape[0] - 1)
        return pos, grid

    def _pre_norm(self, x):
        return self.model.visual.ln_pre(x)

    def head(self, x):
        visual = self.model.visual
        x = visual.ln_post(x)
        return x @ visual.proj if visual.proj is not None else x

    # text side
    def _tokenize(self, texts):
        encode = getattr(self.tokenizer, "encode", None)
        lengths = [len(encode(t)) + 2 for t in texts] if callable(encode) else [0] * len(texts)
        return lengths, {"text": self.tokenizer(texts)}

    def _encode_tokens(self, inputs):
        text = inputs["text"].to(self.device)  # (P, context_length), padded
        if self.text_blocks is None:
            return self.model.encode_text(text)
        # a causal tower pooled at the end token: run only the tokens up to the last end token of the
        # batch (a short prompt is a few of the 77 positions), with the model's own modules
        m = self.model
        if getattr(m, "text_pool_type", "argmax") == "argmax":
            ends = text.argmax(dim=-1)  # the end token has the largest id
        else:
            ends = (text == m.text_eos_id).int().argmax(dim=-1)
        n = int(ends.max()) + 1
        x = m.token_embedding(text[:, :n]).to(m.positional_embedding.dtype) + m.positional_embedding[:n]
        for blk in self.text_blocks:
            x = blk.plain(x, causal=True)  # (P, n, width)
        x = m.ln_final(x)[torch.arange(len(text), device=text.device), ends]  # (P, width)
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Module) else x @ proj


def create_open_clip(name: str, *, pretrained: str | None, checkpoint: str | None, device,
                     cache_dir: str | None = None) -> OpenCLIPBackbone:
    """Build an open_clip backbone.

    ``name`` is an open_clip model name (``ViT-B-16``, ``ViT-B/16`` or ``hf-hub:org/repo``) or the path of
    an open_clip model config JSON (``{"embed_dim", "vision_cfg", "text_cfg"}``). Weights come from the
    pretrained tag ``pretrained``, or from a local ``checkpoint`` (``.pt``/``.bin``, loaded with
    ``weights_only=True``, or ``.safetensors``); with neither, the weights are random.
    """
    open_clip = _open_clip()
    if pretrained and os.path.isfile(pretrained):  # open_clip also takes a file path as `pretrained`
        checkpoint, pretrained = pretrained, None
    if name.endswith(".json"):
        cfg = read_open_clip_config(name, open_clip)  # keys, types and memory checked before building
        if pretrained:
            raise ValueError(f"{name}: a model built from a config file takes --checkpoint PATH, "
                             f"not the pretrained tag {pretrained!r}")
        try:
            model = open_clip.CLIP(**cfg)
        except (TypeError, ValueError, AssertionError, KeyError, RuntimeError) as e:  # a config is user data
            raise ValueError(f"{name}: open_clip cannot build this config ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else '-'})") from e
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg.get("text_cfg", {}).get("context_length", 77))
        display = os.path.splitext(os.path.basename(name))[0]
    else:
        # "ViT-B/16" is open_clip's "ViT-B-16"; a hub repo keeps its slash ("hf-hub:org/repo")
        display = name if name.startswith("hf-hub:") else name.replace("/", "-")
        known = open_clip.list_models()
        if not display.startswith("hf-hub:") and display not in known:
            import difflib

            close = difflib.get_close_matches(display, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `gemseg models` lists them"
            raise ValueError(f"unknown open_clip model {name!r}{hint}")
        if pretrained:
            tags = [t for m, t in open_clip.list_pretrained() if m == display]
            if not display.startswith("hf-hub:") and pretrained not in tags:
                raise ValueError(f"{display} has no pretrained tag {pretrained!r}; "
                                 f"available: {', '.join(tags) or 'none'}")
        if pretrained:
            _check_cached_when_offline(open_clip, display, pretrained, cache_dir)
        try:  # random weights are said once, by gemseg.create_model: open_clip's own log line is dropped
            with root_log_as_warnings(drop=("initialized randomly", "No pretrained weights loaded")):
                model = open_clip.create_model(display, pretrained=pretrained or None, device="cpu",
                                               cache_dir=cache_dir)
        except (RuntimeError, OSError, ValueError) as e:  # hub errors are OSError/RuntimeError subclasses
            raise weights_unavailable(f"{display} ({pretrained})", "openclip", e) from e
        tokenizer = _tokenizer(open_clip, display, cache_dir)
    if checkpoint:
        load_checkpoint_strict(model, checkpoint, display)
        pretrained = os.path.abspath(checkpoint)  # reports name the file wherever they are read
    elif display.startswith("hf-hub:"):
        pretrained = display  # the hub repo holds the weights; open_clip loads them without a tag
    return OpenCLIPBackbone(model.to(device), tokenizer, name=display, pretrained=pretrained)


def _tokenizer(open_clip, name: str, cache_dir: str | None):
    """open_clip's tokenizer for ``name``; a hub repo's tokenizer settings are read from ``cache_dir`` where
    the installed open_clip takes one (3.x does, 2.23 does not)."""
    if cache_dir and "cache_dir" in inspect.signature(open_clip.get_tokenizer).parameters:
        return open_clip.get_tokenizer(name, cache_dir=cache_dir)
    return open_clip.get_tokenizer(name)


def _check_cached_when_offline(open_clip, name: str, tag: str, cache_dir: str | None) -> None:
    """Offline, weights that are not in the cache are reported before the model is built (seconds on a
    small machine) instead of after."""
    from ..hub import cached_open_clip_weights, offline_mode

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if offline_mode() and (cfg.get("hf_hub") or cfg.get("url")) and cached_open_clip_weights(cfg, cache_dir) is None:
        where = (cfg.get("hf_hub") or cfg.get("url") or "").rstrip("/")
        missing = FileNotFoundError(f"{where} is not in the local cache")
        raise weights_unavailable(f"{name} ({tag})", "openclip", missing) from missing


def _is_class_token_vit(cfg: dict) -> bool:
    vision = cfg.get("vision_cfg", {})
    custom = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn", "scale_fc", "scale_attn_inner")
    return (isinstance(vision.get("layers"), int) and "timm_model_name" not in vision
            and not vision.get("attentional_pool") and not vision.get("input_patchnorm")
            and not any(vision.get(k) for k in custom))


def list_open_clip_models() -> list[tuple[str, str]]:
    """``(name, pretrained tag)`` of every open_clip class-token ViT; empty without ``open_clip_torch``."""
    try:
        import open_clip
    except ImportError:
        return []
    vits = {m for m in open_clip.list_models() if _is_class_token_vit(open_clip.get_model_config(m) or {})}
    return [(m, t) for m, t in open_clip.list_pretrained() if m in vits]
