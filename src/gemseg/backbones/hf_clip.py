"""Hugging Face transformers backend: ``CLIPModel`` checkpoints (OpenAI, LAION, MetaCLIP, ...)."""
from __future__ import annotations

from torch import nn

from .base import Preprocess, square_grid
from .hf_common import (HFBackbone, HFQKVBlock, check_embeddings, check_qkv_layers, read_preprocess,
                        import_transformers)
from .weights import UNREADABLE_WEIGHTS, unreadable_weights, weights_unavailable

HFCLIPBlock = HFQKVBlock  # CLIP's layers have the q/k/v/out projection layout


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


def create_hf_clip(name: str, *, device, cache_dir: str | None = None) -> HFCLIPBackbone:
    """Load a ``CLIPModel`` and its tokenizer from a hub id (``openai/clip-vit-base-patch16``) or a
    local folder saved with ``save_pretrained``. Weights load through safetensors where present."""
    transformers = import_transformers()
    try:
        model = transformers.CLIPModel.from_pretrained(name, cache_dir=cache_dir)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, cache_dir=cache_dir)
    except UNREADABLE_WEIGHTS as e:
        raise unreadable_weights(name, e) from e
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and "CLIP" in str(e) and "model type" in str(e):
            raise ValueError(f"{name} is not a CLIPModel checkpoint: {str(e).splitlines()[0]}") from e
        raise weights_unavailable(name, "hf", e) from e
    preprocess = read_preprocess(name, model.config.vision_config.image_size)
    return HFCLIPBackbone(model.to(device), tokenizer, name=name, pretrained=name, preprocess=preprocess)
