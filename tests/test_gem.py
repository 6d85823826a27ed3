"""GEM against an independent plain-loop implementation of the paper's formulas, and the equivalences
that must hold (depth 0 is the base model, batching changes nothing, padding is cropped exactly)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gemseg
from gemseg.config import GEMConfig
from gemseg.gem import gem_tokens, self_self_attention

from conftest import library_trunk, raw_block

torch.set_grad_enabled(False)


# ---------------------------------------------------------------------------------------------
# an independent implementation: the backends' own weights, explicit loops over images and heads
# ---------------------------------------------------------------------------------------------
def _raw_block(backbone, i):
    """(ln_1, Wq, bq, Wk, bk, Wv, bv, out_proj, ls_1, ln_2, mlp, ls_2, heads) read off the third-party block."""
    ln_1, (Wq, bq), (Wk, bk), (Wv, bv), *rest = raw_block(backbone, i)
    return (ln_1, Wq, bq, Wk, bk, Wv, bv, *rest)


def _naive_block(backbone, i, x_ori, x_gem, cfg: GEMConfig | None):
    """One block for one image: x_ori, x_gem [N, C]. cfg None: plain block."""
    ln_1, Wq, bq, Wk, bk, Wv, bv, out_proj, ls_1, ln_2, mlp, ls_2, H = _raw_block(backbone, i)
    h = ln_1(x_ori)
    N, C = h.shape
    d = C // H
    q, k, v = h @ Wq.T + bq, h @ Wk.T + bk, h @ Wv.T + bv
    heads_ori, heads_gem = [], []
    if cfg is not None:
        t = cfg.temperature if cfg.temperature is not None else h.norm(dim=-1).mean() * d ** -0.5
    for j in range(H):
        sl = slice(j * d, (j + 1) * d)
        qj, kj, vj = q[:, sl], k[:, sl], v[:, sl]
        heads_ori.append(torch.softmax(qj @ kj.T / math.sqrt(d), dim=-1) @ vj)
        if cfg is None:
            continue
        outs = []
        for name in cfg.projections:
            xs = {"q": qj, "k": kj, "v": vj}[name]
            for _ in range(cfg.iterations):
                if cfg.l2_normalize:
                    xs = xs / xs.norm(dim=-1, keepdim=True)
                xs = torch.softmax(t * xs @ xs.T, dim=-1) @ xs
            if cfg.l2_normalize:
                xs = xs / xs.norm(dim=-1, keepdim=True)
            outs.append(torch.softmax(t * xs @ xs.T, dim=-1) @ vj)
        heads_gem.append(sum(outs) / len(outs))
    new_ori = x_ori + ls_1(out_proj(torch.cat(heads_ori, dim=-1)))
    new_ori = new_ori + ls_2(mlp(ln_2(new_ori)))
    if cfg is None:
        return new_ori, None
    new_gem = x_gem + ls_1(out_proj(torch.cat(heads_gem, dim=-1)))
    if cfg.gem_mlp:
        new_gem = new_gem + ls_2(mlp(ln_2(new_gem)))
    return new_ori, new_gem


def naive_gem(backbone, images, cfg: GEMConfig, *, per_layer: bool = False):
    """[B, N, D] GEM tokens and original tokens, image by image; with ``per_layer`` instead
    ``{"gem": [...], "ori": [...]}``, ``head`` of each block's output on each path."""
    outs_gem, outs_ori, layers = [], [], {"gem": [], "ori": []}
    L = len(backbone.blocks)
    for img in images:
        x = backbone.embed(img[None])[0]
        x_gem = None
        per_image = {"gem": [], "ori": []}
        for i in range(L):
            in_gem = i >= L - cfg.num_blocks
            if in_gem and x_gem is None:
                x_gem = x
            x, x_gem = _naive_block(backbone, i, x, x_gem, cfg if in_gem else None)
            per_image["ori"].append(backbone.head(x[None])[0])
            per_image["gem"].append(backbone.head((x_gem if x_gem is not None else x)[None])[0])
        outs_ori.append(per_image["ori"][-1])
        outs_gem.append(per_image["gem"][-1])
        for p in layers:
            layers[p].append(per_image[p])
    if per_layer:  # per path: L tensors [B, N, D]
        return {p: [torch.stack([img[i] for img in layers[p]]) for i in range(L)] for p in layers}
    return torch.stack(outs_gem), torch.stack(outs_ori)


CONFIGS = [
    GEMConfig(depth=3),
    GEMConfig(depth=5, iterations=2),
    GEMConfig(depth=4, iterations=0, temperature=0.7),
    GEMConfig(depth=2, projections=("k",)),
    GEMConfig(depth=4, projections=("q", "v"), l2_normalize=False, temperature=0.05),
    GEMConfig(depth=3, gem_mlp=True, iterations=3),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"d{c.depth}i{c.iterations}t{c.temperature}"
                         f"{''.join(c.projections)}{'' if c.l2_normalize else 'noL2'}{'mlp' if c.gem_mlp else ''}")
