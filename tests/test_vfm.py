"""Vision foundation models without text (gemseg.backbones.vfm) on tiny random timm models."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_VFM, tiny_vfm
from gemseg import WeightsUnavailableError
from gemseg.backbones.base import Preprocess
from gemseg.backbones.vfm import VFM_MODELS, create_vfm, kind_of, list_vfms, resolve_vfm

KINDS = sorted(TINY_VFM)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("kind", KINDS)
def test_interface_of_every_kind(kind):
    vfm = tiny_vfm(kind)
    assert vfm.kind == kind and vfm.pretrained is None
    assert (vfm.preprocess.mean, vfm.preprocess.std) == IMAGENET  # timm's statistics of these checkpoints
    prefix = {"dino": 1, "dinov2": 1, "dinov2-reg": 5, "mae": 1, "sam": 0}[kind]
    assert vfm.num_prefix_tokens == prefix
    assert vfm.input_size == {"mae": (32, 32), "sam": (64, 64)}.get(kind)
    H, W = 32, 48
    x = vfm.prepare(torch.randn(2, 3, H, W), Preprocess())
    feats = vfm.features(x)
    assert feats.shape == (2, vfm.width, *vfm.grid((H, W))) and torch.isfinite(feats).all()
    if kind == "sam":
        assert vfm.width == 16 and vfm.grid((H, W)) == (8, 8)
    else:
        assert vfm.width == 32 and vfm.grid((H, W)) == tuple(s // p for s, p in
                                                             zip(vfm.input_size or (H, W), vfm.patch_size))


@pytest.mark.parametrize("kind", KINDS)
def test_features_at_native_size_are_timms_own_forward(kind):
    """At the model's native size no position embedding is resampled: the features are exactly timm's
    forward_features (the official get_intermediate_layers(n=1): final norm of the last block, prefix
    tokens dropped; SAM: the neck output)."""
    vfm = tiny_vfm(kind)
    size = tuple(vfm.model.patch_embed.img_size)
    x = torch.randn(2, 3, *size)
    ref = vfm.model.forward_features(x)
    if kind != "sam":
        h, w = size[0] // vfm.patch_size[0], size[1] // vfm.patch_size[1]
        ref = ref[:, vfm.num_prefix_tokens:].transpose(1, 2).reshape(2, -1, h, w)
    assert torch.allclose(vfm.features(x), ref, atol=1e-6)


def official_pos(pos: torch.Tensor, grid: int, new: tuple[int, int], kind: str) -> torch.Tensor:
    """Patch position embeddings [grid * grid, C] resampled as each family's original code writes it."""
    C = pos.shape[-1]
    g = pos.reshape(1, grid, grid, C).permute(0, 3, 1, 2)
    if kind in ("dino", "dinov2"):  # dino interpolate_pos_encoding; dinov2 with interpolate_offset=0.1
        g = F.interpolate(g, scale_factor=((new[0] + 0.1) / math.sqrt(grid * grid),
                                           (new[1] + 0.1) / math.sqrt(grid * grid)), mode="bicubic")
    elif kind == "dinov2-reg":  # dinov2 hub *_reg: interpolate_offset=0, interpolate_antialias=True
        g = F.interpolate(g, size=new, mode="bicubic", antialias=True)
    else:  # mae util/pos_embed.py interpolate_pos_embed
        g = F.interpolate(g, size=new, mode="bicubic", align_corners=False)
    return g.permute(0, 2, 3, 1).reshape(-1, C)


