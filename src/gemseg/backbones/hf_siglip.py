"""Hugging Face transformers SigLIP backend (``hf-siglip``): ``SiglipModel`` (SigLIP, and the fixed-resolution
SigLIP 2 checkpoints, which use the same architecture) and ``Siglip2Model`` (SigLIP 2 NaFlex).

SigLIP's ViT has no class token (``num_prefix_tokens = 0``): every token is a patch. The image embedding
is an attention-pooling head over the final-normed tokens ``u_i = post_layernorm(x_i)``: a learned probe
attends to them with per-head weights ``α_i^h`` (summing to 1 over ``i``), ``a = O_p(concat_h Σ_i α_i^h
V_p^h(u_i))``, then ``e = a + MLP_p(LN_p(a))``. ``a`` is thus built from the per-token values, and when
every head attends to token ``i`` alone it is ``O_p(V_p(u_i))``. The dense embedding of token ``i`` is the
head's output in that case (MaskCLIP's treatment of attention pooling, applied to SigLIP's head):

    e_i = r_i + MLP_p(LN_p(r_i)),   r_i = O_p(V_p(post_layernorm(x_i)))

A one-token image therefore gets exactly the model's own image embedding. The joint space is the vision
width (SigLIP's text head projects to it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Preprocess, square_grid
from .hf_common import (HFBackbone, HFQKVBlock, check_embeddings, check_qkv_layers, import_transformers,
                        load_hf_config, resize_pos_grid)
from .weights import UNREADABLE_WEIGHTS, unreadable_weights, weights_unavailable

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def _check_supported(name: str, model: nn.Module) -> None:
    vision, text = getattr(model, "vision_model", None), getattr(model, "text_model", None)
    if vision is None or text is None or not hasattr(text, "head"):
        raise ValueError(f"{name}: expected a transformers SiglipModel or Siglip2Model, got {type(model).__name__}")
    pool = getattr(vision, "head", None)
    attn = getattr(pool, "attention", None)
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None \
            or not all(hasattr(pool, a) for a in ("layernorm", "mlp")):
        raise ValueError(f"{name}: the vision tower has no attention-pooling head (vision_use_head=False); "
                         "its tokens have no projection into the text space")
    check_embeddings(name, vision.embeddings, ("patch_embedding", "position_embedding"), "SigLIP ViT")
    check_qkv_layers(name, vision.encoder.layers)


class HFSiglipBackbone(HFBackbone):
    """A transformers ``SiglipModel``/``Siglip2Model`` seen through the :class:`Backbone` interface.

    ``Siglip2Model`` takes patchified pixels and resizes its position embeddings per image; here images
    are ``[B, 3, H, W]`` like every backbone, patchified in the processor's order (row, column, then
    ``(ph, pw, channel)`` within a patch) and with the position grid resized the model's way (bilinear,
    antialiased).
    """

    num_prefix_tokens = 0

    def __init__(self, model: nn.Module, tokenizer, *, name: str, pretrained: str | None = None,
                 preprocess: Preprocess | None = None):
        _check_supported(name, model)
        super().__init__(model, tokenizer, name=name, pretrained=pretrained)
        vision = model.vision_model
        self._naflex = isinstance(vision.embeddings.patch_embedding, nn.Linear)  # SigLIP 2 NaFlex
        self.embed_dim = model.text_model.head.out_features
        if self.embed_dim != self.width:
            raise ValueError(f"{name}: the text head projects to {self.embed_dim} features but the image "
                             f"tokens have {self.width}")
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.blocks = [HFQKVBlock(layer) for layer in vision.encoder.layers]
        if self._naflex:
            side = square_grid(vision.embeddings.position_embedding.weight.shape[0])[0] * self.patch_size[0]
            size = (side, side)
        else:
            size = self.native_size
        self.preprocess = preprocess or Preprocess(mean=SIGLIP_MEAN, std=SIGLIP_STD,
                                                   interpolation="bilinear" if self._naflex else "bicubic",
                                                   image_size=size)

    # image side
    def _patch_embed(self, images):
        emb = self.model.vision_model.embeddings.patch_embedding
        images = images.to(emb.weight.dtype)
        if not self._naflex:
            return emb(images)  # (B, C, h, w)
        B, c, H, W = images.shape
        ph, pw = self.patch_size
        h, w = H // ph, W // pw
        patches = images[..., : h * ph, : w * pw].reshape(B, c, h, ph, w, pw)
        patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(B, h * w, ph * pw * c)  # the processor's order
        return emb(patches).transpose(1, 2).reshape(B, -1, h, w)  # (B, C, h, w)

    def _pos_embed(self):
        pos = self.model.vision_model.embeddings.position_embedding.weight  # (gh*gw, C), no prefix
        return pos, square_grid(pos.shape[0])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [B, 3, H, W] (normalized) -> patch tokens [B, h * w, C] entering block 0; the position
        grid is resized the model's own way (SigLIP: bicubic; SigLIP 2: bilinear, antialiased)."""
        x = self._patch_embed(images)  # (B, C, h, w)
        B, C, h, w = x.shape
        pos, grid = self._pos_embed()
        pos = resize_pos_grid(pos, grid, (h, w), mode="bilinear" if self._naflex else "bicubic",
                              antialias=self._naflex)
        return x.flatten(2).transpose(1, 2) + pos.to(x.dtype)  # (B, h*w, C)

    def head(self, x):
        """Final norm, then the pooling head with each token attended alone: [B, N, C] -> [B, N, C]."""
        pool = self.model.vision_model.head
        u = self.model.vision_model.post_layernorm(x)
        attn = pool.attention
        C = u.shape[-1]
        bias = attn.in_proj_bias[2 * C:] if attn.in_proj_bias is not None else None
        r = attn.out_proj(F.linear(u, attn.in_proj_weight[2 * C:], bias))  # O_p(V_p(u)), (B, N, C)
        return r + pool.mlp(pool.layernorm(r))

    # text side
    def _tokenize(self, texts):
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        inputs = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                                return_tensors="pt")
        return lengths, {"input_ids": inputs["input_ids"]}

    def _encode_tokens(self, inputs):
        # SigLIP was trained on texts padded to the full context without an attention mask
        return self.model.text_model(input_ids=inputs["input_ids"].to(self.device)).pooler_output


