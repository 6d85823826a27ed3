"""Trident (method="trident") against a plain re-implementation of the official code (YuHengsss/Trident
trident.py get_trident_seg/get_windowed_imgs/get_sam_feat, seg_utils/utils.py preprocess_image,
open_clip/transformer.py custom_attn/guidance_attn/get_sam_sim) on tiny random CLIP (every backbone kind),
DINO and SAM models built in code."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import library_trunk, raw_block, raw_head, tiny_vfm
from gemseg import GEMConfig, GEMModel
from gemseg.backbones.sam import create_sam
from gemseg.methods import get_method
from gemseg.methods.trident import (TridentConfig, TridentProxy, sam_guidance, trident_size, trident_tokens,
                                    trident_windows)

TOL = 1e-4  # fp32, tokens of magnitude ~3-4: two softmaxes, a splice average, a row normalization; seen 1.2e-6 (open_clip)


def tiny_sam(seed: int = 0):
    """A random 2-block SAM at 64 x 64 with patch 8 (an 8 x 8 grid), last block global, relative positions
    randomized so that they matter."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vc = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=64,
                         patch_size=8, output_channels=16, window_size=4, global_attn_indexes=[1], num_pos_feats=8)
    pc = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    mc = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                              iou_head_hidden_dim=16)
    cfg = SamConfig(vision_config=vc.to_dict(), prompt_encoder_config=pc.to_dict(), mask_decoder_config=mc.to_dict(),
                    attn_implementation="eager")  # the reference reads HF's own attention weights
    torch.manual_seed(seed)
    sam = create_sam("tiny-sam", weights="random", config=cfg)
    with torch.no_grad():
        for name, p in sam.model.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.5)
    return sam


@pytest.fixture(scope="module")
def parts():
    return tiny_vfm("dino"), tiny_sam()  # DINO patch 8; SAM 64 px, patch 8


def bilinear(img: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """[C, h, w] -> [C, out_h, out_w], bilinear with half-pixel centres (align_corners=False), in loops."""
    _, h, w = img.shape
    out = img.new_zeros(img.shape[0], out_h, out_w)
    for oy in range(out_h):
        sy = max((oy + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), h - 1)
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), w - 1)
            x1, lx = min(x0 + 1, w - 1), sx - x0
            out[:, oy, ox] = ((1 - ly) * ((1 - lx) * img[:, y0, x0] + lx * img[:, y0, x1])
                              + ly * ((1 - lx) * img[:, y1, x0] + lx * img[:, y1, x1]))
    return out


