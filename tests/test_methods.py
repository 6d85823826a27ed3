"""Each training-free method against an independent computation of its defining formula on both backends
(the third-party blocks' own forward for the trunk, their raw weights and explicit softmaxes for the
last block), plus the properties that set the methods apart and the registry/CLI plumbing."""
from __future__ import annotations

import argparse
import functools
import math
import warnings

import pytest
import torch

import gemseg
from gemseg.config import GEMConfig
from gemseg.gem import gem_tokens
from gemseg.methods import METHODS, get_method, list_methods, neighbourhood_bias, register_method
from gemseg.methods import baselines

from conftest import library_trunk, raw_block, raw_head

torch.set_grad_enabled(False)

CFG = GEMConfig(depth=3)  # the tiny models have 4 blocks; the default depth 7 needs 6
BUILTIN = ("gem", "clip", "maskclip", "maskclip-vproj", "vv", "sclip", "clearclip", "naclip")


@pytest.fixture(autouse=True)
def _quiet_ignored_knobs():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="method .* ignores the GEM setting")
        yield


# ---------------------------------------------------------------------------------------------
# independent pieces: the library's own blocks, raw weights, explicit per-head loops
# ---------------------------------------------------------------------------------------------
def _library_trunk(backbone, images, upto):
    return library_trunk(backbone, images, upto)


def _raw_last(backbone):
    """(ln_1, (Wq, bq), (Wk, bk), (Wv, bv), out_proj, ln_2, mlp, heads, head_fn) of the last block."""
    ln_1, q, k, v, out_proj, _, ln_2, mlp, _, heads = raw_block(backbone, len(backbone.blocks) - 1)
    return ln_1, q, k, v, out_proj, ln_2, mlp, heads, raw_head(backbone)


def _reference(backbone, images, kind, bias=None):
    """The modified last block of ``kind``, image by image and head by head, then the head. [B, N, D]"""
    ln_1, (Wq, bq), (Wk, bk), (Wv, bv), out_proj, ln_2, mlp, H, head = _raw_last(backbone)
    X = _library_trunk(backbone, images, len(backbone.blocks) - 1)
    outs = []
    for x in X:
        h = ln_1(x)
        N, C = h.shape
        d = C // H
        q, k, v = h @ Wq.T + bq, h @ Wk.T + bk, h @ Wv.T + bv
        heads = []
        for j in range(H):
            sl = slice(j * d, (j + 1) * d)
            qj, kj, vj = q[:, sl], k[:, sl], v[:, sl]
            if kind in ("maskclip", "maskclip-vproj"):
                heads.append(vj)
            elif kind == "clearclip":
                heads.append(torch.softmax(qj @ qj.T / math.sqrt(d), -1) @ vj)
            elif kind == "sclip":
                heads.append((torch.softmax(qj @ qj.T / math.sqrt(d), -1)
                              + torch.softmax(kj @ kj.T / math.sqrt(d), -1)) @ vj)
            elif kind == "naclip":
                heads.append(torch.softmax(kj @ kj.T / math.sqrt(d) + bias, -1) @ vj)
            elif kind == "vv":
                heads.append(torch.softmax(vj @ vj.T / math.sqrt(d), -1) @ vj)
        y = out_proj(torch.cat(heads, dim=-1))
        if kind in ("sclip", "vv", "maskclip"):  # residual kept
            y = x + y
        if kind in ("sclip", "maskclip"):  # and the MLP
            y = y + mlp(ln_2(y))
        outs.append(head(y))
    return torch.stack(outs)


def _hand_window(gh, gw, std, prefix):
    N = prefix + gh * gw
    w = torch.zeros(N, N)
    for a in range(gh * gw):
        for b in range(gh * gw):
            (ra, ca), (rb, cb) = divmod(a, gw), divmod(b, gw)
            w[prefix + a, prefix + b] = math.exp(-((ra - rb) ** 2 + (ca - cb) ** 2) / (2 * std ** 2))
    return w


