"""ResCLIP as a plug-in (``<base>+resclip``) on every tiny backbone against plain re-computations of RCS,
SFR and the rewritten last block (raw weights, per-head loops, Python loops for the patch labels, the
path test and the row blur), its equivalence with the bare base when both modules are off, and the
registry's parsing of composed names.

Tolerance: fp32; the references sum in another order than the batched code, so tokens are compared with
atol 1e-5, rtol 1e-4. The SFR matrix is compared exactly where both sides round it to float16 from
values that agree to ~1e-7 (atol 1e-3 covers one float16 step at 1)."""
from __future__ import annotations

import math
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from gemseg.config import GEMConfig
from gemseg.pamr import pamr
from gemseg.refiners import pamr_refiner
from gemseg.methods import METHODS, LastBlockAttention, ResCLIPConfig, get_method, list_methods
from gemseg.methods.resclip import patch_labels, sfr_attention

from conftest import library_trunk, raw_block, raw_head

torch.set_grad_enabled(False)

# the bases that re-run the last block alone (gem and vv: tests/test_resclip_gem.py)
BASES = {n: get_method(n).attention for n in ("sclip", "clearclip", "naclip", "clip")}

CFG = GEMConfig()
TINY = ResCLIPConfig(rcs_layers=(1, 2), rcs_weights=(2.0, 0.3), sfr_weights=(1.8, 0.7), temp_thd=0.3,
                     gaussian_std=1.5, pamr_steps=2)
ATOL, RTOL = 1e-5, 1e-4
IMAGES = (2, 3, 40, 48)  # a 5x6 grid of 8-pixel patches


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def hand_window(gh, gw, std, p):
    w = torch.zeros(p + gh * gw, p + gh * gw)
    for a in range(gh * gw):
        for b in range(gh * gw):
            (ra, ca), (rb, cb) = divmod(a, gw), divmod(b, gw)
            w[p + a, p + b] = math.exp(-((ra - rb) ** 2 + (ca - cb) ** 2) / (2 * std ** 2))
    return w


def per_head(backbone, i, x):
    """q, k, v [N, C] of block ``i`` on tokens x [N, C] from the raw weights, and the head count."""
    ln_1, (Wq, bq), (Wk, bk), (Wv, bv), *_, H = raw_block(backbone, i)
    h = ln_1(x)
    return h @ Wq.T + bq, h @ Wk.T + bk, h @ Wv.T + bv, H


def ref_rcs(backbone, images, layers):
    """Mean over ``layers`` of each block's softmax(q kᵀ / √d), per image and head: [B, H, N, N]."""
    out = []
    for b in range(images.shape[0]):
        maps = []
        for i in layers:
            q, k, _, H = per_head(backbone, i, library_trunk(backbone, images, i)[b])
            d = q.shape[-1] // H
            maps.append(torch.stack([torch.softmax(q[:, j*d:(j+1)*d] @ k[:, j*d:(j+1)*d].T / math.sqrt(d), -1)
                                     for j in range(H)]))
        out.append(torch.stack(maps).mean(0))
    return torch.stack(out)


def ref_last(backbone, x, base, s, rcs=None, sfr=None, omega=None):
    """The base's last block on one image's tokens [N, C] with RCS [H, N, N] and SFR [N, N]."""
    L = len(backbone.blocks) - 1
    q, k, v, H = per_head(backbone, L, x)
    _, _, _, _, out_proj, ls_1, ln_2, mlp, ls_2, _ = raw_block(backbone, L)
    d = q.shape[-1] // H
    heads = []
    for j in range(H):
        sl = slice(j * d, (j + 1) * d)
        src = {"q": q[:, sl], "k": k[:, sl]}
        a = 0
        for t in BASES[base].terms:
            lg = src[t[0]] @ src[t[1]].T / math.sqrt(d)
            if sfr is not None:
                lg = s.sfr_weights[0] * ((1 - s.sfr_weights[1]) * lg + s.sfr_weights[1] * sfr)
            if omega is not None:
                lg = lg + omega
            a = a + torch.softmax(lg, -1)
        if rcs is not None:
            a = s.rcs_weights[0] * ((1 - s.rcs_weights[1]) * a + s.rcs_weights[1] * rcs[j])
        heads.append(a @ v[:, sl])
    y = ls_1(out_proj(torch.cat(heads, -1)))
    if BASES[base].residual:
        y = x + y
        y = y + ls_2(mlp(ln_2(y)))
    return y


