"""CASS (method="cass") against a plain re-implementation of the official computation (MICV-yonsei/CASS
clip/model.py custom_attn / _apply_spectral_strategy, cass_segmentor.py hierarchical_prompt) on every tiny
backbone kind: per-head loops, SVD instead of the eigendecomposition, brute-force head matching, DINO's
keys read with a forward hook on timm's own last block (as dino/vision_transformer.py returns its qkv)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import library_trunk, raw_block, raw_head, tiny_vfm
from gemseg import GEMConfig
from gemseg.methods.cass import CASSConfig, CASSProxy, assignment, cass_tokens, spectral_attention
from gemseg.methods.cass_text import presence_scores, ward_clusters

torch.set_grad_enabled(False)


def cass_dino(seed=1):
    return tiny_vfm("dino", seed=seed, embed_dim=64, num_heads=4)  # CLIP's 4 heads x 16 of the tiny backbones


def brute_assignment(cost):
    n = cost.shape[0]
    return min(itertools.permutations(range(n)), key=lambda p: sum(float(cost[i, p[i]]) for i in range(n)))


def optimal_assignments(cost, tol=1e-9):
    """Every permutation of minimum cost: the 1-D Wasserstein distance of L1-normalized spectra is piecewise
    linear, so two matchings can cost exactly the same (scipy and our Hungarian may break such a tie apart)."""
    n = cost.shape[0]
    total = {p: sum(float(cost[i, p[i]]) for i in range(n)) for p in itertools.permutations(range(n))}
    best = min(total.values())
    return [p for p, t in total.items() if t <= best + tol]


def plain_spectral(k, kd, s: CASSConfig):
    """_apply_spectral_strategy for one image in float64 loops; k, kd [heads, N, d] -> one [heads, N, N]
    per minimum-cost head matching."""
    H, N, d = k.shape
    k, kd = k.double(), kd.double()
    kd = (kd - kd.min()) / (kd.max() - kd.min()) * (k.max() - k.min()) + k.min()  # _normalize_key_range
    A = [k[h] @ k[h].T / math.sqrt(d) for h in range(H)]
    Ad = [kd[h] @ kd[h].T / math.sqrt(d) for h in range(H)]

    def spectrum(M):
        v = sorted(torch.linalg.eigvalsh(M).tolist(), reverse=True)[: s.k_eigen]
        n2 = math.sqrt(sum(x * x for x in v))
        v = [x / n2 for x in v]
        n1 = sum(abs(x) for x in v)
        return [x / n1 for x in v]

    cost = torch.zeros(H, H, dtype=torch.float64)
    for i in range(H):
        for j in range(H):
            cost[i, j] = 1 - sum(abs(a - b) for a, b in zip(sorted(spectrum(Ad[i])), sorted(spectrum(A[j]))))
    return [_combine(A, Ad, cost, col, s) for col in optimal_assignments(cost)]


def _combine(A, Ad, cost, col, s):
    out = []
    for i in range(len(A)):
        j = col[i]
        wd = 1 - cost[i, j]
        U, S, Vh = torch.linalg.svd(Ad[j])
        U, S, V = U[:, : s.rank], S[: s.rank], Vh[: s.rank].T
        if s.scale_singular_values:
            lo, hi = S.min(), S.max()
            S = (S - lo) / (hi - lo) * (1.5 * hi - 0.5 * lo) + 0.5 * lo
        D = U @ torch.diag(S) @ V.T
        D.fill_diagonal_(0)
        D = (D - D.min()) / (D.max() - D.min()) * (A[i].max() - A[i].min()) + A[i].min()
        out.append((wd * s.scale_factor * D + A[i]) / (wd * s.scale_factor + 1))
    return torch.stack(out)


def official_keys(vfm, rgb_square):
    """The last block's keys of timm's DINO through its own forward (a hook on attn.qkv): [heads, N, d]."""
    seen = {}
    handle = vfm.model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: seen.setdefault("qkv", o))
    x = (rgb_square - torch.tensor(vfm.preprocess.mean).view(1, 3, 1, 1)) / torch.tensor(vfm.preprocess.std).view(1, 3, 1, 1)
    vfm.model.forward_features(x)
    handle.remove()
    qkv = seen["qkv"][0]
    N, C3 = qkv.shape
    heads = vfm.model.blocks[-1].attn.num_heads
    return qkv.reshape(N, 3, heads, C3 // 3 // heads)[1:, 1].transpose(0, 1)  # patch keys (heads, N-1, d)


def reference(backbone, vfm, images, s: CASSConfig):
    """custom_attn with the spectral strategy, head by head, then the head: [B, prefix + N, D]."""
    ln_1, (Wq, bq), (Wk, bk), (Wv, bv), out_proj, *_, heads = raw_block(backbone, len(backbone.blocks) - 1)
    head = raw_head(backbone)
    X = library_trunk(backbone, images, len(backbone.blocks) - 1)
    full = library_trunk(backbone, images, len(backbone.blocks))  # the unmodified last block
    p = backbone.num_prefix_tokens
    gh, gw = images.shape[-2] // 8, images.shape[-1] // 8
    mean = torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1)
    side = min(images.shape[-2:])
    rgb = F.interpolate(images * std + mean, size=(side, side), mode="bicubic", antialias=True)  # PIL resize
    window = torch.tensor([[math.exp(-((a // gw - b // gw) ** 2 + (a % gw - b % gw) ** 2) / (2 * s.gaussian_std ** 2))
                            for b in range(gh * gw)] for a in range(gh * gw)])
    outs = []
    for n, x in enumerate(X):
        h = ln_1(x)
        C = h.shape[-1]
        d = C // heads
        k = (h @ Wk.T + bk)[p:].reshape(-1, heads, d).transpose(0, 1)  # (heads, N, d)
        v = (h @ Wv.T + bv)[p:].reshape(-1, heads, d).transpose(0, 1)
        kd = official_keys(vfm, rgb[n:n + 1])  # (heads, side/8 * side/8, d)
        g = side // 8
        kd = F.interpolate(kd.transpose(1, 2).reshape(heads, d, g, g), size=(gh, gw), mode="bilinear")
        kd = kd.reshape(heads, d, -1).transpose(1, 2)
        image = []
        for attn in plain_spectral(k, kd, s):
            attn = attn.float() + window
            o = torch.cat([torch.softmax(attn[j], -1) @ v[j] for j in range(heads)], dim=-1)
            image.append(head(torch.cat([full[n, :p], out_proj(o)])))
        outs.append(image)
    return outs  # per image, one [prefix + N, D] per minimum-cost matching


def test_assignment_is_the_minimum_cost_matching():
    torch.manual_seed(0)
    for n in range(1, 7):
        for _ in range(10):
            cost = torch.rand(n, n)
            col = assignment(cost)
            assert sorted(col) == list(range(n))
            assert math.isclose(sum(float(cost[i, col[i]]) for i in range(n)),
                                sum(float(cost[i, j]) for i, j in enumerate(brute_assignment(cost))), abs_tol=1e-9)


@pytest.mark.parametrize("rescale", [True, False])
def test_spectral_attention_is_the_official_formula(rescale):
    torch.manual_seed(1)
    s = CASSConfig(scale_singular_values=rescale)
    k, kd = torch.randn(4, 30, 16, dtype=torch.float64), torch.randn(4, 30, 16, dtype=torch.float64)
    # float64 throughout; eigh against svd: the largest difference seen is 4e-15
    got = spectral_attention(k, kd, s)
    assert any(torch.allclose(got, want, atol=1e-10) for want in plain_spectral(k, kd, s))


@pytest.mark.openclip  # also under open_clip 2.23 (sequence-first blocks) in scripts/test.sh
def test_cass_tokens_equal_the_official_computation(backbone):
    vfm = cass_dino()
    s = CASSConfig()
    images = torch.randn(2, 3, 32, 48)  # CLIP 4x6 grid; DINO sees the 32x32 square at its native size
    tokens, ori = cass_tokens(backbone, images, GEMConfig(), proxy=CASSProxy(vfm, s), return_ori=True)
    assert tokens.shape == (2, backbone.num_prefix_tokens + 24, backbone.embed_dim)
    # fp32 blocks against fp32/float64 loops: the largest difference seen is 1.4e-6
    for got, wants in zip(tokens, reference(backbone, vfm, images, s)):
        assert any(torch.allclose(got, want, atol=1e-4) for want in wants)
    assert not torch.allclose(tokens[:, backbone.num_prefix_tokens:], ori[:, backbone.num_prefix_tokens:], atol=1e-3)


def test_cass_needs_matching_heads_and_a_vit_proxy(backbone):
    with pytest.raises(ValueError, match="heads x head width"):
        cass_tokens(backbone, torch.randn(1, 3, 32, 32), GEMConfig(), proxy=CASSProxy(tiny_vfm("dino")))
    with pytest.raises(ValueError, match="SAM"):
        CASSProxy(tiny_vfm("sam"))


def test_cass_settings_are_checked():
    for bad in (dict(rank=0), dict(k_eigen=0), dict(gaussian_std=0), dict(mean_vector_weight=1.5)):
        with pytest.raises(ValueError):
            CASSConfig(**bad)
    with pytest.raises(TypeError):
        CASSConfig(scale_factor="10")


def test_ward_clusters_cut_the_lance_williams_dendrogram():
    # three unit vectors with cosine distances d01 = 0.1, d02 = 0.5, d12 = 0.4: 0 and 1 merge at 0.1, then
    # Ward's update puts 2 at sqrt((2 * 0.5² + 2 * 0.4² - 0.1²) / 3) = sqrt(0.27) = 0.5196 from them
    gram = torch.tensor([[1.0, 0.9, 0.5], [0.9, 1.0, 0.6], [0.5, 0.6, 1.0]], dtype=torch.float64)
    text = torch.linalg.cholesky(gram)
    assert ward_clusters(text, 0.05) == [0, 1, 2]
    assert ward_clusters(text, 0.3) == [0, 0, 1]
    assert ward_clusters(text, 0.51) == [0, 0, 1]
    assert ward_clusters(text, 0.53) == [0, 0, 0]


def plain_ward(text, threshold):
    """Greedy Ward merging in lists (Lance–Williams on the cosine distances), cut at threshold."""
    Q = text.shape[0]
    d = [[1 - float(text[i] @ text[j]) for j in range(Q)] for i in range(Q)]
    members = {i: [i] for i in range(Q)}
    while len(members) > 1:
        pairs = [(d[a][b], a, b) for a in members for b in members if a < b]
        best, x, y = min(pairs)
        if best > threshold:
            break
        nx, ny = len(members[x]), len(members[y])
        for i in members:
            if i not in (x, y):
                ni = len(members[i])
                v = ((ni + nx) * d[x][i] ** 2 + (ni + ny) * d[y][i] ** 2 - ni * best ** 2) / (nx + ny + ni)
                d[x][i] = d[i][x] = math.sqrt(max(v, 0.0))
        members[x] += members.pop(y)
    groups = sorted(sorted(m) for m in members.values())
    return sorted(groups, key=lambda m: m[0])


def test_ward_clusters_match_plain_greedy_merging():
    torch.manual_seed(3)
    text = F.normalize(torch.randn(14, 6, dtype=torch.float64), dim=-1)
    for threshold in (0.0, 0.3, 0.6, 0.9, 1.5, 3.0):
        labels = ward_clusters(text, threshold)
        groups = [[q for q in range(14) if labels[q] == c] for c in range(max(labels) + 1)]
        assert groups == plain_ward(text, threshold)


def test_presence_scores_follow_hierarchical_prompt():
    torch.manual_seed(2)
    feats = F.normalize(torch.randn(2, 8, 3, 4), dim=1)
    glob = F.normalize(torch.randn(2, 8), dim=-1)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    s = CASSConfig(global_semantics_weight=0.3, mean_vector_weight=0.05)
    clusters = [0, 1, 0, 2, 1]
    out = presence_scores(feats, glob, text, s, clusters)
    for b in range(2):
        f = feats[b].reshape(8, -1).T  # (12, 8)
        g = glob[b] @ text.T
        t = text.clone()
        for c in (0, 1, 2):  # the most present query of each cluster moves towards its two best patches
            members = [q for q in range(5) if clusters[q] == c]
            q = max(members, key=lambda m: float(g[m]))
            best = sorted(range(12), key=lambda i: -float(f[i] @ text[q]))[:2]
            m = F.normalize(f[best].mean(0), dim=0)
            t[q] = F.normalize(0.95 * text[q] + 0.05 * m, dim=0)
        want = 0.7 * (f @ t.T) + 0.3 * g
        assert torch.allclose(out[b].reshape(5, -1).T, want, atol=1e-6)  # fp32, same operations
    plain = presence_scores(feats, glob, text, CASSConfig())  # both weights 0: plain cosines
    assert torch.allclose(plain, torch.einsum("bdhw,qd->bqhw", feats, text), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# through the model, the factory, the CLI and the evaluation
# ---------------------------------------------------------------------------------------------
def test_model_heatmaps_use_the_presence_prior(backbone):
    from gemseg import GEMModel

    settings = CASSConfig(global_semantics_weight=0.3, mean_vector_weight=0.05, h_threshold=0.5)
    model = GEMModel(backbone, method="cass", proxy=CASSProxy(cass_dino(), settings))
    images = torch.randn(2, 3, 32, 48)
    text = F.normalize(torch.randn(4, backbone.embed_dim), dim=-1)
    if backbone.num_prefix_tokens == 0:  # SigLIP: no class token to read the presence from
        with pytest.raises(ValueError, match="needs a class token"):
            model.heatmaps(images, text)
        return
    sims = model.heatmaps(images, text)
    tokens, _ = cass_tokens(backbone, images, GEMConfig(), proxy=model.proxy)
    tokens = F.normalize(tokens, dim=-1)
    feats = tokens[:, 1:].transpose(1, 2).reshape(2, -1, 4, 6)
    want = F.interpolate(presence_scores(feats, tokens[:, 0], text, settings), size=(32, 48), mode="bilinear")
    assert sims.shape == (2, 4, 32, 48) and torch.allclose(sims, want, atol=1e-5)  # same fp32 operations
    plain = GEMModel(backbone, method="cass", proxy=CASSProxy(cass_dino())).heatmaps(images, text)
    assert not torch.allclose(plain, sims, atol=1e-3)  # the prior changes the maps
    per_image = model.heatmaps(images, text[None].expand(2, -1, -1))  # [B, P, D] text: same maps
    assert torch.allclose(per_image, sims, atol=1e-6)


def test_factory_builds_the_cass_proxy(clip_backbone):
    import warnings

    import gemseg

    gemseg.register_model(f"tiny-cass-{type(clip_backbone).__name__}", lambda **kw: clip_backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random CLIP weights
        model = gemseg.create_model(f"tiny-cass-{type(clip_backbone).__name__}", method="cass", proxy=cass_dino(),
                                    proxy_settings=CASSConfig(rank=5))
    assert isinstance(model.proxy, CASSProxy) and model.proxy.settings.rank == 5
    assert model.with_config(depth=3).proxy is model.proxy
    assert model.encode_image(torch.randn(1, 3, 32, 32)).shape == (1, clip_backbone.embed_dim, 4, 4)
    from gemseg import GEMModel
    from gemseg.methods import ProxyAttention

    with pytest.raises(TypeError, match="takes a CASSProxy"):
        GEMModel(clip_backbone, method="cass", proxy=ProxyAttention(cass_dino()))


def _save_dino(folder):
    import timm.models

    from conftest import TINY_VFM

    timm.models.save_for_hf(cass_dino(seed=5).model, folder, safe_serialization=True,
                            model_args=dict(embed_dim=64, depth=2, num_heads=4, **TINY_VFM["dino"][1]))
    return folder


def test_cli_heatmap_runs_cass(tmp_path, capsys, tiny_model_files):
    from cli_util import model_args, run_cli, run_json, write_image

    folder = _save_dino(str(tmp_path / "vfm"))
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", write_image(tmp_path / "a.png", (40, 30)), "-p", "cat", "-o", out,
                "--method", "cass", "--proxy", folder, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    settings = run_json(out)["settings"]
    assert settings["method"] == "cass" and settings["proxy"] == folder


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_cli_eval_runs_cass_and_records_its_proxy(tmp_path, capsys, tiny_model_files):
    import json

    import eval_data
    from cli_util import run_cli

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    folder = _save_dino(str(tmp_path / "vfm"))
    cfg, ckpt = tiny_model_files["open_clip"]
    r = run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt,
                "--device", "cpu", "--workers", "0", "--no-progress", "--size", "48", "--crop", "32", "--stride",
                "16", "--templates", "single", "--method", "cass", "--proxy", folder, "--out", tmp_path / "out",
                "--proxy-settings", "rank=5,global_semantics_weight=0.1")
    assert r.code == 0, r.err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["model"]["method"] == "cass"
    proxy = result["model"]["proxy"]
    assert proxy["name"] == folder and proxy["rank"] == 5 and proxy["global_semantics_weight"] == 0.1


def test_the_demo_serves_cass_and_refuses_it_without_its_proxy(tmp_path):
    from demo_helpers import png_bytes
    from gemseg import GEMModel
    from gemseg.demo import logic
    from gemseg.methods import ProxyAttention

    from conftest import tiny_open_clip_backbone

    path = tmp_path / "up.png"
    path.write_bytes(png_bytes(40, 32, 0))
    served = GEMModel(tiny_open_clip_backbone(), method="cass", proxy=CASSProxy(cass_dino()))
    kw = dict(size=(32, 32), limits=logic.Limits(max_side=64))
    assert logic.run(served, str(path), "cat, dog", "segmentation", background="none", **kw).segmentation
    proxyclip = GEMModel(served.backbone, method="proxyclip", proxy=ProxyAttention(cass_dino()))
    view = logic.model_for(proxyclip, method="cass")  # a ProxyCLIP server's VFM, re-held in CASS's holder
    assert isinstance(view.proxy, CASSProxy) and view.proxy.vfm is proxyclip.proxy.vfm
    with pytest.raises(logic.DemoError, match="needs a proxy vision model"):
        logic.model_for(GEMModel(served.backbone, method="clip"), method="cass")  # a server without any VFM
    assert logic.model_for(served, method="cass", depth=3).proxy is served.proxy


def test_proxy_settings_on_the_command_line():
    import argparse

    from gemseg.cli.common import add_model_args, model_kwargs, proxy_settings
    from gemseg.methods import ProxyCLIPConfig

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    kw = model_kwargs(parser.parse_args(["--method", "cass", "--device", "cpu", "--proxy-settings",
                                         "global_semantics_weight=0.1, mean_vector_weight=0.03,h_threshold=0.10,"
                                         "scale_singular_values=false,rank=8"]))
    assert kw["proxy_settings"] == CASSConfig(global_semantics_weight=0.1, mean_vector_weight=0.03, h_threshold=0.1,
                                              scale_singular_values=False, rank=8)
    assert proxy_settings("proxyclip", "beta=1.0") == ProxyCLIPConfig(beta=1.0)
    assert proxy_settings("cass", None) is None
    for bad, match in (("cass", "alpha=1"), ("cass", "rank=ten"), ("cass", "scale_singular_values=maybe"),
                       ("gem", "rank=1")):
        with pytest.raises(ValueError, match="--proxy-settings"):
            proxy_settings(bad, match)


def test_the_cass_preset_holds_the_official_protocol_and_method_settings():
    from gemseg.cli.common import proxy_settings
    from gemseg.eval import load_dataset_spec, resolve_protocol
    from gemseg.eval.presets_propagation import CASS_SETTINGS, proxy_settings_text

    p, _ = resolve_protocol("cass", load_dataset_spec("voc21"))
    assert (p.size, p.mode, p.logit_scale, p.prob_threshold, p.pos_embed) == (336, "whole", 40.0, 0.1, "bicubic-scale")
    p, _ = resolve_protocol("cass", load_dataset_spec("cityscapes"))
    assert (p.size, p.mode, p.crop, p.stride, p.prob_threshold) == (560, "slide", 224, 112, None)
    assert set(CASS_SETTINGS) == {"voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k",
                                  "coco_stuff"}
    assert proxy_settings("cass", proxy_settings_text("cass", "voc20")) == CASSConfig(
        global_semantics_weight=0.4, mean_vector_weight=0.02, h_threshold=0.10, scale_singular_values=False)
    assert all("228ecdd8273e" in c.source for d in CASS_SETTINGS.values() for c in d.values())
