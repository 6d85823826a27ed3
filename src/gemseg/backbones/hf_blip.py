"""Hugging Face transformers BLIP backend (``hf-blip``): ``BlipForImageTextRetrieval`` checkpoints (the BLIP
image-text contrastive heads, e.g. ``Salesforce/blip-itm-base-coco``) and ``BlipModel``.

Dense embeddings: BLIP's ViT is a pre-norm class-token ViT like CLIP's, with a fused ``qkv`` linear and no
norm before the first block. A token ``x`` is projected into the joint space the way BLIP projects its
class token for image-text contrast: ``vision_proj(post_layernorm(x))`` (``BlipForImageTextRetrieval``).
``BlipModel`` pools with ``post_layernorm`` applied twice (its pooler re-normalizes the normalized class
token) before ``visual_projection``; the same is done to every token so that the class token's dense
embedding is the model's own image embedding.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Preprocess, ViTBlock, square_grid
from .hf_common import (HFBackbone, check_embeddings, import_transformers, load_hf_config, read_preprocess,
                        resize_pos_grid)
from .weights import UNREADABLE_WEIGHTS, unreadable_weights, weights_unavailable

SUPPORTED = ("BlipForImageTextRetrieval", "BlipModel")


class HFBlipBlock(ViTBlock):
    def __init__(self, layer: nn.Module):
        attn = layer.self_attn
        super().__init__(ln_1=layer.layer_norm1, ln_2=layer.layer_norm2, mlp=layer.mlp,
                         out_proj=attn.projection, num_heads=attn.num_heads)
        self.attn = attn

    def project_qkv(self, h):
        return self.attn.qkv(h).chunk(3, dim=-1)  # BLIP's fused layout: [q | k | v] along the features


def _check_supported(name: str, model: nn.Module) -> None:
    vision = getattr(model, "vision_model", None)
    retrieval = all(hasattr(model, a) for a in ("vision_proj", "text_proj", "text_encoder"))
    contrastive = all(hasattr(model, a) for a in ("visual_projection", "text_projection", "text_model"))
    if vision is None or not (retrieval or contrastive):
        raise ValueError(f"{name}: expected a transformers {' or '.join(SUPPORTED)}, got {type(model).__name__} "
                         "(captioning and VQA BLIP models have no image-text projection; use a retrieval "
                         "checkpoint such as Salesforce/blip-itm-base-coco)")
    check_embeddings(name, vision.embeddings, ("patch_embedding", "class_embedding", "position_embedding"),
                     "BLIP ViT")
    for i, layer in enumerate(vision.encoder.layers):
        attn = getattr(layer, "self_attn", None)
        qkv = getattr(attn, "qkv", None)
        if not isinstance(qkv, nn.Linear) or qkv.out_features != 3 * qkv.in_features \
                or not isinstance(getattr(attn, "projection", None), nn.Linear):
            raise ValueError(f"{name}: layer {i} has no fused qkv attention of the BLIP layout")


class HFBlipBackbone(HFBackbone):
    """A transformers BLIP model seen through the :class:`Backbone` interface (class token: 1 prefix)."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, pretrained: str | None = None,
                 preprocess: Preprocess | None = None):
        _check_supported(name, model)
        super().__init__(model, tokenizer, name=name, pretrained=pretrained)
        self._retrieval = hasattr(model, "vision_proj")
        tcfg = model.config.text_config
        self._proj = model.vision_proj if self._retrieval else model.visual_projection
        self.embed_dim = self._proj.out_features
        limit = getattr(tokenizer, "model_max_length", None)
        limit = limit if isinstance(limit, int) and 0 < limit < 100_000 else tcfg.max_position_embeddings
        self.context_length = int(min(limit, tcfg.max_position_embeddings))
        self.blocks = [HFBlipBlock(layer) for layer in model.vision_model.encoder.layers]
        self.preprocess = preprocess or Preprocess(image_size=self.native_size)

    # image side

    def _class_token(self):
        return self.model.vision_model.embeddings.class_embedding.reshape(-1)  # (C,)

    def _pos_embed(self):
        pos = self.model.vision_model.embeddings.position_embedding.reshape(-1, self.width)  # (1 + gh*gw, C)
        return pos, square_grid(pos.shape[0] - 1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [B, 3, H, W] (normalized) -> tokens [B, 1 + h * w, C] entering block 0 (no pre-norm
        in BLIP's ViT); the position grid is resized the model's own way (bicubic, no antialiasing)."""
        x = self._patch_embed(images)  # (B, C, h, w)
        B, C, h, w = x.shape
        pos, grid = self._pos_embed()
        pos = torch.cat([pos[:1], resize_pos_grid(pos[1:], grid, (h, w), mode="bicubic")], dim=0)
        cls = self._class_token().to(x.dtype).expand(B, 1, C)
        return torch.cat([cls, x.flatten(2).transpose(1, 2)], dim=1) + pos.to(x.dtype)

    def head(self, x):
        norm = self.model.vision_model.post_layernorm
        x = norm(x)
        return self._proj(x if self._retrieval else norm(x))

    # text side
    def _tokenize(self, texts):
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        inputs = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                                return_tensors="pt")
        return lengths, dict(inputs)

    def _encode_tokens(self, inputs):
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        if self._retrieval:  # BLIP's ITC text feature: the [CLS] token of the unimodal text encoder
            hidden = self.model.text_encoder(**inputs).last_hidden_state  # (P, L, width_text)
            return self.model.text_proj(hidden[:, 0])
        return self.model.text_projection(self.model.text_model(**inputs).pooler_output)


def create_hf_blip(name: str, *, device, cache_dir: str | None = None) -> HFBlipBackbone:
    """Load a BLIP retrieval (or ``BlipModel``) checkpoint and its tokenizer from a hub id or a folder."""
    transformers = import_transformers()
    config = load_hf_config(name, cache_dir)
    archs = list(getattr(config, "architectures", None) or [])
    which = next((a for a in SUPPORTED if a in archs), None)
    if getattr(config, "model_type", None) != "blip" or which is None:
        raise ValueError(f"{name} is not a BLIP image-text retrieval checkpoint (model_type "
                         f"{getattr(config, 'model_type', None)!r}, architectures {archs}); the hf-blip backend "
                         f"loads {' or '.join(SUPPORTED)}, e.g. Salesforce/blip-itm-base-coco")
    try:
        model = getattr(transformers, which).from_pretrained(name, cache_dir=cache_dir)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, cache_dir=cache_dir)
    except UNREADABLE_WEIGHTS as e:
        raise unreadable_weights(name, e) from e
    except (OSError, ValueError) as e:
        raise weights_unavailable(name, "hf", e) from e
    preprocess = read_preprocess(name, model.config.vision_config.image_size)
    return HFBlipBackbone(model.to(device), tokenizer, name=name, pretrained=name, preprocess=preprocess)


__all__ = ["HFBlipBackbone", "HFBlipBlock", "create_hf_blip"]
