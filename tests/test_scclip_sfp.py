"""SC-CLIP and SFP on every tiny backbone against plain re-computations of their formulas (the third-party
blocks' own forward for the trunk, raw weights and per-head loops for the re-run last block, Python loops
for the local outlier factor and the neighbour repair), plus their settings and failure modes.

Tolerance: fp32 throughout; the references sum in another order (loops, per head) than the batched
library code, so tokens agree to ~1e-6 and are compared with atol 1e-5, rtol 1e-4."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from gemseg.config import GEMConfig
from gemseg.methods import SCCLIPConfig, SFPConfig, get_method
from gemseg.methods.purify import lof_outliers

from conftest import library_trunk, raw_block, raw_head

torch.set_grad_enabled(False)

CFG = GEMConfig()
# the tiny models have 4 blocks: outputs of blocks 1..3 are indices 0..2
SC_TINY = SCCLIPConfig(pre_adjust=1, post_adjust=0, multi_start=0, multi_end=2, res_cls=0.3, lof_neighbors=5)
SFP_TINY = SFPConfig(cross_start=0, cross_end=3, ref_layer=2, aux_layer=0, num_outliers=4)
ATOL, RTOL = 1e-5, 1e-4


# --- independent pieces ------------------------------------------------------------------------------
def ref_lof_outliers(x, k, contamination):
    """One image's tokens [n, C] -> outlier mask [n], by loops over the official formula."""
    x = x.double().numpy()
    n = len(x)
    d = np.array([[float(((x[i] - x[j]) ** 2).sum()) for j in range(n)] for i in range(n)])
    nbrs = [sorted((j for j in range(n) if j != i), key=lambda j: d[i, j])[:k] for i in range(n)]
    lrd = []
    for i in range(n):
        kdist = d[i, nbrs[i][-1]]
        lrd.append(k / np.mean([max(d[i, j], kdist) for j in nbrs[i]]))
    lof = np.array([np.mean([lrd[j] / lrd[i] for j in nbrs[i]]) for i in range(n)])
    return torch.from_numpy(lof > np.quantile(lof, 1 - contamination))


def ref_fill(x, mask, gh, gw):
    """[n, C] with each outlier replaced by the mean of its non-outlier 8-neighbours (if any)."""
    out = x.clone()
    for r in range(gh):
        for c in range(gw):
            if not mask[r * gw + c]:
                continue
            nb = [x[rr * gw + cc] for rr in range(r - 1, r + 2) for cc in range(c - 1, c + 2)
                  if (rr, cc) != (r, c) and 0 <= rr < gh and 0 <= cc < gw and not mask[rr * gw + cc]]
            if nb:
                out[r * gw + c] = torch.stack(nb).mean(0)
    return out


def cos(x):
    u = x / x.norm(dim=-1, keepdim=True)
    return u @ u.T


def agg(x, a):
    return (a / (a.sum(-1, keepdim=True) + 1e-6)) @ x


def sim_softmax(sim, gamma):
    z = (sim - sim.mean()) * gamma
    return torch.softmax(z.masked_fill(z < 0, float("-inf")), -1)


def ref_rerun(backbone, x, sim_attn, terms):
    """The last block's attention branch on tokens [n, C], head by head from the raw weights."""
    ln_1, (Wq, bq), (Wk, bk), (Wv, bv), out_proj, ls_1, *_, H = raw_block(backbone, len(backbone.blocks) - 1)
    h = ln_1(x)
    q, k, v = h @ Wq.T + bq, h @ Wk.T + bk, h @ Wv.T + bv
    d = q.shape[-1] // H
    heads = []
    for j in range(H):
        sl = slice(j * d, (j + 1) * d)
        a = sim_attn.clone()
        for t in terms:
            m = {"q": q, "k": k}[t][:, sl]
            a = a + torch.softmax(m @ m.T / math.sqrt(d), -1)
        heads.append(a / (len(terms) + 1) @ v[:, sl])
    return ls_1(out_proj(torch.cat(heads, -1)))


def outputs(backbone, images):
    """Outputs of blocks 1 .. L-1 through the library's own forward, [B, N, C] each."""
    return [library_trunk(backbone, images, i + 1) for i in range(len(backbone.blocks) - 1)]


