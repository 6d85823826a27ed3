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


def official_sam2(seed: int = 0, dynamic: bool = True):
    """A sam2 ``SAM2Base`` as the SAM 2.1 configs build it (high-res features in the decoder, sigmoid IoU
    head, object-score head, no-memory embedding added to the image features), with a Hiera of 4 stages
    (1, 1, 2, 1 blocks, width 16 doubling per stage, windows 4, 4, 4, 2, block 3 global) and an FPN neck of
    width 32. The video-only memory modules are left out (``nn.Identity``): image prediction never calls them.
    ``dynamic``: single-mask output picks the stabler multimask output when the first is unstable."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam2_base import SAM2Base

    torch.manual_seed(seed)
    trunk = Hiera(embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                  window_pos_embed_bkg_spatial_size=(2, 2), window_spec=(4, 4, 4, 2))
    neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=32, normalize=True), d_model=32,
                   backbone_channel_list=[128, 64, 32, 16], fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")
    model = SAM2Base(ImageEncoder(trunk=trunk, neck=neck, scalp=1), torch.nn.Identity(), torch.nn.Identity(),
                     image_size=SIZE, use_high_res_features_in_sam=True, multimask_output_in_sam=True,
                     iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
                     directly_add_no_mem_embed=True, use_obj_ptrs_in_encoder=True, use_mlp_for_obj_ptr_proj=True,
                     # dynamic=True: the official builder's apply_postprocessing, transformers' default
                     sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=dynamic,
                                                      dynamic_multimask_stability_delta=0.05,
                                                      dynamic_multimask_stability_thresh=0.98)).eval()
    _spread(model, ("output_hypernetworks_mlps",))
    with torch.no_grad():
        model.no_mem_embed.normal_(0, 0.3)
    return model


def hf_sam2_config(dynamic: bool = True):
    """The ``transformers.Sam2Config`` of :func:`official_sam2`'s architecture (SAM 2's decoder: 8 heads,
    MLP 2048, IoU head 256, mask input 16 channels, as sam2_base.py _build_sam_heads fixes them)."""
    from mask_models import tiny_sam2_config

    return tiny_sam2_config(dynamic=dynamic, heads_per_stage=(1, 2, 4, 8), mask_input_channels=16,
                            decoder={"mlp_dim": 2048, "num_attention_heads": 8, "iou_head_hidden_dim": 256,
                                     "iou_head_depth": 3})


def shift_sam_logits(model, shift: float):
    """Add ``shift`` to every mask logit of a segment-anything ``Sam``, in its weights: the last upscaling
    layer's channel 0 becomes the constant GELU(3), and each hypernetwork's output 0 the constant
    ``shift / GELU(3)`` (their product is the logits' sum over channels). A negative shift leaves small
    masks around the logits' peaks, which survive the crops' edge filter, so the NMS across crops has
    duplicates to choose between. Returns ``model``."""
    decoder = model.mask_decoder
    with torch.no_grad():
        up = decoder.output_upscaling[3]  # ConvTranspose2d(d/4, d/8): weight (in, out, 2, 2)
        up.weight[:, 0] = 0
        up.bias[0] = 3.0
        level = torch.nn.functional.gelu(torch.tensor(3.0))
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight[0] = 0
            mlp.layers[-1].bias[0] = shift / level
    return model