def test_gem_matches_plain_loop_formulas(backbone, cfg):
    images = torch.randn(2, 3, 40, 48)  # 5x6 patch grid: resampled, non-square position embeddings
    gem, ori = gem_tokens(backbone, images, cfg, return_ori=True)
    ref_gem, ref_ori = naive_gem(backbone, images, cfg)
    assert gem.shape == (2, backbone.num_prefix_tokens + 5 * 6, backbone.embed_dim)
    assert torch.isfinite(gem).all()
    assert torch.allclose(gem, ref_gem, atol=1e-5, rtol=1e-4), (gem - ref_gem).abs().max()
    assert torch.allclose(ori, ref_ori, atol=1e-5, rtol=1e-4), (ori - ref_ori).abs().max()
    # the GEM path really differs from the original path
    assert (gem - ori).abs().max() > 1e-3


def _library_forward_tokens(backbone, images):
    """The base model's own blocks (their own forward, in their own tensor layout) -> head tokens."""
    return backbone.head(library_trunk(backbone, images, len(backbone.blocks)))


@pytest.mark.parametrize("cfg", [GEMConfig(depth=3), GEMConfig(depth=5, iterations=2, gem_mlp=True),
                                 GEMConfig(depth=0)], ids=["d3", "d5i2mlp", "d0"])
def test_intermediates_are_every_blocks_output_on_both_paths(backbone, cfg):
    images = torch.randn(2, 3, 32, 40)
    gem, ori, layers = gem_tokens(backbone, images, cfg, return_intermediates=True)
    ref = naive_gem(backbone, images, cfg, per_layer=True)
    L, first = len(backbone.blocks), len(backbone.blocks) - cfg.num_blocks
    for path in ("gem", "ori"):
        assert len(layers[path]) == L
        for i, (ours, theirs) in enumerate(zip(layers[path], ref[path])):
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4), (path, i, (ours - theirs).abs().max())
    assert all(layers["gem"][i] is layers["ori"][i] for i in range(first))  # one path before the first GEM block
    if cfg.num_blocks:
        assert (layers["gem"][-1] - layers["ori"][-1]).abs().max() > 1e-3
    # the last entries are the plain call's outputs, bit for bit (the same kernels on the same inputs)
    plain_gem, plain_ori = gem_tokens(backbone, images, cfg, return_ori=True)
    assert gem is layers["gem"][-1] and torch.equal(gem, plain_gem) and torch.equal(ori, plain_ori)


def test_one_depth_check_guards_every_entry_point(backbone):
    from gemseg.analysis import layer_tokens

    images = torch.randn(1, 3, 32, 32)
    too_deep = GEMConfig(depth=len(backbone.blocks) + 2)
    for call in (lambda: gem_tokens(backbone, images, too_deep),
                 lambda: gem_tokens(backbone, images, too_deep, return_intermediates=True),
                 lambda: layer_tokens(backbone, images, too_deep, path="ori")):
        with pytest.raises(ValueError, match=f"use depth <= {len(backbone.blocks) + 1}"):
            call()
    assert len(gem_tokens(backbone, images, GEMConfig(depth=len(backbone.blocks) + 1))) == 2
    for method in ("gem", "vv"):  # the methods that declare they read depth are refused when built
        with pytest.raises(ValueError, match="use depth <="):
            gemseg.GEMModel(backbone, config=too_deep, method=method)
    assert gemseg.GEMModel(backbone, config=too_deep, method="clip").method == "clip"  # reads no depth


