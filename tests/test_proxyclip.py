"""ProxyCLIP (method="proxyclip") against a plain-loop re-implementation of the official code
(mc-lan/ProxyCLIP open_clip/transformer.py custom_attn and proxyclip_segmentor.py forward_feature) on tiny
random CLIP and VFM models of every kind."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import gemseg
from conftest import HAS_OPEN_CLIP, TINY_VFM, tiny_open_clip_backbone, tiny_vfm
from gemseg import GEMConfig, GEMModel
from gemseg.methods import ProxyAttention, ProxyCLIPConfig
from gemseg.methods.baselines import trunk
from gemseg.methods.proxyclip import proxy_attention

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="the tiny CLIP model of these tests needs open_clip")
TOL = 1e-5  # fp32; the largest difference seen over all kinds is 2.1e-7


@pytest.fixture(scope="module")
def clip():
    return tiny_open_clip_backbone()  # patch 8, 4 blocks, width 64, 4 heads


def bilinear(img: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """[h, w, C] -> [out_h, out_w, C], bilinear with half-pixel centres (align_corners=False), in loops."""
    h, w, _ = img.shape
    out = img.new_zeros(out_h, out_w, img.shape[-1])
    for oy in range(out_h):
        sy = max((oy + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), h - 1)
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), w - 1)
            x1, lx = min(x0 + 1, w - 1), sx - x0
            out[oy, ox] = ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1])
                           + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))
    return out


def official_vfm_features(vfm, x: torch.Tensor) -> torch.Tensor:
    """The VFM part of forward_feature at the model's native size, through timm's own forward:
    dino/dinov2 get_intermediate_layers(n=1) (final norm, prefix dropped), mae norm(x[:, 1:]), sam
    image_encoder (neck output). [B, C', h, w]."""
    m = vfm.model
    if vfm.kind == "sam":
        return m.forward_features(x)
    t = m.forward_features(x)[:, vfm.num_prefix_tokens:]
    h, w = x.shape[-2] // vfm.patch_size[0], x.shape[-1] // vfm.patch_size[1]
    return t.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def reference(clip, vfm, images, *, beta=1.2, gamma=3.0) -> torch.Tensor:
    """Plain loops over images, tokens and pairs: CLIP's last block with the proxy attention, then ln_post and
    proj, L2-normalized; [B, D, h, w] on the VFM grid. Weights are read from open_clip's own modules."""
    visual = clip.model.visual
    blk = visual.transformer.resblocks[-1]
    C = visual.transformer.width
    w_v, b_v = blk.attn.in_proj_weight[2 * C:], blk.attn.in_proj_bias[2 * C:]
    m = clip.model.visual
    mean = torch.tensor(clip.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.preprocess.std).view(1, 3, 1, 1)
    imgs = (images * std + mean - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    if vfm.input_size is not None:
        imgs = F.interpolate(imgs, size=vfm.input_size, mode="bilinear", align_corners=False)
    feats = official_vfm_features(vfm, imgs)  # (B, C', h, w)
    x = trunk(clip, images)  # tokens entering the last block, (B, 1 + gh*gw, C)
    gh, gw = images.shape[-2] // 8, images.shape[-1] // 8
    B, Cf, h, w = feats.shape
    outs = []
    for b in range(B):
        v = blk.ln_1(x[b]) @ w_v.T + b_v  # (N, C)
        v = bilinear(v[1:].reshape(gh, gw, C), h, w).reshape(h * w, C)
        f = feats[b].reshape(Cf, h * w)
        S = torch.zeros(h * w, h * w)
        for i in range(h * w):
            for j in range(h * w):
                S[i, j] = (f[:, i] @ f[:, j]) / (f[:, i].norm() * f[:, j].norm())
        mu = S.sum() / (h * w) ** 2
        rows = []
        for i in range(h * w):
            logits = [(S[i, j] - mu * beta) * gamma for j in range(h * w)]
            kept = [j for j in range(h * w) if logits[j] >= 0]
            z = torch.stack([logits[j] for j in kept])
            a = torch.exp(z - z.max())
            a = a / a.sum()
            rows.append(sum(a[n] * v[j] for n, j in enumerate(kept)))
        out = blk.attn.out_proj(torch.stack(rows))  # (hw, C): no residual, no MLP
        out = m.ln_post(out) @ m.proj
        outs.append(F.normalize(out, dim=-1).T.reshape(-1, h, w))
    return torch.stack(outs)


@pytest.mark.openclip  # also under open_clip 2.23 (sequence-first blocks) in scripts/test.sh
@pytest.mark.parametrize("kind", sorted(TINY_VFM))
def test_dense_output_equals_the_official_computation(clip, kind):
    vfm = tiny_vfm(kind, seed=1)
    model = GEMModel(clip, method="proxyclip", proxy=ProxyAttention(vfm))
    images = torch.randn(2, 3, 32, 32)  # CLIP: 4x4 grid; the VFM at its own native size and grid
    feats = model.encode_image(images)
    want = reference(clip, vfm, images)
    grid = {"dino": (4, 4), "dinov2": (8, 8), "dinov2-reg": (8, 8), "mae": (4, 4), "sam": (8, 8)}[kind]
    assert feats.shape == (2, clip.embed_dim, *grid) == want.shape
    assert (feats - want).abs().max() < TOL
    # the heatmaps are the cosine maps resized bilinearly to the input, as forward_feature's logits
    text = F.normalize(torch.randn(3, clip.embed_dim), dim=-1)
    sims = model.heatmaps(images, text)
    logits = F.interpolate(torch.einsum("bdhw,pd->bphw", want, text), size=(32, 32), mode="bilinear")
    assert sims.shape == (2, 3, 32, 32) and (sims - logits).abs().max() < TOL


def test_the_settings_change_the_output_and_are_checked(clip):
    vfm = tiny_vfm("dinov2", seed=2)
    images = torch.randn(1, 3, 32, 32)
    base = GEMModel(clip, method="proxyclip", proxy=ProxyAttention(vfm)).encode_image(images)
    other = ProxyAttention(vfm, ProxyCLIPConfig(beta=0.8, gamma=5.0))
    changed = GEMModel(clip, method="proxyclip", proxy=other).encode_image(images)
    assert not torch.allclose(base, changed, atol=1e-4)
    assert torch.allclose(changed, reference(clip, vfm, images, beta=0.8, gamma=5.0), atol=TOL)
    assert ProxyCLIPConfig() == ProxyCLIPConfig(beta=1.2, gamma=3.0, threshold=0.0, layer=-1)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        ProxyCLIPConfig(gamma=0)
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        ProxyAttention(vfm, ProxyCLIPConfig(layer=5))
    with pytest.raises(ValueError, match="SAM's features are its neck output"):
        GEMModel(clip, method="proxyclip", proxy=ProxyAttention(tiny_vfm("sam"), ProxyCLIPConfig(layer=0))
                 ).encode_image(images)


def test_proxy_attention_masks_below_zero_and_never_gives_nan():
    feats = torch.randn(2, 8, 3, 5)
    attn = proxy_attention(feats, beta=1.2, gamma=3.0)
    assert attn.shape == (2, 15, 15) and torch.allclose(attn.sum(-1), torch.ones(2, 15), atol=1e-6)
    f = F.normalize(feats.flatten(2), dim=1)
    s = torch.einsum("bcm,bcn->bmn", f, f)
    s = (s - 1.2 * s.mean(dim=(1, 2), keepdim=True)) * 3.0
    assert torch.equal(attn == 0, s < 0)  # masked exactly where the scaled similarity is negative
    same = torch.ones(1, 4, 2, 2)  # every similarity 1: 1 - 1.2 < 0 masks all (the official code gives NaN)
    assert torch.equal(proxy_attention(same, beta=1.2, gamma=3.0)[0], torch.eye(4))


def test_odd_sizes_pad_to_both_patch_sizes(clip):
    model = GEMModel(clip, method="proxyclip", proxy=ProxyAttention(tiny_vfm("dinov2")))  # patches 8 and 4
    images = torch.randn(1, 3, 30, 43)  # padded to 32x48
    assert model.encode_image(images).shape == (1, clip.embed_dim, 8, 12)
    sims = model.heatmaps(images, torch.randn(2, clip.embed_dim))
    assert sims.shape == (1, 2, 30, 43) and torch.isfinite(sims).all()
    ori = model.encode_image(images, return_ori=True)  # CLIP's own tokens, on CLIP's grid
    assert ori.shape == (1, clip.embed_dim, 4, 6)
    assert torch.allclose(ori, GEMModel(clip, method="clip").encode_image(images), atol=1e-5)


def test_factory_holds_and_shares_the_proxy(clip):
    vfm = tiny_vfm("dino")
    gemseg.register_model("tiny-proxy-clip", lambda **kw: clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random CLIP weights
        model = gemseg.create_model("tiny-proxy-clip", method="proxyclip", proxy=vfm,
                                    proxy_settings=ProxyCLIPConfig(beta=1.0))
    assert model.proxy.vfm is vfm and model.proxy.settings.beta == 1.0
    twin = model.with_config(depth=3)
    assert twin.proxy is model.proxy and twin.method == "proxyclip"
    with pytest.warns(UserWarning, match="method 'gem' uses no proxy VFM"):
        gem = gemseg.create_model("tiny-proxy-clip", proxy=vfm, depth=3)
    assert gem.proxy is None
    with pytest.raises(ValueError, match="needs a proxy VFM"):
        GEMModel(clip, method="proxyclip")
    with pytest.raises(ValueError, match="takes no proxy"):
        GEMModel(clip, method="sclip", proxy=ProxyAttention(vfm))
    with pytest.warns(UserWarning, match="ignores the GEM setting"):
        GEMModel(clip, config=GEMConfig(depth=3), method="proxyclip", proxy=ProxyAttention(vfm)).encode_image(
            torch.randn(1, 3, 32, 32))


def test_protocol_preset_carries_the_official_dataset_values():
    from gemseg.eval import resolve_protocol
    from gemseg.eval.datasets import load_dataset_spec

    p, source = resolve_protocol("proxyclip")
    assert (p.resize, p.size, p.mode, p.crop, p.stride, p.logit_scale, p.prob_threshold) == \
        ("short_side", 336, "slide", 336, 112, 40.0, None)
    assert (p.templates, p.vocabulary, p.interpolation) == ("imagenet80", "synonyms", "bilinear-cv2")
    # mc-lan/ProxyCLIP configs/cfg_*.py and configs/cls_*.txt (its own class files on VOC21, VOC20, COCO-Object)
    want = {"voc21": dict(prob_threshold=0.2, vocabulary="voc21_proxyclip.txt"), "context60": dict(prob_threshold=0.15),
            "coco_object": dict(prob_threshold=0.25, vocabulary="coco_object_proxyclip.txt"), "ade20k": dict(size=448),
            "cityscapes": dict(size=448, crop=224, stride=112), "voc20": dict(vocabulary="voc20_clearclip.txt")}
    for name, values in want.items():
        p, source = resolve_protocol("proxyclip", load_dataset_spec(name))
        for key, value in values.items():
            assert getattr(p, key) == value and source[key] == f"dataset {name}"
    p, _ = resolve_protocol("proxyclip", load_dataset_spec("voc21"), prob_threshold=0.3)
    assert p.prob_threshold == 0.3


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["heatmap", "segment", "eval", "ablate", "serve"])
def test_every_model_command_takes_method_proxyclip_and_proxy(capsys, command):
    from cli_util import run_cli

    r = run_cli(capsys, command, "--help")
    assert r.code == 0 and "--proxy VFM" in r.out and "--proxy-weights" in r.out and "proxyclip" in r.out


def test_heatmap_runs_proxyclip_with_a_local_vfm_folder(tmp_path, capsys, tiny_model_files):
    import timm.models

    from cli_util import model_args, run_cli, run_json, write_image

    vfm = tiny_vfm("dinov2-reg", seed=4)
    folder = str(tmp_path / "vfm")
    timm.models.save_for_hf(vfm.model, folder, safe_serialization=True,
                            model_args=dict(embed_dim=32, depth=2, num_heads=2, **TINY_VFM["dinov2-reg"][1]))
    image = write_image(tmp_path / "a.png", (40, 30))
    out = tmp_path / "out"
    r = run_cli(capsys, "heatmap", image, "-p", "cat", "--save-raw", "-o", out, "--method", "proxyclip",
                "--proxy", folder, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    run = run_json(out)
    assert run["settings"]["method"] == "proxyclip" and run["settings"]["proxy"] == folder


def test_models_lists_the_vfms_in_their_own_group(capsys):
    from cli_util import run_cli

    r = run_cli(capsys, "models", "--backend", "vfm")
    assert r.code == 0
    lines = r.out.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("Vision foundation models"))
    rows = [line.split() for line in lines[title + 1:]]
    assert [row[1] for row in rows] == list(gemseg.backbones.vfm.VFM_MODELS)
    assert all(row[0] == "vfm" for row in rows)
    r = run_cli(capsys, "models", "--backend", "vfm", "--json")
    assert {row["model"] for row in json.loads(r.out)} == set(gemseg.backbones.vfm.VFM_MODELS)


def test_segmenter_runs_the_proxyclip_preset_with_batched_crops(clip):
    import numpy as np

    from gemseg import Segmenter
    from gemseg.eval import load_dataset_spec, resolve_protocol

    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("proxyclip", spec, size=32, crop=32, stride=16, templates="single")
    assert protocol.prob_threshold == 0.2
    model = GEMModel(clip, method="proxyclip", proxy=ProxyAttention(tiny_vfm("dinov2-reg")))
    seg = Segmenter.from_dataset(model, spec, protocol)
    assert seg.rule.prob_threshold == 0.2 and seg.rule.background == 0
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    labels = seg.predict(image, out_size=(40, 56)).labels
    assert labels.shape == (1, 40, 56) and int(labels.min()) >= 0 and int(labels.max()) < 21
    scores = seg.scores(image, out_size=(40, 56))
    assert torch.isfinite(scores).all() and scores.shape[1] == len(seg.queries)


def test_model_kwargs_pass_the_proxy_only_to_proxyclip():
    import argparse

    from gemseg.cli.common import add_model_args, model_kwargs

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    kw = model_kwargs(parser.parse_args(["--method", "proxyclip", "--proxy", "sam-b16", "--device", "cpu"]))
    assert (kw["method"], kw["proxy"], kw["proxy_weights"]) == ("proxyclip", "sam-b16", "pretrained")
    kw = model_kwargs(parser.parse_args(["--method", "proxyclip", "--random-weights", "--device", "cpu"]))
    assert kw["proxy"] is None and kw["proxy_weights"] == "random"  # None: the default proxy, dino-b8
    kw = model_kwargs(parser.parse_args(["--proxy", "sam-b16", "--device", "cpu"]))
    assert "proxy" not in kw and kw["method"] == "gem"


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_cli_eval_with_method_and_preset_proxyclip(tmp_path, capsys, tiny_model_files):
    import timm.models

    import eval_data
    from cli_util import run_cli

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    folder = str(tmp_path / "vfm")
    timm.models.save_for_hf(tiny_vfm("dino", seed=5).model, folder, safe_serialization=True,
                            model_args=dict(embed_dim=32, depth=2, num_heads=2, **TINY_VFM["dino"][1]))
    cfg, ckpt = tiny_model_files["open_clip"]
    r = run_cli(capsys, "eval", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt,
                "--device", "cpu", "--workers", "0", "--no-progress", "--size", "48", "--crop", "32", "--stride",
                "16", "--templates", "single", "--preset", "proxyclip", "--method", "proxyclip", "--proxy", folder,
                "--out", tmp_path / "out")
    assert r.code == 0, r.err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["protocol"]["prob_threshold"] == 0.2 and result["protocol"]["preset"] == "proxyclip"
    assert result["model"]["method"] == "proxyclip"
    assert result["model"]["proxy"] == {"name": folder, "kind": "dino", "pretrained": "local-dir:" + folder,
                                        "beta": 1.2, "gamma": 3.0, "threshold": 0.0, "layer": -1}