def ref_labels(probs, ph, pw, thd):
    """[Q, H, W] -> [gh, gw]: each patch's most frequent top query (ties: the smallest, as torch.mode)."""
    top, lab = probs.max(0)
    lab[top < thd] = 0
    gh, gw = lab.shape[0] // ph, lab.shape[1] // pw
    out = torch.zeros(gh, gw, dtype=torch.long)
    for r in range(gh):
        for c in range(gw):
            counts = Counter(lab[r*ph:(r+1)*ph, c*pw:(c+1)*pw].flatten().tolist())
            best = max(counts.values())
            out[r, c] = min(v for v, n in counts.items() if n == best)
    return out


def ref_sfr(labels, s, p):
    gh, gw = labels.shape
    n, T = gh * gw, max(gh, gw)
    t = torch.linspace(0, 1, steps=T)  # the sample positions along a path, as the official code
    pos = [divmod(i, gw) for i in range(n)]
    m = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            if labels[pos[i]] != labels[pos[j]]:
                continue
            steps = max(abs(pos[j][0] - pos[i][0]), abs(pos[j][1] - pos[i][1]))
            valid = True
            for u in range(steps + 1):
                pt = [int(torch.round(torch.tensor(float(a)) * (1 - t[u]) + torch.tensor(float(b)) * t[u]))
                      for a, b in zip(pos[i], pos[j])]
                valid &= bool(labels[pt[0], pt[1]] == labels[pos[i]])
            m[i, j] = 1.0 if valid else math.exp(-steps / (T - 1))
    size = min(n, int(6 * s.gaussian_std + 1))
    size += 1 - size % 2
    ker = [math.exp(-((u - size // 2) ** 2) / (2 * s.gaussian_std ** 2)) for u in range(size)]
    ker = [w / sum(ker) for w in ker]
    blur = torch.zeros(n, n)
    for r in range(n):
        for c in range(n):
            blur[r, c] = sum(m[r, c + u - size // 2] * ker[u] for u in range(size) if 0 <= c + u - size // 2 < n)
    blur = blur.clamp_min(0)
    blur = blur / (blur.sum(1, keepdim=True) + 1e-8)
    g = torch.zeros(p + n, p + n)
    g[p:, p:] = blur
    return (g / g.max()).half().float()


def ref_resclip(backbone, images, base, s, text):
    p, (ph, pw) = backbone.num_prefix_tokens, backbone.patch_size
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    X = library_trunk(backbone, images, len(backbone.blocks) - 1)
    rcs = ref_rcs(backbone, images, s.rcs_layers) if s.use_rcs else [None] * len(X)
    omega = hand_window(gh, gw, s.gaussian_std, p) if BASES[base].neighbourhood else None
    head = raw_head(backbone)
    tn = F.normalize(text, dim=-1)
    out = []
    for b in range(len(X)):
        sfr = None
        if s.use_sfr:
            first = F.normalize(head(ref_last(backbone, X[b], base, s, rcs=rcs[b], omega=omega))[p:], dim=-1)
            logits = (first @ tn.T).T.reshape(1, -1, gh, gw)
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
            logits = pamr(images[b:b + 1], logits, steps=s.pamr_steps, dilations=s.pamr_dilations)
            probs = (logits[0] * s.logit_scale).softmax(0)
            sfr = ref_sfr(ref_labels(probs, ph, pw, s.temp_thd), s, p)
        out.append(head(ref_last(backbone, X[b], base, s, rcs=rcs[b], sfr=sfr, omega=omega)))
    return torch.stack(out)


# --- formulas ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", sorted(BASES))
def test_resclip_on_each_base_matches_its_formula(backbone, base):
    torch.manual_seed(0)
    images, text = torch.randn(*IMAGES), torch.randn(4, backbone.embed_dim)
    tokens, _ = get_method(f"{base}+resclip")(backbone, images, CFG, settings=TINY, text=text, refine=pamr_refiner)
    ref = ref_resclip(backbone, images, base, TINY, text)
    assert tokens.shape == (2, backbone.num_prefix_tokens + 30, backbone.embed_dim)
    assert torch.allclose(tokens, ref, atol=ATOL, rtol=RTOL), (tokens - ref).abs().max()


def test_sfr_matrix_and_labels_match_the_loops():
    torch.manual_seed(1)
    labels = torch.randint(0, 3, (4, 5))
    labels[1:3, 1:4] = 2  # a region, so that paths inside it stay valid
    for s in (TINY, ResCLIPConfig(gaussian_std=0.8, delete_same_entity=False)):
        got = sfr_attention(labels, s, 1)
        ref = ref_sfr(labels, s, 1) if s.delete_same_entity else None
        if ref is not None:
            assert torch.allclose(got, ref, atol=1e-3), (got - ref).abs().max()
        assert got[0].abs().sum() == 0 and got[:, 0].abs().sum() == 0 and math.isclose(got.max().item(), 1.0)
    probs = torch.rand(2, 4, 16, 24).softmax(1)
    got = patch_labels(probs, (8, 8), 0.3)
    for b in range(2):
        assert torch.equal(got[b], ref_labels(probs[b].clone(), 8, 8, 0.3))


@pytest.mark.parametrize("base", sorted(BASES))
def test_with_both_modules_off_it_is_the_base(backbone, base):
    images = torch.randn(*IMAGES)
    off = ResCLIPConfig(use_rcs=False, use_sfr=False)  # gaussian_std 5: NACLIP's own window
    tokens, _ = get_method(f"{base}+resclip")(backbone, images, CFG, settings=off)
    plain, _ = get_method(base)(backbone, images, CFG)
    assert torch.allclose(tokens, plain, atol=1e-5), (tokens - plain).abs().max()  # explicit softmax vs SDPA


def test_each_module_changes_the_output(clip_backbone):
    torch.manual_seed(2)
    images = torch.randn(1, 3, 40, 48)
    # queries made of the model's own tokens at three places, so that the feedback labels vary over the grid
    text = get_method("naclip")(clip_backbone, images, CFG)[0][0, 1:][[0, 11, 29]]
    base = dict(TINY.to_dict(), temp_thd=0.0)
    run = lambda **c: get_method("naclip+resclip")(clip_backbone, images, CFG, text=text, refine=pamr_refiner,  # noqa: E731
                                                   settings=ResCLIPConfig(**{**base, **c}))[0]
    full = run()
    for change in (dict(use_rcs=False), dict(use_sfr=False), dict(rcs_layers=(0,)), dict(delete_same_entity=False),
                   dict(pamr_steps=0), dict(sfr_weights=(1.0, 0.2)), dict(temp_thd=0.9)):
        assert (run(**change) - full).abs().max() > 1e-6, change


# --- plumbing ----------------------------------------------------------------------------------------
def test_composed_names_are_parsed_listed_and_refused_clearly():
    for base, attention in BASES.items():
        assert isinstance(attention, LastBlockAttention) and f"{base}+resclip" in list_methods()
        m = get_method(f"{base}+resclip")
        assert m.name == f"{base}+resclip" and m.settings_type is ResCLIPConfig and "text" in m.needs
    assert METHODS["naclip+resclip"] is get_method("naclip+resclip")  # one registered Method
    with pytest.raises(ValueError, match="resclip composes with .*declares its attention"):
        get_method("sc-clip+resclip")  # declares no attention
    with pytest.raises(ValueError, match="unknown plug-in"):
        get_method("naclip+nothing")


def test_the_model_passes_the_queries_and_refuses_a_call_without_them(clip_backbone):
    from gemseg.model import GEMModel

    torch.manual_seed(0)
    model = GEMModel(clip_backbone, method="naclip+resclip", method_settings=TINY)
    images = torch.randn(1, 3, 40, 48)
    text = model.encode_text(["cat", "dog", "sky"])
    maps = model.heatmaps(images, text)
    tokens, _ = get_method("naclip+resclip")(clip_backbone, images, CFG, settings=TINY, text=text, refine=pamr_refiner)
    feats = F.normalize(tokens[:, 1:], dim=-1).transpose(1, 2).reshape(1, -1, 5, 6)
    ref = F.interpolate(torch.einsum("bdhw,pd->bphw", feats, text), size=(40, 48), mode="bilinear",
                        align_corners=False)
    assert torch.allclose(maps, ref, atol=1e-5)
    with pytest.raises(ValueError, match="needs the queries' text embeddings"):
        model.encode_image(images)
    no_sfr = model.variant(method_settings=dict(TINY.to_dict(), use_sfr=False))
    assert no_sfr.encode_image(images).shape == (1, clip_backbone.embed_dim, 5, 6)