@pytest.mark.parametrize("kind", ["dino", "dinov2", "dinov2-reg", "mae"])
def test_position_embeddings_follow_each_original_code(kind):
    """At another size the tokens equal a plain re-run of the family's embedding with the official
    resampling, through timm's blocks and norm."""
    vfm = tiny_vfm(kind)
    m = vfm.model
    x = torch.randn(1, 3, 48, 40)  # not the native 32x32
    h, w = 48 // vfm.patch_size[0], 40 // vfm.patch_size[1]
    grid = m.patch_embed.grid_size[0]
    pos = m.pos_embed[0]
    with torch.no_grad():
        t = m.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (1, h*w, C)
        if m.no_embed_class:  # timm folds DINOv2-reg's class position into cls_token
            t = torch.cat([m.cls_token, m.reg_token, t + official_pos(pos, grid, (h, w), kind)], dim=1)
        else:
            t = torch.cat([m.cls_token + pos[:1], t + official_pos(pos[1:], grid, (h, w), kind)], dim=1)
        for blk in m.blocks:
            t = blk(t)
        ref = m.norm(t)
    assert torch.allclose(vfm.tokens(x), ref, atol=1e-5)
    if kind != "dinov2-reg":  # an offset formula is not the antialiased size formula: the test can tell them apart
        other = official_pos(pos[-grid * grid:], grid, (h, w), "dinov2-reg")
        assert not torch.allclose(other, official_pos(pos[-grid * grid:], grid, (h, w), kind), atol=1e-4)


def test_prepare_renormalizes_and_resizes_like_proxyclip():
    """ProxyCLIP: imgs_norm = Normalize(ImageNet)(UnNormalize(CLIP)(img)); SAM/MAE then resize bilinearly."""
    clip = Preprocess()
    img = torch.rand(2, 3, 24, 40)
    x = (img - torch.tensor(clip.mean).view(1, 3, 1, 1)) / torch.tensor(clip.std).view(1, 3, 1, 1)
    want = (img - torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
    assert torch.allclose(tiny_vfm("dino").prepare(x, clip), want, atol=1e-5)
    sam = tiny_vfm("sam").prepare(x, clip)
    assert torch.allclose(sam, F.interpolate(want, size=(64, 64), mode="bilinear", align_corners=False), atol=1e-5)


def test_names_resolve_to_timm_models_and_kinds():
    assert len(list_vfms()) == len(VFM_MODELS) >= 12
    assert resolve_vfm("dinov2-b14-reg") == ("vit_base_patch14_reg4_dinov2.lvd142m", "dinov2-reg")
    assert resolve_vfm("timm/vit_base_patch8_224.dino") == ("vit_base_patch8_224.dino", "dino")
    assert kind_of("samvit_base_patch16.sa1b") == "sam" and kind_of("vit_base_patch16_224.mae") == "mae"
    for name in ("dino-s8", "dino-b8", "dino-b16", "dinov2-b14", "dinov2-b14-reg", "sam-b16", "mae-b16"):
        assert name in VFM_MODELS
    with pytest.raises(ValueError, match="unknown VFM 'resnet50'"):
        resolve_vfm("resnet50")
    with pytest.raises(ValueError, match="weights must be 'pretrained', 'random' or an existing checkpoint"):
        create_vfm("dino-b8", weights="/no/such/file.pth")


def test_missing_weights_offline_say_how_to_supply_them():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: never the network
    with pytest.raises(WeightsUnavailableError) as e:
        create_vfm("dino-b8")
    msg = str(e.value)
    assert "\n" not in msg and "dino-b8" in msg and "vit_base_patch8_224.dino" in msg
    assert "--proxy-weights PATH" in msg and "HF_HOME" in msg


def test_weights_from_a_file_and_from_a_timm_folder(tmp_path):
    from safetensors.torch import save_file
    import timm.models

    vfm = tiny_vfm("dinov2-reg", seed=3)
    args = dict(embed_dim=32, depth=2, num_heads=2, **TINY_VFM["dinov2-reg"][1])
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in vfm.model.state_dict().items()}, path)
    from_file = create_vfm("dinov2-b14-reg", weights=path, **args)
    folder = str(tmp_path / "folder")
    timm.models.save_for_hf(vfm.model, folder, model_args=args, safe_serialization=True)
    from_folder = create_vfm(folder)
    assert from_file.pretrained == path and from_folder.kind == "dinov2-reg"
    x = torch.randn(1, 3, 32, 32)
    for other in (from_file, from_folder):
        assert torch.equal(other.features(x), vfm.features(x))
