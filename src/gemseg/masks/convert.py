"""Official SAM checkpoints (facebookresearch/segment-anything ``sam_vit_*.pth``) as Hugging Face
``transformers`` ``SamModel`` weights, so that :mod:`gemseg.masks` can run a checkpoint that exists only in
the official format (a fine-tuned SAM, say) and so that tests can give both implementations identical
weights.

The key mapping is written from the two module trees (segment_anything/modeling/{image_encoder,
prompt_encoder,mask_decoder,transformer}.py and transformers/models/sam/modeling_sam.py): the same tensors
under other names; no tensor is reshaped. Every converted name and shape is checked against the target
model, and nothing may be left over on either side.
"""
from __future__ import annotations

import os
import re

import torch

# (official pattern, Hugging Face replacement), applied in order, first match wins
_SAM_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.(\d+)\.", r"vision_encoder.layers.\1."),
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^image_encoder\.", "vision_encoder."),
    (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^mask_decoder\.transformer\.(layers\.\d+\.)norm(\d)\.", r"mask_decoder.transformer.\1layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
)
# the random Fourier features of point and image positions: one official tensor, two tied ones in transformers
_SAM_PE = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_SAM_PE_HF = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
# the official MLP (segment_anything/modeling/mask_decoder.py MLP): layers.0 .. layers.{n-1};
# transformers' SamFeedForward: proj_in, layers.0 .. layers.{n-3}, proj_out
_MLP = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(\w+)$")


def sam_state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SAM state dict (``Sam.state_dict()``, the ``sam_vit_*.pth`` files) -> the same tensors
    under ``transformers.SamModel``'s names."""
    if not isinstance(state, dict) or _SAM_PE not in state:
        raise ValueError(f"not an official SAM state dict: it has no {_SAM_PE!r} "
                         "(expected facebookresearch/segment-anything's Sam.state_dict(), e.g. sam_vit_b_01ec64.pth)")
    depth = {}  # MLP prefix -> number of linear layers
    for key in state:
        m = _MLP.match(key)
        if m:
            depth[m[1]] = max(depth.get(m[1], 0), int(m[2]) + 1)
    out = {}
    for key, value in state.items():
        if key == _SAM_PE:
            out.update({k: value for k in _SAM_PE_HF})
            continue
        m = _MLP.match(key)
        if m:
            i, n = int(m[2]), depth[m[1]]
            name = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
            out[f"{m[1]}.{name}.{m[3]}"] = value
            continue
        for pattern, repl in _SAM_RULES:
            new, hit = re.subn(pattern, repl, key)
            if hit:
                out[new] = value
                break
        else:
            out[key] = value  # mask_decoder.transformer.layers.*.{self_attn,cross_*,mlp}, tokens: same names
    return out


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Copy ``state`` into ``model`` after checking that both hold exactly the same names and shapes."""
    target = model.state_dict()
    missing = sorted(set(target) - set(state))
    extra = sorted(set(state) - set(target))
    if missing or extra:
        raise ValueError(f"the converted weights do not fit {type(model).__name__}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}; is the config the checkpoint's architecture?")
    bad = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in target.items() if state[k].shape != v.shape]
    if bad:
        raise ValueError(f"the converted weights do not fit {type(model).__name__}: shapes differ: {bad[:5]}; "
                         "is the config the checkpoint's architecture?")
    model.load_state_dict(state, strict=True)
    return model


def load_official_sam(path: str | os.PathLike, config) -> torch.nn.Module:
    """An official SAM checkpoint file -> ``transformers.SamModel`` (eval mode).

    Args:
        path: a ``sam_vit_{b,l,h}_*.pth`` file (read with ``torch.load(weights_only=True)``).
        config: the matching ``transformers.SamConfig``, e.g. ``SamConfig.from_pretrained("facebook/sam-vit-base")``
            for ViT-B. Save the result with ``save_pretrained(folder)`` and pass the folder to
            :func:`gemseg.masks.create_mask_source`.
    """
    from transformers import SamModel

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint that wraps the weights
    return load_into(SamModel(config), sam_state_dict_to_hf(state)).eval()
