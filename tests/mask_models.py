"""Tiny random SAM and SAM 2 models (``transformers``), built from small configs in code."""
from __future__ import annotations

import torch

SIZE = 64  # encoder input (the real models: 1024); patch 16 -> a 4x4 embedding, 16x16 low-res masks


def tiny_sam(seed: int = 0):
    from transformers import SamConfig, SamModel
    from transformers.models.sam.configuration_sam import (SamMaskDecoderConfig, SamPromptEncoderConfig,
                                                           SamVisionConfig)

    torch.manual_seed(seed)
    vc = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, output_channels=32,
                         image_size=SIZE, patch_size=16, window_size=2, global_attn_indexes=[1], num_pos_feats=16)
    pc = SamPromptEncoderConfig(hidden_size=32, image_size=SIZE, patch_size=16, mask_input_channels=4)
    dc = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                              iou_head_hidden_dim=32)
    cfg = SamConfig(vision_config=vc.to_dict(), prompt_encoder_config=pc.to_dict(), mask_decoder_config=dc.to_dict())
    return _randomize(SamModel(cfg).eval())


def tiny_sam2_config(*, dynamic: bool = True, heads_per_stage=(1, 1, 2, 2), mask_input_channels: int = 4,
                     decoder: dict | None = None):
    """A tiny ``transformers.Sam2Config`` (Hiera 1-1-2-1 blocks, FPN 32, input :data:`SIZE`); ``decoder``:
    the mask decoder's fields that differ from the small default (MLP 64, 2 heads, IoU head 32)."""
    from transformers import Sam2Config
    from transformers.models.sam2.configuration_sam2 import (Sam2HieraDetConfig, Sam2MaskDecoderConfig,
                                                             Sam2PromptEncoderConfig, Sam2VisionConfig)

    bb = Sam2HieraDetConfig(hidden_size=16, num_attention_heads=1, image_size=[SIZE, SIZE], blocks_per_stage=[1, 1, 2, 1],
                            embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=list(heads_per_stage),
                            window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
                            window_positional_embedding_background_size=[2, 2])
    vc = Sam2VisionConfig(backbone_config=bb.to_dict(), backbone_channel_list=[128, 64, 32, 16],
                          backbone_feature_sizes=[[SIZE // 4] * 2, [SIZE // 8] * 2, [SIZE // 16] * 2], fpn_hidden_size=32)
    pc = Sam2PromptEncoderConfig(hidden_size=32, image_size=SIZE, patch_size=16, mask_input_channels=mask_input_channels)
    dc = Sam2MaskDecoderConfig(**{"hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                  "iou_head_hidden_dim": 32, "dynamic_multimask_via_stability": dynamic,
                                  **(decoder or {})})
    return Sam2Config(vision_config=vc.to_dict(), prompt_encoder_config=pc.to_dict(), mask_decoder_config=dc.to_dict())


def tiny_sam2(seed: int = 0, dynamic: bool = True):
    from transformers import Sam2Model

    torch.manual_seed(seed)
    return _randomize(Sam2Model(tiny_sam2_config(dynamic=dynamic)).eval())


def _randomize(model):
    """Spread the decoder's outputs so that random masks are neither all on nor all off, and IoU
    predictions vary (so filters and NMS have something to decide)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and "mask_decoder" in name:
                p.normal_(0, 0.2)
    return model