# ---------------------------------------------------------------------------------------------
# formulas
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["maskclip", "maskclip-vproj", "clearclip", "sclip"])
def test_last_block_methods_match_their_formulas(backbone, kind):
    images = torch.randn(2, 3, 40, 48)  # 5x6 grid, resampled position embeddings
    tokens, _ = get_method(kind)(backbone, images, CFG)
    ref = _reference(backbone, images, kind)
    assert tokens.shape == (2, backbone.num_prefix_tokens + 5 * 6, backbone.embed_dim)
    assert torch.allclose(tokens, ref, atol=1e-5, rtol=1e-4), (tokens - ref).abs().max()


def test_naclip_matches_its_formula_with_the_hand_computed_window(backbone):
    images = torch.randn(2, 3, 40, 48)
    tokens, _ = get_method("naclip")(backbone, images, CFG)
    ref = _reference(backbone, images, "naclip", bias=_hand_window(5, 6, 5.0, prefix=backbone.num_prefix_tokens))
    assert torch.allclose(tokens, ref, atol=1e-5, rtol=1e-4), (tokens - ref).abs().max()
    # a narrower window is a different method, and it is what std= selects
    narrow, _ = baselines.naclip_tokens(backbone, images, CFG, std=0.7)
    ref_narrow = _reference(backbone, images, "naclip", bias=_hand_window(5, 6, 0.7, prefix=backbone.num_prefix_tokens))
    assert torch.allclose(narrow, ref_narrow, atol=1e-5, rtol=1e-4)
    assert (narrow - tokens).abs().max() > 1e-4


def test_vv_is_a_value_value_path_over_the_last_depth_minus_one_blocks(backbone):
    images = torch.randn(2, 3, 32, 40)
    tokens, _ = get_method("vv")(backbone, images, GEMConfig(depth=2))  # only the last block
    ref = _reference(backbone, images, "vv")
    assert torch.allclose(tokens, ref, atol=1e-5, rtol=1e-4), (tokens - ref).abs().max()
    # deeper: exactly GEM restricted to v, no iterations, no L2, temperature d**-0.5
    d = backbone.width // backbone.blocks[-1].num_heads
    as_gem = GEMConfig(depth=4, projections=("v",), iterations=0, l2_normalize=False, temperature=d ** -0.5)
    deep, _ = get_method("vv")(backbone, images, GEMConfig(depth=4))
    assert torch.allclose(deep, gem_tokens(backbone, images, as_gem)[0], atol=1e-6)


def test_neighbourhood_bias_is_naclips_gaussian_window():
    std = 1.5
    w = neighbourhood_bias((3, 4), std=std, num_prefix_tokens=1)
    assert torch.allclose(w, _hand_window(3, 4, std, prefix=1), atol=1e-6)
    assert w.shape == (13, 13)
    assert torch.equal(w[0], torch.zeros(13)) and torch.equal(w[:, 0], torch.zeros(13))  # class token: none
    assert torch.allclose(w[1:, 1:].diagonal(), torch.ones(12))
    assert torch.allclose(w, w.T)
    # patch (0, 0) -> right neighbour, lower neighbour, diagonal neighbour
    assert math.isclose(w[1, 2].item(), math.exp(-1 / (2 * std ** 2)), rel_tol=1e-6)
    assert math.isclose(w[1, 5].item(), math.exp(-1 / (2 * std ** 2)), rel_tol=1e-6)
    assert math.isclose(w[1, 6].item(), math.exp(-2 / (2 * std ** 2)), rel_tol=1e-6)
    assert neighbourhood_bias((2, 2), num_prefix_tokens=0).shape == (4, 4)
    with pytest.raises(ValueError, match="std"):
        neighbourhood_bias((2, 2), std=0)