@pytest.mark.parametrize("depth", [0, 1])
def test_depth_that_modifies_no_block_is_the_base_model(backbone, depth):
    images = torch.randn(2, 3, 32, 32)
    model = gemseg.GEMModel(backbone, config=GEMConfig(depth=depth))
    text = model.encode_text(["cat", "dog", "a red car"])
    sims = model.heatmaps(images, text)
    prefix = backbone.num_prefix_tokens
    base = F.normalize(_library_forward_tokens(backbone, images)[:, prefix:], dim=-1)  # (B, 16, D)
    base_sims = torch.einsum("bnd,pd->bpn", base, text).reshape(2, 3, 4, 4)
    base_sims = F.interpolate(base_sims, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(sims, base_sims, atol=1e-5)
    # and the original path of a real GEM model is that same computation; it runs beside the GEM path,
    # so its kernels may be chosen differently (threads, batch layout): float32 rounding, 1e-6
    deep = gemseg.GEMModel(backbone, config=GEMConfig(depth=4))
    torch.testing.assert_close(deep.encode_image(images, return_ori=True), model.encode_image(images),
                               atol=1e-6, rtol=1e-5)


def test_batch_and_prompt_lists_are_consistent(backbone):
    model = gemseg.GEMModel(backbone, config=GEMConfig(depth=3))
    images = torch.randn(3, 3, 32, 40)
    batch = model.heatmaps(images, ["cat", "dog"])
    singles = torch.cat([model.heatmaps(images[i:i + 1], ["cat", "dog"]) for i in range(3)])
    assert torch.allclose(batch, singles, atol=1e-5)
    per_image = model.heatmaps(images, [["cat", "dog"], ["dog", "cat"], ["dog", "dog"]])
    assert torch.allclose(per_image[0], batch[0], atol=1e-6)
    assert torch.allclose(per_image[1], batch[1].flip(0), atol=1e-6)
    assert torch.allclose(per_image[2, 0], batch[2, 1], atol=1e-6)
    emb = model.encode_text(["cat", "dog"])
    # precomputed embeddings are normalized once more inside heatmaps, so the last bits may differ from the
    # prompt path (seen on a 2-core machine with the hf backend): float32 rounding of unit vectors, 1e-6
    torch.testing.assert_close(model.heatmaps(images, emb), batch, atol=1e-6, rtol=1e-5)
    seen = []
    encode = backbone.encode_text
    backbone.encode_text = lambda texts: seen.append(list(texts)) or encode(texts)
    try:
        model.heatmaps(images, [["cat", "dog"], ["dog", "cat"], ["dog", "dog"]])
    finally:
        del backbone.encode_text
    assert seen == [["a photo of a cat.", "a photo of a dog."]]  # each distinct prompt encoded once


def test_sizes_that_are_not_patch_multiples_are_padded_then_cropped(backbone):
    model = gemseg.GEMModel(backbone, config=GEMConfig(depth=3))
    images = torch.randn(1, 3, 37, 45)  # patch 8: padded to 40 x 48
    maps = model.heatmaps(images, ["cat"])
    assert maps.shape == (1, 1, 37, 45)
    padded = F.pad(images, (0, 3, 0, 3))
    assert torch.allclose(maps, model.heatmaps(padded, ["cat"])[..., :37, :45], atol=1e-6)
    assert model.encode_image(images).shape[-2:] == (5, 6)


def test_normalize_is_per_map_min_max(backbone):
    model = gemseg.GEMModel(backbone, config=GEMConfig(depth=2))
    maps = model.heatmaps(torch.randn(2, 3, 32, 32), ["cat", "dog"], normalize=True)
    flat = maps.flatten(2)
    assert torch.allclose(flat.min(-1).values, torch.zeros(2, 2), atol=1e-6)
    assert torch.allclose(flat.max(-1).values, torch.ones(2, 2), atol=1e-6)
    assert torch.equal(gemseg.min_max(torch.ones(1, 1, 3, 3)), torch.zeros(1, 1, 3, 3))


def test_self_self_attention_scalar_and_per_image_temperature_agree():
    q, k, v = (torch.randn(2, 3, 7, 4) for _ in range(3))
    a = self_self_attention(q, k, v, inv_temp=torch.tensor([0.8, 0.8]), iterations=2)
    b = self_self_attention(q, k, v, inv_temp=0.8, iterations=2)
    assert torch.allclose(a, b, atol=1e-6)
    c = self_self_attention(q, k, v, inv_temp=torch.tensor([0.8, 3.0]), iterations=2)
    assert torch.allclose(c[0], b[0], atol=1e-6) and not torch.allclose(c[1], b[1], atol=1e-3)


def test_templates_are_averaged_after_normalization(backbone):
    model = gemseg.GEMModel(backbone, config=GEMConfig(depth=2))
    t1, t2 = "a photo of a {}.", "a drawing of the {label}"
    both = model.encode_text(["cat"], templates=[t1, t2])
    e1 = model.encode_text(["cat"], templates=[t1])
    e2 = model.encode_text(["cat"], templates=["a drawing of the {}"])
    assert torch.allclose(both, F.normalize(e1 + e2, dim=-1), atol=1e-6)
    assert torch.allclose(both.norm(dim=-1), torch.ones(1))


def test_bf16_autocast_runs_close_to_fp32(backbone):
    images = torch.randn(1, 3, 32, 32)
    fp32 = gemseg.GEMModel(backbone, config=GEMConfig(depth=3)).heatmaps(images, ["cat", "dog"])
    bf16 = gemseg.GEMModel(backbone, config=GEMConfig(depth=3), precision="bf16").heatmaps(images, ["cat", "dog"])
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (bf16 - fp32).abs().max() < 0.1