def _read_preprocess(name: str, defaults: Preprocess, cache_dir: str | None) -> Preprocess:
    """The checkpoint's mean, std and resampling from its image processor config, else ``defaults``."""
    try:
        cfg = import_transformers().AutoImageProcessor.from_pretrained(name, cache_dir=cache_dir).to_dict()
    except Exception:  # no processor config (or no vision extras installed): keep SigLIP's defaults
        return defaults
    resample = _PIL_RESAMPLE.get(cfg.get("resample"), defaults.interpolation)
    return Preprocess(mean=tuple(cfg.get("image_mean") or defaults.mean),
                      std=tuple(cfg.get("image_std") or defaults.std),
                      interpolation=resample, image_size=defaults.image_size)


def create_hf_siglip(name: str, *, device, cache_dir: str | None = None) -> HFSiglipBackbone:
    """Load a ``SiglipModel`` or ``Siglip2Model`` checkpoint and its tokenizer from a hub id or a folder."""
    transformers = import_transformers()
    config = load_hf_config(name, cache_dir)
    kind = getattr(config, "model_type", None)
    classes = {"siglip": "SiglipModel", "siglip2": "Siglip2Model"}
    if kind not in classes:
        raise ValueError(f"{name} is not a SigLIP checkpoint (model_type {kind!r}); the hf-siglip backend loads "
                         "SiglipModel and Siglip2Model")
    if not hasattr(transformers, classes[kind]):
        raise ImportError(f"{name} needs transformers.{classes[kind]}: pip install -U transformers")
    try:
        model = getattr(transformers, classes[kind]).from_pretrained(name, cache_dir=cache_dir)
    except UNREADABLE_WEIGHTS as e:
        raise unreadable_weights(name, e) from e
    except (OSError, ValueError) as e:
        raise weights_unavailable(name, "hf", e) from e
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, cache_dir=cache_dir)
    except ImportError as e:  # SigLIP's sentencepiece tokenizer
        raise ImportError(f"the {name} tokenizer needs sentencepiece: pip install sentencepiece protobuf") from e
    except (OSError, ValueError) as e:
        raise weights_unavailable(name, "hf", e) from e
    backbone = HFSiglipBackbone(model, tokenizer, name=name, pretrained=name)
    backbone.preprocess = _read_preprocess(name, backbone.preprocess, cache_dir)
    return backbone.to(device)


__all__ = ["HFSiglipBackbone", "create_hf_siglip", "resize_pos_grid", "SIGLIP_MEAN", "SIGLIP_STD"]