def ref_scclip(backbone, images, s):
    p, (ph, pw) = backbone.num_prefix_tokens, backbone.patch_size
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    F_ = outputs(backbone, images)
    head = raw_head(backbone)
    out = []
    for b in range(images.shape[0]):
        X = F_[-1][b]
        cls = X[:1] if p else torch.zeros(1, X.shape[-1])
        mask = ref_lof_outliers(X[p:], s.lof_neighbors, s.lof_contamination)
        patches = ref_fill(X[p:], mask, gh, gw)
        mid = cos(ref_fill(F_[s.pre_adjust][b][p:], mask, gh, gw))
        patches = agg(patches, mid * (mid >= s.beta))
        sa = sim_softmax(mid, s.gamma)
        y = ref_rerun(backbone, patches, sa, ("k",)) + s.res_cls * cls
        post = cos(F_[s.post_adjust][b][p:])
        post = post * (post >= s.beta)
        y = agg(y, post)
        M = sum(F_[i][b] for i in range(s.multi_start, s.multi_end))
        m = ref_rerun(backbone, M[p:], sa, ("k",)) + s.res_cls * (M[:1] if p else 0)
        out.append(head(torch.cat([X[:p], y + agg(m, post)])))
    return torch.stack(out)


def ref_sfp(backbone, images, s):
    p, (ph, pw) = backbone.num_prefix_tokens, backbone.patch_size
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    F_ = outputs(backbone, images)
    ln_1, (Wq, bq), (Wk, bk), *_, H = raw_block(backbone, len(backbone.blocks) - 2)
    head = raw_head(backbone)
    out = []
    for b in range(images.shape[0]):
        X, Xin = F_[-1][b], F_[-2][b]
        cls = X[:1] if p else torch.zeros(1, X.shape[-1])
        if s.outliers == "som":  # the penultimate block's attention, averaged over heads
            h = ln_1(Xin)
            q, k = h @ Wq.T + bq, h @ Wk.T + bk
            d = q.shape[-1] // H
            A = sum(torch.softmax(q[:, j * d:(j + 1) * d] @ k[:, j * d:(j + 1) * d].T / math.sqrt(d), -1)
                    for j in range(H)) / H
            c2p = A[0, p:] * s.res_cls * s.res_scale
            salient = [i for i in range(gh * gw) if c2p[i] > A[p + i, p + i]]
            chosen = sorted(salient, key=lambda i: -c2p[i])[:s.num_outliers]
        elif s.outliers == "l2":
            chosen = torch.argsort(X[p:].norm(dim=-1), descending=True)[:s.num_outliers].tolist()
        else:
            chosen = torch.nonzero(ref_lof_outliers(X[p:], s.lof_neighbors, s.lof_contamination)).flatten().tolist()
        mask = torch.zeros(gh * gw, dtype=torch.bool)
        mask[chosen] = True
        patches = ref_fill(X[p:], mask, gh, gw)
        pre = cos(ref_fill(F_[s.ref_layer][b][p:], mask, gh, gw))
        pre = pre * (pre >= s.threshold)
        patches = agg(patches, pre)
        sa = sim_softmax(pre, s.gamma)
        y = ref_rerun(backbone, patches, sa, ("k", "q")) + s.res_cls * cls
        post = cos(F_[s.aux_layer][b][p:])
        post = post * (post >= s.threshold)
        y = agg(y, post)
        M = sum(F_[i][b] for i in range(s.cross_start, s.cross_end))
        m = ref_rerun(backbone, M[p:], sa, ()) + s.res_cls * (M[:1] if p else 0)
        out.append(head(torch.cat([X[:p], y + agg(m, post)])))
    return torch.stack(out)


# --- formulas ---------------------------------------------------------------------------------------
def test_lof_outliers_match_the_loop_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 40, 6)
    x[0, 7] += 6.0  # an obvious outlier
    got = lof_outliers(x, n_neighbors=5, contamination=0.1)
    for b in range(2):
        assert torch.equal(got[b], ref_lof_outliers(x[b], 5, 0.1))
    assert got[0, 7] and got.sum(dim=1).tolist() == [4, 4]  # the top 10 % of 40


def test_scclip_matches_its_formula(backbone):
    images = torch.randn(2, 3, 48, 64)  # 6x8 grid: non-square, row-major positions
    tokens, ori = get_method("sc-clip")(backbone, images, CFG, settings=SC_TINY, return_ori=True)
    ref = ref_scclip(backbone, images, SC_TINY)
    assert tokens.shape == (2, backbone.num_prefix_tokens + 48, backbone.embed_dim)
    assert torch.allclose(tokens, ref, atol=ATOL, rtol=RTOL), (tokens - ref).abs().max()
    clip, _ = get_method("clip")(backbone, images, CFG)
    assert torch.allclose(ori, clip, atol=1e-5)