def sam_reference(sam, rgb):
    """SAM's last-block attention [heads, n, n] and values [heads, h, w, d] on the valid grid, from HF's own
    attention forward (its input caught by a forward hook) and the qkv weights."""
    H, W = rgb.shape[-2:]
    S = sam.image_size
    scale = S / max(H, W)
    h, w = int(H * scale + 0.5), int(W * scale + 0.5)
    x = F.interpolate(rgb, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1) * 255
    x = (x - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = F.pad(x, (0, S - w, 0, S - h))
    seen = {}
    last = sam.model.vision_encoder.layers[-1]
    handle = last.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    sam.model.vision_encoder(x)
    handle.remove()
    u = last.layer_norm1(seen["x"])  # (1, g, g, C)
    _, attn = last.attn(u, output_attentions=True)  # (heads, n, n)
    g, C, heads = u.shape[1], u.shape[-1], sam.heads
    v = (u @ last.attn.qkv.weight[2 * C:].T + last.attn.qkv.bias[2 * C:]).reshape(g, g, heads, -1)
    gh, gw = h // sam.patch_size, w // sam.patch_size
    a = attn.reshape(heads, g, g, g, g)[:, :gh, :gw, :gh, :gw].reshape(heads, gh * gw, gh * gw)
    return a, v[:gh, :gw].permute(2, 0, 1, 3)


def reference(backbone, vfm, sam, image, s: TridentConfig):
    """One image [3, H, W] (sides multiples of the patch, >= crop) -> tokens [h * w, D], in loops."""
    ln_1, _, _, (w_v, b_v), out_proj, *_, heads = raw_block(backbone, len(backbone.blocks) - 1)
    head = raw_head(backbone)
    p = backbone.patch_size[0]
    H, W = image.shape[-2:]
    boxes = []  # mmseg's slide grid, written out
    for y in range(0, max(H - s.crop, 0) + s.stride, s.stride):
        for x in range(0, max(W - s.crop, 0) + s.stride, s.stride):
            y1, x1 = min(y, H - s.crop), min(x, W - s.crop)
            if (y1, x1) not in [(b[0], b[1]) for b in boxes]:
                boxes.append((y1, x1, y1 + s.crop, x1 + s.crop))
    mean, std = torch.tensor(backbone.preprocess.mean).view(3, 1, 1), torch.tensor(backbone.preprocess.std).view(3, 1, 1)
    rgb = image * std + mean
    dino_in = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    crops = torch.stack([dino_in[:, y1:y2, x1:x2] for y1, x1, y2, x2 in boxes])
    toks = vfm.model.forward_features(crops)[:, 1:]  # get_intermediate_layers(n=1): normed, class token dropped
    g = s.crop // p
    Ss = [F.normalize(t, dim=-1) @ F.normalize(t, dim=-1).T for t in toks]
    mu = torch.stack(Ss).mean()  # over every window of the image
    xs = library_trunk(backbone, torch.stack([image[:, y1:y2, x1:x2] for y1, x1, y2, x2 in boxes]), len(backbone.blocks) - 1)
    C = xs.shape[-1]
    total, count = torch.zeros(C, H // p, W // p), torch.zeros(1, H // p, W // p)
    for (y1, x1, y2, x2), S, x in zip(boxes, Ss, xs):
        v = ln_1(x[backbone.num_prefix_tokens:]) @ w_v.T + b_v  # (g*g, C); DINO's grid equals CLIP's here
        rows = []
        for i in range(g * g):
            logits = (S[i] - mu * s.beta) * s.gamma
            keep = logits >= 0
            a = torch.softmax(logits[keep], dim=0)
            rows.append((a[:, None] * v[keep]).sum(0))
        o = out_proj(torch.stack(rows)).T.reshape(C, g, g)
        total[:, y1 // p: y2 // p, x1 // p: x2 // p] += o
        count[:, y1 // p: y2 // p, x1 // p: x2 // p] += 1
    spliced = total / count
    sam_rgb = F.interpolate(rgb[None], size=(-(-H // 16) * 16, -(-W // 16) * 16), mode="bilinear", align_corners=False)[0]
    W16 = sam_rgb.shape[-1]
    halves = [(0, W16)] if not s.split_halves else [(0, W16 // 2), (W16 // 2, W16)]
    outs = []
    for a0, a1 in halves:
        attn, sv = sam_reference(sam, sam_rgb[None, :, :, a0:a1])
        hh, ww = sv.shape[1:3]
        cw = spliced.shape[-1] * a0 // W16, spliced.shape[-1] * a1 // W16
        X = bilinear(spliced[..., cw[0]:cw[1]], hh, ww).reshape(C, -1).T  # (n, C)
        vn = F.normalize(sv.reshape(sam.heads, hh * ww, -1), dim=-1)
        sims = torch.einsum("hmd,hnd->hmn", vn, vn)
        G = torch.zeros(hh * ww, hh * ww)
        for m in range(hh * ww):
            t = s.cos_fac * sims[:, m].mean()
            if not s.refine_neg_cos and t < 0:
                t = torch.tensor(s.neg_thresh)
            t = min(t, torch.tensor(s.max_thresh))
            row = sum(torch.where(sims[hd, m] > t, attn[hd, m], 0.0) for hd in range(sam.heads)) / sam.heads
            G[m] = row / row.sum()
        outs.append((G @ X).reshape(hh, ww, C))
    return head(torch.cat(outs, dim=1).reshape(-1, C))


SETTINGS = [TridentConfig(crop=32, stride=16), TridentConfig(crop=32, stride=24, cos_fac=0.0),
            TridentConfig(crop=32, stride=16, cos_fac=3.0, refine_neg_cos=False, split_halves=True)]


@pytest.mark.parametrize("settings", SETTINGS, ids=["base", "voc20-like", "cityscapes-like"])
def test_trident_matches_plain_reference(backbone, parts, settings):
    if backbone.patch_size != (8, 8):
        pytest.fail(f"the tiny {backbone.name} should have patch 8 like the tiny DINO, got {backbone.patch_size}")
    vfm, sam = parts
    proxy = TridentProxy(vfm, sam, settings)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 40, 64)
    with torch.no_grad():
        tokens, ori = trident_tokens(backbone, images, GEMConfig(), proxy=proxy)
        assert ori is None
        assert tokens.shape[1] == math.prod(proxy.grid((40, 64)))
        for b in range(2):
            ref = reference(backbone, vfm, sam, images[b], settings)
            assert torch.allclose(tokens[b], ref, atol=TOL, rtol=0), (tokens[b] - ref).abs().max()


def test_windows_and_sizes():
    # trident_windows: last row/column pulled back to the border, every window crop x crop
    wins = trident_windows(40, 64, 32, 16)
    assert all(y2 - y1 == 32 and x2 - x1 == 32 for y1, x1, y2, x2 in wins)
    assert max(w[2] for w in wins) == 40 and max(w[3] for w in wins) == 64
    assert len(wins) == 2 * 3
    # preprocess_image: longer side rounded up to the stride, the shorter scaled and rounded up, >= crop
    assert trident_size(448, 597, 16, 336) == (464, 608)  # int(448 * 608 / 597) = 456 -> 464
    assert trident_size(448, 592, 16, 336) == (448, 592)
    assert trident_size(200, 320, 16, 336) == (336, 336)


def test_guidance_rows_and_thresholds():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(2, 6, 6), dim=-1)
    v = torch.randn(2, 6, 4)
    g = sam_guidance(attn, v, cos_fac=1.2)
    assert torch.allclose(g.sum(-1), torch.ones(6), atol=1e-6)  # fp32 row normalization
    # cos_fac 0: every positive cosine passes (the diagonal always does), so rows keep at least themselves
    g0 = sam_guidance(attn, v, cos_fac=0.0)
    assert (g0.diagonal() > 0).all()
    # max_thresh caps the threshold: with a huge cos_fac only cosines above 0.9 are kept
    big = sam_guidance(attn, v, cos_fac=1e6)
    vn = F.normalize(v, dim=-1)
    kept = (torch.einsum("hmd,hnd->hmn", vn, vn) > 0.9).any(0)
    assert ((big > 0) == kept).all()


def test_model_and_segmenter_end_to_end(parts):
    from conftest import tiny_open_clip_backbone
    from gemseg import Segmenter

    vfm, sam = parts
    model = GEMModel(tiny_open_clip_backbone(), method="trident",
                     proxy=TridentProxy(vfm, sam, TridentConfig(crop=32, stride=16)))
    assert get_method("trident").needs == ("proxy",)
    x = torch.randn(1, 3, 44, 60)  # not multiples of the patch: resized inside, covering the whole image
    feats = model.encode_image(x)
    assert feats.shape[-2:] == proxy_grid(sam, 44, 60)
    seg = Segmenter.from_classes(model, ["cat", "dog"], background=None)
    scores = seg.scores(x)
    assert scores.shape == (1, 2, 44, 60) and torch.isfinite(scores).all()


def proxy_grid(sam, H, W):
    H16, W16 = -(-H // 16) * 16, -(-W // 16) * 16
    return sam.grid(H16, W16)


def test_bad_input(parts):
    from conftest import tiny_open_clip_backbone

    vfm, sam = parts
    backbone = tiny_open_clip_backbone()
    with pytest.raises(ValueError, match="multiples of CLIP's patch"):
        trident_tokens(backbone, torch.randn(1, 3, 40, 40), GEMConfig(),
                       proxy=TridentProxy(vfm, sam, TridentConfig(crop=36, stride=12)))
    with pytest.raises(ValueError, match="no original-path view"):
        trident_tokens(backbone, torch.randn(1, 3, 40, 40), GEMConfig(), proxy=TridentProxy(vfm, sam), return_ori=True)
    with pytest.raises(ValueError, match="stride"):
        TridentConfig(crop=32, stride=64)
    from gemseg.methods import ProxyAttention
    with pytest.raises(TypeError, match="takes a TridentProxy"):
        trident_tokens(backbone, torch.randn(1, 3, 40, 40), GEMConfig(), proxy=ProxyAttention(vfm))
    with pytest.raises(TypeError, match="SamEncoder"):
        TridentProxy(vfm, vfm)
    with pytest.raises(ValueError, match="needs a proxy"):
        GEMModel(backbone, method="trident")


def test_create_model_builds_the_trident_proxy(parts):
    from gemseg.methods.trident import build_trident_proxy

    vfm, sam = parts
    ready = TridentProxy(vfm, sam)
    assert build_trident_proxy(ready, None) is ready
    with pytest.raises(TypeError, match="TridentConfig"):
        build_trident_proxy(vfm, object(), weights="random")
    assert get_method("trident").make_proxy is build_trident_proxy
    assert ready.describe()["sam_name"] == "tiny-sam" and ready.describe()["cos_fac"] == 1.2


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_eval_through_the_trident_preset_runs_the_sam_refiner(parts, tmp_path):
    """`evaluate` under the trident preset calls the "sam-prompts" refiner once per image batch, with the
    dataset's cited coarse_thresh, on tiny random CLIP/DINO/SAM models and a tiny VOC written here."""
    import eval_data
    from conftest import tiny_open_clip_backbone
    from gemseg.eval import evaluate, load_dataset_spec, resolve_protocol
    from gemseg.refiners import get_refiner, register_refiner
    from gemseg.sam_refine import sam_prompt_refiner

    calls = []

    def counting(scores, *, image, model=None, coarse_thresh=0.2):
        calls.append(coarse_thresh)
        return sam_prompt_refiner(scores, image=image, model=model, coarse_thresh=coarse_thresh)

    vfm, sam = parts
    model = GEMModel(tiny_open_clip_backbone(), method="trident",
                     proxy=TridentProxy(vfm, sam, TridentConfig(crop=32, stride=16)))
    root = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    spec = load_dataset_spec("voc21")
    protocol, source = resolve_protocol("trident", spec, size=48, templates="single", vocabulary="names")
    original = get_refiner("sam-prompts")
    register_refiner("sam-prompts", counting, overwrite=True)  # gemseg's own registry, restored below
    try:
        result = evaluate(model, spec, root, protocol, out_dir=tmp_path / "run", protocol_source=source,
                          progress=False, num_workers=0)
    finally:
        register_refiner("sam-prompts", original, overwrite=True)
    assert result["dataset"]["num_images"] == 2 and len(calls) == 2
    assert calls == [0.2, 0.2]  # cfg_voc21.py:7
    import json
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["protocol"]["refine"] == [["sam-prompts", {"coarse_thresh": 0.2}]]
    again = evaluate(model, spec, root, protocol, out_dir=tmp_path / "run", protocol_source=source, progress=False,
                     num_workers=0)  # the same protocol, read back from run.json: the finished run is kept
    assert again["metrics"] == result["metrics"] and len(calls) == 2


# Trident's per-dataset values, read from YuHengsss/Trident@a93b346d1b1d configs/cfg_voc20.py:6-8,
# cfg_city_scapes.py:6-9 (split_halves from trident.py:141), cfg_ade20k.py:6-7
TRIDENT_EXPECTED = {"voc20": (0.2, dict(stride=112, cos_fac=0.0)),
                    "cityscapes": (0.10, dict(cos_fac=3.0, refine_neg_cos=False, split_halves=True)),
                    "ade20k": (0.05, dict(refine_neg_cos=False))}


@pytest.mark.parametrize("dataset", sorted(TRIDENT_EXPECTED))
def test_trident_preset_gives_the_refiner_and_the_model_their_cited_values(dataset):
    import argparse
    import dataclasses

    from gemseg.cli.common import proxy_settings, settings_kwargs
    from gemseg.cli.eval_cmd import with_preset_proxy_settings
    from gemseg.eval import load_dataset_spec, resolve_protocol
    from gemseg.eval.protocols import get_preset

    thresh, fields = TRIDENT_EXPECTED[dataset]
    spec = load_dataset_spec(dataset)
    protocol, source = resolve_protocol("trident", spec)
    assert protocol.refine == (("sam-prompts", {"coarse_thresh": thresh}),)
    cited = get_preset("trident").source_of("refine", dataset)
    assert source["refine"] == f"dataset {dataset}" and "dist_test.sh:3" in cited and "configs/cfg_" in cited
    # what `gemseg eval --preset trident --method trident` builds the model with
    args = with_preset_proxy_settings(argparse.Namespace(preset="trident", method="trident", method_setting=[]), spec)
    settings = settings_kwargs("trident", args.method_setting)["proxy_settings"]
    assert settings == proxy_settings("trident", ",".join(args.method_setting))  # the --proxy-settings spelling
    default = TridentConfig()
    assert isinstance(settings, TridentConfig)
    for f in dataclasses.fields(TridentConfig):
        assert getattr(settings, f.name) == fields.get(f.name, getattr(default, f.name)), f.name
    # a given --method-setting wins over the preset's value of that name (the others stay the preset's);
    # another method is left alone
    mine = argparse.Namespace(preset="trident", method="trident", method_setting=["beta=1.0"])
    got = settings_kwargs("trident", with_preset_proxy_settings(mine, spec).method_setting)["proxy_settings"]
    assert got == dataclasses.replace(settings, beta=1.0)
    other = argparse.Namespace(preset="trident", method="gem", method_setting=[])
    assert with_preset_proxy_settings(other, spec) is other

