"""ResCLIP on GEM's path (``gem+resclip``, ``vv+resclip``) on every tiny backbone against a plain
re-computation: raw q/k/v weights, per-head loops, GEM's maps formed explicitly per projection (its
iterations, then ``softmax(t x̂ x̂ᵀ)``), averaged, mixed with RCS and SFR in the last block only (as
docs/methods.md defines them), and the path through the earlier GEM blocks left as GEM runs it. With
ResCLIP's mixing weights at zero (τ = 1, λ = 0) both equal their bare base.

Tolerance: fp32; the references sum in another order than the batched code (and the bare bases run fused
attention), so tokens are compared with atol 1e-5, rtol 1e-4, as tests/test_resclip.py does."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from gemseg.config import GEMConfig
from gemseg.methods import ResCLIPConfig, SelfSelfAttention, get_method, list_methods
from gemseg.pamr import pamr
from gemseg.refiners import pamr_refiner

from conftest import library_trunk, raw_block, raw_head
from test_resclip import ATOL, IMAGES, RTOL, TINY, per_head, ref_labels, ref_rcs, ref_sfr

torch.set_grad_enabled(False)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def gem_like(backbone, base, cfg):
    """The GEM settings of ``base``, written out here (not read from the library): vv is GEM with the
    value projection alone, 0 iterations, no L2 normalization, the fixed temperature d**-0.5, no MLP."""
    if base == "gem":
        return cfg
    d = backbone.width // backbone.blocks[-1].num_heads
    return GEMConfig(depth=cfg.depth, projections=("v",), iterations=0, l2_normalize=False, temperature=d ** -0.5)


def ref_maps(backbone, i, x, cfg, s=None, sfr=None):
    """GEM's effective map per head of block ``i`` on the original path's tokens x [N, C]: [H, N, N], and v."""
    ln_1 = raw_block(backbone, i)[0]
    q, k, v, H = per_head(backbone, i, x)
    d = q.shape[-1] // H
    t = cfg.temperature if cfg.temperature is not None else ln_1(x).norm(dim=-1).mean().item() / math.sqrt(d)
    maps = []
    for j in range(H):
        sl = slice(j * d, (j + 1) * d)
        a = 0
        for p in cfg.projections:
            z = {"q": q, "k": k, "v": v}[p][:, sl]
            z = z / z.norm(dim=-1, keepdim=True) if cfg.l2_normalize else z
            for _ in range(cfg.iterations):
                z = torch.softmax(t * z @ z.T, -1) @ z
                z = z / z.norm(dim=-1, keepdim=True) if cfg.l2_normalize else z
            lg = t * z @ z.T
            if sfr is not None:
                lg = s.sfr_weights[0] * ((1 - s.sfr_weights[1]) * lg + s.sfr_weights[1] * sfr)
            a = a + torch.softmax(lg, -1)
        maps.append(a / len(cfg.projections))
    return torch.stack(maps), v, H


def ref_block(backbone, i, x, x_gem, cfg, s=None, rcs=None, sfr=None):
    """One block of GEM's path: x_gem + O(A v) (+ MLP with gem_mlp), A from x [N, C] with RCS and SFR."""
    _, _, _, _, out_proj, ls_1, ln_2, mlp, ls_2, _ = raw_block(backbone, i)
    a, v, H = ref_maps(backbone, i, x, cfg, s, sfr)
    if rcs is not None:
        a = s.rcs_weights[0] * ((1 - s.rcs_weights[1]) * a + s.rcs_weights[1] * rcs)
    d = v.shape[-1] // H
    y = x_gem + ls_1(out_proj(torch.cat([a[j] @ v[:, j * d:(j + 1) * d] for j in range(H)], -1)))
    return y + ls_2(mlp(ln_2(y))) if cfg.gem_mlp else y


def ref_gem_resclip(backbone, images, cfg, s, text):
    L, p = len(backbone.blocks) - 1, backbone.num_prefix_tokens
    (ph, pw), first = backbone.patch_size, len(backbone.blocks) - (cfg.depth - 1)
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    rcs = ref_rcs(backbone, images, s.rcs_layers) if s.use_rcs else [None] * images.shape[0]
    head, tn = raw_head(backbone), F.normalize(text, dim=-1)
    out = []
    for b in range(images.shape[0]):
        x_gem = library_trunk(backbone, images, first)[b]
        for i in range(first, L):
            x_gem = ref_block(backbone, i, library_trunk(backbone, images, i)[b], x_gem, cfg)
        x = library_trunk(backbone, images, L)[b]
        sfr = None
        if s.use_sfr:
            feats = F.normalize(head(ref_block(backbone, L, x, x_gem, cfg, s, rcs=rcs[b]))[p:], dim=-1)
            logits = F.interpolate((feats @ tn.T).T.reshape(1, -1, gh, gw), size=images.shape[-2:], mode="bilinear",
                                   align_corners=False)
            logits = pamr(images[b:b + 1], logits, steps=s.pamr_steps, dilations=s.pamr_dilations)
            sfr = ref_sfr(ref_labels((logits[0] * s.logit_scale).softmax(0), ph, pw, s.temp_thd), s, p)
        out.append(head(ref_block(backbone, L, x, x_gem, cfg, s, rcs=rcs[b], sfr=sfr)))
    return torch.stack(out)


@pytest.mark.parametrize("base", ["gem", "vv"])
def test_resclip_on_gems_path_matches_its_formula(backbone, base):
    torch.manual_seed(0)
    images, text = torch.randn(*IMAGES), torch.randn(4, backbone.embed_dim)
    cfg = GEMConfig(depth=3)  # blocks 2 and 3 on GEM's path; RCS layer 2 is one of them
    tokens, _ = get_method(f"{base}+resclip")(backbone, images, cfg, settings=TINY, text=text, refine=pamr_refiner)
    ref = ref_gem_resclip(backbone, images, gem_like(backbone, base, cfg), TINY, text)
    assert tokens.shape == (2, backbone.num_prefix_tokens + 30, backbone.embed_dim)
    assert torch.allclose(tokens, ref, atol=ATOL, rtol=RTOL), (tokens - ref).abs().max()