@pytest.mark.parametrize("outliers", ["som", "l2", "lof"])
def test_sfp_matches_its_formula(backbone, outliers):
    s = SFPConfig(**{**SFP_TINY.to_dict(), "outliers": outliers, "lof_neighbors": 5})
    images = torch.randn(2, 3, 48, 64)
    if outliers == "som" and backbone.num_prefix_tokens == 0:  # SOM reads the class token's attention
        with pytest.raises(ValueError, match="outliers=lof"):
            get_method("sfp")(backbone, images, CFG, settings=s)
        return
    tokens, _ = get_method("sfp")(backbone, images, CFG, settings=s)
    ref = ref_sfp(backbone, images, s)
    assert torch.allclose(tokens, ref, atol=ATOL, rtol=RTOL), (tokens - ref).abs().max()


def test_each_step_changes_the_output(clip_backbone):
    """Every setting is read: changing it changes the tokens (so no step is silently skipped)."""
    images = torch.randn(1, 3, 48, 64)
    base, _ = get_method("sfp")(clip_backbone, images, CFG, settings=SFP_TINY)
    for change in (dict(outliers="none"), dict(integration="attention"), dict(res_cls=0.0), dict(threshold=0.0),
                   dict(ref_layer=1)):
        other, _ = get_method("sfp")(clip_backbone, images, CFG, settings=SFPConfig(**{**SFP_TINY.to_dict(), **change}))
        assert (other - base).abs().max() > 1e-5, change
    sc, _ = get_method("sc-clip")(clip_backbone, images, CFG, settings=SC_TINY)
    for change in (dict(beta=0.0), dict(res_cls=0.0), dict(multi_end=3), dict(pre_adjust=2)):
        other, _ = get_method("sc-clip")(clip_backbone, images, CFG, settings=SCCLIPConfig(**{**SC_TINY.to_dict(), **change}))
        assert (other - sc).abs().max() > 1e-5, change


# --- settings ---------------------------------------------------------------------------------------
def test_scclip_layer_defaults_follow_the_depth():
    assert SCCLIPConfig().resolve(12) == SCCLIPConfig(pre_adjust=8, post_adjust=3, multi_start=3, multi_end=10,
                                                      res_cls=0.3)
    assert SCCLIPConfig().resolve(24) == SCCLIPConfig(pre_adjust=16, post_adjust=6, multi_start=8, multi_end=19,
                                                      res_cls=0.1)
    with pytest.raises(ValueError, match="set pre_adjust"):
        SCCLIPConfig().resolve(4)
    with pytest.raises(ValueError, match="out of range"):
        SCCLIPConfig(**{**SC_TINY.to_dict(), "pre_adjust": 9}).resolve(4)
    with pytest.raises(TypeError):
        SCCLIPConfig(pre_adjust=1.5)


def test_sfp_settings_are_checked():
    with pytest.raises(ValueError, match="outliers"):
        SFPConfig(outliers="dbscan")
    with pytest.raises(ValueError, match="out of range for 4 blocks"):
        SFPConfig().check(4)
    SFPConfig().check(12)  # the defaults are ViT-B/16's


def test_settings_reach_the_method_through_the_model(clip_backbone):
    from gemseg.model import GEMModel

    images = torch.randn(1, 3, 48, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GEMModel(clip_backbone, method="sc-clip", method_settings=SC_TINY.to_dict())
        other = model.variant(method_settings=dict(SC_TINY.to_dict(), res_cls=0.0))
    assert model.method_settings == SC_TINY
    feats = model.encode_image(images)
    direct, _ = get_method("sc-clip")(clip_backbone, images, CFG, settings=SC_TINY)
    ref = torch.nn.functional.normalize(direct[:, clip_backbone.num_prefix_tokens:], dim=-1)
    assert torch.allclose(feats.flatten(2).transpose(1, 2), ref, atol=1e-6)
    assert (other.encode_image(images) - feats).abs().max() > 1e-5
    with pytest.raises(ValueError, match="no setting"):
        GEMModel(clip_backbone, method="sfp", method_settings={"nonsense": 1})
    with pytest.raises(ValueError, match="no settings of its own"):
        GEMModel(clip_backbone, method="naclip", method_settings={"beta": 1})
    with pytest.raises(TypeError, match="SFPConfig"):
        GEMModel(clip_backbone, method="sfp", method_settings=SC_TINY)
