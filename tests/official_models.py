"""Tiny random models of the official packages (facebookresearch/segment-anything ``Sam``, facebookresearch/sam2
``SAM2Base``) built directly from their modules with small dimensions, and the matching tiny
``transformers`` configs, so that both implementations can run on identical weights."""
from __future__ import annotations

from functools import partial

import torch

SIZE = 64  # encoder input of every tiny model here (the real ones: 1024)


def official_sam(seed: int = 0):
    """A segment-anything ``Sam``: ViT (2 blocks, width 32, patch 16, window 2, block 1 global), prompt
    encoder and two-way decoder of width 32. Weights: the official initialization, then biases, positional
    tables and the mask hypernetworks' outputs spread so that mask logits cross the stability offsets (± 1)
    in structured regions and predicted IoUs vary."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(img_size=SIZE, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                              out_chans=32, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                              use_rel_pos=True, window_size=2, global_attn_indexes=(1,))
    prompts = PromptEncoder(embed_dim=32, image_embedding_size=(SIZE // 16, SIZE // 16), input_image_size=(SIZE, SIZE),
                            mask_in_chans=4)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2))
    model = Sam(encoder, prompts, decoder).eval()
    _spread(model, ("output_hypernetworks_mlps",))
    return model


def hf_sam_config():
    """The ``transformers.SamConfig`` of :func:`official_sam`'s architecture."""
    from transformers import SamConfig
    from transformers.models.sam.configuration_sam import (SamMaskDecoderConfig, SamPromptEncoderConfig,
                                                           SamVisionConfig)

    vc = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, output_channels=32,
                         image_size=SIZE, patch_size=16, window_size=2, global_attn_indexes=[1], num_pos_feats=16)
    pc = SamPromptEncoderConfig(hidden_size=32, image_size=SIZE, patch_size=16, mask_input_channels=4)
    dc = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                              iou_head_hidden_dim=32, iou_head_depth=3)
    return SamConfig(vision_config=vc.to_dict(), prompt_encoder_config=pc.to_dict(), mask_decoder_config=dc.to_dict())


def _spread(model, amplified: tuple[str, ...], gain: float = 6.0):
    """Random biases and positional tables (the official init leaves them at 0), and ``gain`` times larger
    weights in the named modules."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.3)
            if any(a in name for a in amplified) and name.endswith("weight"):
                p.mul_(gain)