# ---------------------------------------------------------------------------------------------
# defining properties
# ---------------------------------------------------------------------------------------------
def test_clip_is_gem_with_depth_zero_and_the_base_model(backbone):
    images = torch.randn(2, 3, 32, 40)
    clip, ori = get_method("clip")(backbone, images, CFG, return_ori=True)
    assert torch.equal(clip, ori)
    assert torch.allclose(clip, gem_tokens(backbone, images, GEMConfig(depth=0))[0], atol=1e-6)
    L = len(backbone.blocks)
    last = _library_trunk(backbone, images, L)
    assert torch.allclose(clip, _raw_last(backbone)[-1](last), atol=1e-5)


@pytest.mark.parametrize("kind,residual", [("maskclip", True), ("maskclip-vproj", False), ("clearclip", False),
                                           ("naclip", False), ("sclip", True)])
def test_which_last_blocks_drop_the_residual_stream(backbone, kind, residual):
    """Without the residual, a block's output depends on x only through ln_1(x), which does not see
    the scale of x; with it, scaling x changes the output."""
    blk = backbone.blocks[-1]
    x = _library_trunk(backbone, torch.randn(1, 3, 32, 32), len(backbone.blocks) - 1)
    fn = {"maskclip": baselines.maskclip_block, "maskclip-vproj": baselines.maskclip_vproj_block,
          "clearclip": baselines.clearclip_block,
          "sclip": baselines.sclip_block,
          "naclip": functools.partial(baselines.naclip_block, bias=neighbourhood_bias(
              (4, 4), num_prefix_tokens=backbone.num_prefix_tokens))}[kind]
    y, y_scaled = fn(blk, x), fn(blk, 3.0 * x)
    if residual:
        assert (y - y_scaled).abs().max() > 1e-2
    else:
        assert torch.allclose(y, y_scaled, atol=1e-4), (y - y_scaled).abs().max()


@pytest.mark.parametrize("block", [baselines.maskclip_block, baselines.maskclip_vproj_block])
def test_maskclip_tokens_do_not_mix(backbone, block):
    """Neither MaskCLIP has attention: a patch's token depends on no other token of the last block input."""
    blk = backbone.blocks[-1]
    x = _library_trunk(backbone, torch.randn(1, 3, 32, 32), len(backbone.blocks) - 1)
    x2 = x.clone()
    x2[:, 5:] = torch.randn_like(x2[:, 5:])
    y, y2 = block(blk, x), block(blk, x2)
    assert torch.allclose(y[:, :5], y2[:, :5], atol=1e-6)
    assert not torch.allclose(baselines.clearclip_block(blk, x)[:, :5], baselines.clearclip_block(blk, x2)[:, :5])


def test_the_two_maskclips_differ(backbone):
    images = torch.randn(1, 3, 32, 32)
    original, _ = get_method("maskclip")(backbone, images, CFG)
    vproj, _ = get_method("maskclip-vproj")(backbone, images, CFG)
    cos = torch.nn.functional.cosine_similarity(original, vproj, dim=-1)
    assert cos.min() < 0.999, cos


@pytest.mark.parametrize("name", BUILTIN)
def test_every_method_runs_in_the_model_api(backbone, name):
    model = gemseg.GEMModel(backbone, config=CFG, method=name)
    images = torch.randn(2, 3, 37, 50)  # padded to 40x56: a 5x7 grid
    sims = model.heatmaps(images, ["a cat", "a dog", "grass"])
    assert sims.shape == (2, 3, 37, 50) and torch.isfinite(sims).all()
    feats = model.encode_image(images)
    assert feats.shape == (2, backbone.embed_dim, 5, 7)
    # the original path is the unmodified encoder for every method
    base = gemseg.GEMModel(backbone, config=CFG, method="clip").encode_image(images)
    assert torch.allclose(model.encode_image(images, return_ori=True), base, atol=1e-5)
    assert model.with_config(depth=2).method == name


def test_methods_differ_from_each_other(backbone):
    images = torch.randn(1, 3, 32, 32)
    outs = {n: METHODS[n](backbone, images, CFG)[0] for n in BUILTIN}
    for a in BUILTIN:
        for b in BUILTIN:
            if a < b:
                assert (outs[a] - outs[b]).abs().max() > 1e-4, (a, b)