@pytest.mark.parametrize("cfg", [GEMConfig(depth=2), GEMConfig(depth=4, iterations=2, gem_mlp=True, temperature=0.7,
                                                                projections=("q", "v"))])
def test_gem_variants_with_resclip_match_their_formula(clip_backbone, cfg):
    torch.manual_seed(1)
    images, text = torch.randn(*IMAGES), torch.randn(3, clip_backbone.embed_dim)
    tokens, _ = get_method("gem+resclip")(clip_backbone, images, cfg, settings=TINY, text=text, refine=pamr_refiner)
    ref = ref_gem_resclip(clip_backbone, images, cfg, TINY, text)
    assert torch.allclose(tokens, ref, atol=ATOL, rtol=RTOL), (tokens - ref).abs().max()


@pytest.mark.parametrize("base", ["gem", "vv"])
def test_with_resclips_weights_at_zero_it_is_the_base(backbone, base):
    torch.manual_seed(2)
    images, text = torch.randn(*IMAGES), torch.randn(4, backbone.embed_dim)
    cfg = GEMConfig(depth=3)
    zero = ResCLIPConfig(**{**TINY.to_dict(), "rcs_weights": (1.0, 0.0), "sfr_weights": (1.0, 0.0)})  # both modules run
    tokens, ori = get_method(f"{base}+resclip")(backbone, images, cfg, settings=zero, text=text, refine=pamr_refiner,
                                                return_ori=True)
    plain, plain_ori = get_method(base)(backbone, images, cfg, return_ori=True)
    # explicit softmax maps against GEM's fused attention kernels: fp32 rounding only
    assert torch.allclose(tokens, plain, atol=1e-5, rtol=1e-4), (tokens - plain).abs().max()
    assert torch.allclose(ori, plain_ori, atol=1e-5, rtol=1e-4)
    changed, _ = get_method(f"{base}+resclip")(backbone, images, cfg, settings=TINY, text=text, refine=pamr_refiner)
    assert (changed - plain).abs().max() > 1e-4  # the weights matter


def test_gems_path_must_reach_the_last_block_and_the_registry_composes_by_capability(clip_backbone):
    images = torch.randn(1, 3, 40, 48)
    with pytest.raises(ValueError, match="no block on GEM's path"):
        get_method("gem+resclip")(clip_backbone, images, GEMConfig(depth=1), settings=TINY, text=torch.randn(2, 32))
    for base in ("gem", "vv"):
        assert f"{base}+resclip" in list_methods() and isinstance(get_method(base).attention, SelfSelfAttention)
    m = get_method("gem+resclip")
    assert m.uses == get_method("gem").uses and m.needs == ("text", "refine") and m.settings_type is ResCLIPConfig
    assert get_method("vv+resclip").uses == ("depth",)
    with pytest.warns(UserWarning, match="ignores the GEM setting"):  # vv reads only the depth, as vv does
        get_method("vv+resclip")(clip_backbone, images, GEMConfig(depth=3, iterations=2),
                                 settings=ResCLIPConfig(rcs_layers=(1,), use_sfr=False))


def test_the_model_runs_gem_with_resclip(clip_backbone):
    from gemseg.model import GEMModel

    torch.manual_seed(0)
    model = GEMModel(clip_backbone, config=GEMConfig(depth=3), method="gem+resclip", method_settings=TINY)
    images = torch.randn(1, 3, 40, 48)
    text = model.encode_text(["cat", "dog", "sky"])
    maps = model.heatmaps(images, text)
    tokens, _ = get_method("gem+resclip")(clip_backbone, images, GEMConfig(depth=3), settings=TINY, text=text,
                                          refine=pamr_refiner)
    feats = F.normalize(tokens[:, 1:], dim=-1).transpose(1, 2).reshape(1, -1, 5, 6)
    ref = F.interpolate(torch.einsum("bdhw,pd->bphw", feats, text), size=(40, 48), mode="bilinear",
                        align_corners=False)
    assert torch.allclose(maps, ref, atol=1e-5)
    with pytest.raises(ValueError, match="needs 8 blocks"):  # GEM's depth is checked when the model is built
        GEMModel(clip_backbone, config=GEMConfig(depth=9), method="gem+resclip", method_settings=TINY)


def test_a_registered_method_that_declares_its_attention_composes(clip_backbone):
    from gemseg.methods import METHODS, naclip_tokens, register_method

    register_method("my-naclip", naclip_tokens, uses=(), attention=get_method("naclip").attention)
    try:
        assert "my-naclip+resclip" in list_methods()
        images, text = torch.randn(1, 3, 40, 48), torch.randn(3, clip_backbone.embed_dim)
        mine, _ = get_method("my-naclip+resclip")(clip_backbone, images, GEMConfig(), settings=TINY, text=text,
                                                  refine=pamr_refiner)
        ref, _ = get_method("naclip+resclip")(clip_backbone, images, GEMConfig(), settings=TINY, text=text,
                                              refine=pamr_refiner)
        assert torch.equal(mine, ref)  # the same code on the same inputs
        register_method("my-naclip", naclip_tokens, uses=(), overwrite=True)  # now declaring no attention
        assert "my-naclip+resclip" not in list_methods()
        with pytest.raises(ValueError, match="declares its attention"):
            get_method("my-naclip+resclip")
    finally:
        for name in [n for n in METHODS if n.startswith("my-naclip")]:
            del METHODS[name]
