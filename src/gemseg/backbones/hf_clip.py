"""Hugging Face transformers backend: ``CLIPModel`` checkpoints (OpenAI, LAION, MetaCLIP, ...)."""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from .base import Backbone, Preprocess, ViTBlock, lazy_import, square_grid
from .weights import weights_unavailable


def _transformers():
    return lazy_import("transformers", "hf", "transformers")


class HFCLIPBlock(ViTBlock):
    def __init__(self, layer: nn.Module):
        attn = layer.self_attn
        super().__init__(ln_1=layer.layer_norm1, ln_2=layer.layer_norm2, mlp=layer.mlp,
                         out_proj=attn.out_proj, num_heads=attn.num_heads)
        self.attn = attn

    def project_qkv(self, h):
        a = self.attn
        return a.q_proj(h), a.k_proj(h), a.v_proj(h)


def load_hf_config(name: str, cache_dir: str | None):
    """A hub id's or folder's ``AutoConfig``; missing offline -> the one-line weights error."""
    try:
        return _transformers().AutoConfig.from_pretrained(name, cache_dir=cache_dir)
    except (OSError, ValueError) as e:
        raise weights_unavailable(name, "hf", e) from e


def check_qkv_layers(name: str, layers) -> None:
    """Every layer must have a ``self_attn`` with separate q/k/v projections and an out projection."""
    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
            raise ValueError(f"{name}: layer {i} has no standard q/k/v attention")


def check_embeddings(name: str, emb: nn.Module, attrs: tuple[str, ...], kind: str) -> None:
    for attr in attrs:
        if not hasattr(emb, attr):
            raise ValueError(f"{name}: vision embeddings have no {attr}; not a {kind}")


class HFBackbone(Backbone):
    """What the transformers backbones share: the model, its tokenizer, patch size and width read from
    ``model.config.vision_config``, and a conv patch embedding."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, pretrained: str | None):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name, self.pretrained = name, pretrained
        vcfg = model.config.vision_config
        p = vcfg.patch_size
        self.patch_size = (p, p) if isinstance(p, int) else tuple(p)
        self.width = vcfg.hidden_size
        s = getattr(vcfg, "image_size", None)  # (H, W) the weights were trained at; None: flexible (NaFlex)
        self.native_size = (s, s) if isinstance(s, int) else tuple(s) if s is not None else None

    def _patch_embed(self, images):
        emb = self.model.vision_model.embeddings.patch_embedding
        return emb(images.to(emb.weight.dtype))


def _check_supported(name: str, model: nn.Module) -> None:
    vision = getattr(model, "vision_model", None)
    if vision is None or not hasattr(model, "text_model") or not hasattr(model, "visual_projection"):
        raise ValueError(f"{name}: expected a transformers CLIPModel, got {type(model).__name__} "
                         "(BLIP/SigLIP models have no class token and are not supported by the CLIP backend)")
    check_embeddings(name, vision.embeddings, ("patch_embedding", "class_embedding", "position_embedding"),
                     "class-token CLIP ViT")
    check_qkv_layers(name, vision.encoder.layers)


class HFCLIPBackbone(HFBackbone):
    """A transformers ``CLIPModel`` seen through the :class:`Backbone` interface."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, pretrained: str | None = None,
                 preprocess: Preprocess | None = None):
        _check_supported(name, model)
        super().__init__(model, tokenizer, name=name, pretrained=pretrained)
        self.embed_dim = model.visual_projection.out_features
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.blocks = [HFCLIPBlock(layer) for layer in model.vision_model.encoder.layers]
        self.preprocess = preprocess or Preprocess(image_size=self.native_size)

    # image side

    def _class_token(self):
        return self.model.vision_model.embeddings.class_embedding

    def _pos_embed(self):
        pos = self.model.vision_model.embeddings.position_embedding.weight  # (1 + gh*gw, C)
        return pos, square_grid(pos.shape[0] - 1)

    def _pre_norm(self, x):
        return self.model.vision_model.pre_layrnorm(x)

    def head(self, x):
        return self.model.visual_projection(self.model.vision_model.post_layernorm(x))

    # text side
    def _tokenize(self, texts):
        lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]]
        # padded to the longest text, not to the context: CLIP's text tower is causal and pools at the
        # end token, so the padding after it never changes an embedding, and it is most of the work
        inputs = self.tokenizer(texts, padding=True, truncation=True,
                                max_length=self.context_length, return_tensors="pt")
        return lengths, dict(inputs)

    def _encode_tokens(self, inputs):
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        pooled = self.model.text_model(**inputs).pooler_output  # (P, width_text)
        return self.model.text_projection(pooled)


def _read_preprocess(folder_or_id: str, image_size: int) -> Preprocess:
    """Mean/std from ``preprocessor_config.json`` when it is in the folder or the hub cache."""
    path = os.path.join(folder_or_id, "preprocessor_config.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(folder_or_id, "preprocessor_config.json")
            path = cached if isinstance(cached, str) else None
        except Exception:  # no hub client or malformed id: keep the CLIP defaults
            path = None
    defaults = Preprocess(image_size=(image_size, image_size))
    if not path:
        return defaults
    with open(path) as f:
        cfg = json.load(f)
    return Preprocess(mean=tuple(cfg.get("image_mean", defaults.mean)), std=tuple(cfg.get("image_std", defaults.std)),
                      image_size=defaults.image_size)


def create_hf_clip(name: str, *, device, cache_dir: str | None = None) -> HFCLIPBackbone:
    """Load a ``CLIPModel`` and its tokenizer from a hub id (``openai/clip-vit-base-patch16``) or a
    local folder saved with ``save_pretrained``. Weights load through safetensors where present."""
    transformers = _transformers()
    try:
        model = transformers.CLIPModel.from_pretrained(name, cache_dir=cache_dir)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, cache_dir=cache_dir)
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and "CLIP" in str(e) and "model type" in str(e):
            raise ValueError(f"{name} is not a CLIPModel checkpoint: {str(e).splitlines()[0]}") from e
        raise weights_unavailable(name, "hf", e) from e
    preprocess = _read_preprocess(name, model.config.vision_config.image_size)
    return HFCLIPBackbone(model.to(device), tokenizer, name=name, pretrained=name, preprocess=preprocess)