def test_gem_settings_a_method_ignores_warn(backbone):
    images = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        METHODS["clearclip"](backbone, images, GEMConfig(depth=3, iterations=2))
        METHODS["vv"](backbone, images, GEMConfig(depth=3))  # vv reads depth
        METHODS["clearclip"](backbone, images, GEMConfig())
        METHODS["gem"](backbone, images, GEMConfig(depth=3, iterations=2, gem_mlp=True))  # gem reads them all
    messages = [str(w.message) for w in caught]
    assert messages == ["method 'clearclip' ignores the GEM setting(s) depth, iterations"]


def test_the_declared_settings_drive_the_warning(backbone):
    images = torch.randn(1, 3, 32, 32)
    assert {n: METHODS[n].uses for n in ("gem", "vv", "clip")} == {
        "gem": ("depth", "iterations", "temperature", "projections", "l2_normalize", "gem_mlp"),
        "vv": ("depth",), "clip": ()}
    cfg = GEMConfig(depth=3, iterations=2, l2_normalize=False)
    try:
        register_method("gem-depth-only", gem_tokens, uses=("depth", "l2_normalize"))
        register_method("undeclared", baselines.clip_tokens)  # uses=None: nothing is warned about
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            declared, _ = get_method("gem-depth-only")(backbone, images, cfg)
            get_method("undeclared")(backbone, images, cfg)
        assert [str(w.message) for w in caught] == ["method 'gem-depth-only' ignores the GEM setting(s) iterations"]
        assert torch.equal(declared, gem_tokens(backbone, images, cfg)[0])  # the warning does not change results
        assert get_method("undeclared").ignored(cfg) == [] and get_method("undeclared").uses is None
    finally:
        METHODS.pop("gem-depth-only", None)
        METHODS.pop("undeclared", None)
    with pytest.raises(ValueError, match="unknown GEM setting"):
        register_method("typo", gem_tokens, uses=("dept",))
    assert "typo" not in METHODS


# ---------------------------------------------------------------------------------------------
# registry, factory, CLI
# ---------------------------------------------------------------------------------------------
def test_registry_lists_gets_and_registers():
    assert list_methods()[:len(BUILTIN)] == list(BUILTIN)
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from gem, clip"):
        get_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method("gem", gem_tokens)
    with pytest.raises(TypeError):
        register_method("x", 3)
    try:
        register_method("naclip-narrow", functools.partial(baselines.naclip_tokens, std=1.0))
        method = get_method("naclip-narrow")
        assert method.fn.keywords == method.keywords == {"std": 1.0}  # the function's attributes read through
        assert method.uses is None and method.needs == ()
    finally:
        METHODS.pop("naclip-narrow", None)


def test_create_model_and_cli_select_the_method(tiny_model_files):
    from gemseg.cli.common import add_model_args, model_kwargs

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    args = parser.parse_args(["--model", "x.json", "--method", "clearclip", "--device", "cpu"])
    assert model_kwargs(args)["method"] == "clearclip"
    assert model_kwargs(parser.parse_args(["--model", "x.json", "--device", "cpu"]))["method"] == "gem"
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "nope"])
    if "open_clip" not in tiny_model_files:
        pytest.skip("open_clip_torch not installed")
    cfg, ckpt = tiny_model_files["open_clip"]
    model = gemseg.create_model(cfg, checkpoint=ckpt, depth=3, method="naclip")
    assert model.method == "naclip"
    with pytest.raises(ValueError, match="unknown method"):
        gemseg.create_model(cfg, checkpoint=ckpt, depth=3, method="nope")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_method_under_bf16_autocast_stays_close_to_fp32(backbone, name):
    images = torch.randn(2, 3, 40, 48)
    fp32 = gemseg.GEMModel(backbone, config=CFG, method=name).encode_image(images)
    bf16 = gemseg.GEMModel(backbone, config=CFG, method=name, precision="bf16").encode_image(images)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (fp32 * bf16).sum(dim=1).min() > 0.99  # cosine similarity of every patch embedding
