"""Official SAM and SAM 2 checkpoints (facebookresearch/segment-anything ``sam_vit_*.pth``,
facebookresearch/sam2 ``sam2*_hiera_*.pt``) as Hugging Face ``transformers`` ``SamModel`` / ``Sam2Model``
weights, so that :mod:`gemseg.masks` can run a checkpoint that exists only in
the official format (a fine-tuned SAM, say) and so that tests can give both implementations identical
weights.

The key mapping is written from the module trees (segment_anything/modeling/*.py, sam2/modeling/{sam2_base,
backbones,sam}/*.py, transformers/models/{sam,sam2}/modeling_*.py): the same tensors under other names; only
SAM 2's four point-label embeddings are stacked into one table. Every converted name and shape is checked against the target
model, and nothing may be left over on either side.
"""
from __future__ import annotations

import os
import re

import torch

# (official pattern, Hugging Face replacement), applied in order, first match wins
_PROMPT_RULES: tuple[tuple[str, str], ...] = (
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
_SAM_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.(\d+)\.", r"vision_encoder.layers.\1."),
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^image_encoder\.", "vision_encoder."),
) + _PROMPT_RULES
_SAM2_RULES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.trunk\.patch_embed\.proj\.", "vision_encoder.backbone.patch_embed.projection."),
    (r"^image_encoder\.trunk\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.blocks.\1.layer_norm\2."),
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^mask_decoder\.transformer\.(.*)\.out_proj\.", r"mask_decoder.transformer.\1.o_proj."),
) + _PROMPT_RULES
# SAM 2's video-only parts (memory attention and encoder, object pointers): transformers' Sam2Model, the
# image model, has none of them
_SAM2_VIDEO = re.compile(r"^(memory_attention|memory_encoder|maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|"
                         r"no_obj_embed_spatial|mask_downsample|obj_ptr_proj|obj_ptr_tpos_proj)\b")
# the random Fourier features of point and image positions: one official tensor, two tied ones in transformers
_PE = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_PE_HF = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
# the official MLPs (segment_anything/modeling/{mask_decoder,common}.py, sam2/modeling/sam2_utils.py MLP):
# layers.0 .. layers.{n-1}; transformers' feed-forward modules: proj_in, layers.0 .. layers.{n-3}, proj_out
_MLP = re.compile(r"^(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head|\.mlp))"
                  r"\.layers\.(\d+)\.(\w+)$")


def sam_state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SAM state dict (``Sam.state_dict()``, the ``sam_vit_*.pth`` files) -> the same tensors
    under ``transformers.SamModel``'s names."""
    if not isinstance(state, dict) or _PE not in state:
        raise ValueError(f"not an official SAM state dict: it has no {_PE!r} "
                         "(expected facebookresearch/segment-anything's Sam.state_dict(), e.g. sam_vit_b_01ec64.pth)")
    return _convert(state, _SAM_RULES)


def sam2_state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SAM 2 / 2.1 state dict (``SAM2Base.state_dict()``, the ``"model"`` entry of the
    ``sam2*_hiera_*.pt`` files) -> ``transformers.Sam2Model``'s names; the video-only parts are dropped and
    the four point-label embeddings become one table ``prompt_encoder.point_embed.weight`` [4, C]."""
    key = "sam_" + _PE
    if not isinstance(state, dict) or key not in state:
        raise ValueError(f"not an official SAM 2 state dict: it has no {key!r} "
                         "(expected facebookresearch/sam2's SAM2Base.state_dict(), e.g. sam2.1_hiera_tiny.pt)")
    image = {k.removeprefix("sam_"): v for k, v in state.items() if not _SAM2_VIDEO.match(k)}
    n = sum(k.startswith("prompt_encoder.point_embeddings.") for k in image)
    labels = [image.pop(f"prompt_encoder.point_embeddings.{i}.weight") for i in range(n)]  # each (1, C)
    out = _convert(image, _SAM2_RULES)
    out["prompt_encoder.point_embed.weight"] = torch.cat(labels)  # (4, C), rows in label order
    return out


def _convert(state: dict[str, torch.Tensor], rules: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    depth = {}  # MLP prefix -> number of linear layers
    for key in state:
        m = _MLP.match(key)
        if m:
            depth[m[1]] = max(depth.get(m[1], 0), int(m[2]) + 1)
    out = {}
    for key, value in state.items():
        if key == _PE:
            out.update({k: value for k in _PE_HF})
            continue
        m = _MLP.match(key)
        if m:
            i, n = int(m[2]), depth[m[1]]
            name = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
            key = f"{m[1]}.{name}.{m[3]}"
        for pattern, repl in rules:
            new, hit = re.subn(pattern, repl, key)
            if hit:
                key = new
                break
        out[key] = value  # names without a rule (attention projections, tokens) are the same on both sides
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

    return load_into(SamModel(config), sam_state_dict_to_hf(_read(path))).eval()


def load_official_sam2(path: str | os.PathLike, config) -> torch.nn.Module:
    """An official SAM 2 / 2.1 checkpoint file (``sam2.1_hiera_tiny.pt`` ...) -> ``transformers.Sam2Model``
    (eval mode); ``config``: the matching ``transformers.Sam2Config``, e.g.
    ``Sam2Config.from_pretrained("facebook/sam2.1-hiera-tiny")``."""
    from transformers import Sam2Model

    return load_into(Sam2Model(config), sam2_state_dict_to_hf(_read(path))).eval()


def _read(path) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # sam2's files and training checkpoints wrap the weights
    return state
