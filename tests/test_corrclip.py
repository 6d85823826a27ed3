"""CorrCLIP (method="corrclip") against a plain re-implementation of the official code
(zdk258/CorrCLIP@103bc18213e6 CorrCLIPv1/open_clip/transformer.py VisionTransformer.forward and
corrclip_segmentor.py), on tiny random CLIP backbones of every class-token kind and a tiny random DINO:
the DINO features through timm's own forward with a hook on the last qkv (as the official code), the
CLIP blocks from the third-party weights with explicit attention masks, DBSCAN as union-find."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import raw_block, raw_head, tiny_vfm
from gemseg.methods.corrclip import (CorrCLIPConfig, CorrCLIPProxy, corrclip_tokens, dbscan, map_correction,
                                     merge_regions, scope_attention)
from gemseg.config import GEMConfig

TOL = 1e-5  # fp32 throughout; the sums run in another order than the reference's


def dino_qk(vfm, images, preprocess):
    """Official forward_feature's DINO part: renormalize, run timm's forward, q + k of the last qkv (hook)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (preprocess.mean, preprocess.std))
    x = (images * std + mean - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = {}
    handle = vfm.model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: out.setdefault("qkv", o))
    vfm.model.forward_features(x)
    handle.remove()
    B, N, _ = out["qkv"].shape
    qkv = out["qkv"].reshape(B, N, 3, -1).permute(2, 0, 1, 3)
    return F.normalize((qkv[0] + qkv[1])[:, 1:], dim=-1)  # (B, h*w, C')


def union_find_clusters(sim, eps):
    """DBSCAN with min_samples=1 is connected components of {distance <= eps}."""
    M = sim.shape[0]
    parent = list(range(M))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i
    dist = sim.max() - sim
    for i in range(M):
        for j in range(M):
            if dist[i, j] <= eps:
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(M)]
    return [sorted(set(roots), key=roots.index).index(r) for r in roots]  # numbered by first member


def plain_block(raw, x, allowed):
    """x [N, C] -> one pre-norm block with attention only where allowed [N, N]; weights read raw."""
    ln1, (wq, bq), (wk, bk), (wv, bv), out, ls1, ln2, mlp, ls2, heads = raw
    h = ln1(x)
    N, C = h.shape
    d = C // heads
    q, k, v = ((h @ w.T + b).reshape(N, heads, d) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    logits = torch.einsum("nhd,mhd->hnm", q, k) * d ** -0.5
    logits = logits.masked_fill(~allowed[None], float("-inf"))
    o = torch.einsum("hnm,mhd->nhd", logits.softmax(-1), v).reshape(N, C)
    x = x + ls1(out(o))
    return x + ls2(mlp(ln2(x)))


def reference(clip, vfm, image, labels, s=CorrCLIPConfig()):
    """One image [1, 3, H, W] and its label map [H, W] -> tokens [h*w, D] on DINO's grid."""
    f = dino_qk(vfm, image, clip.preprocess)[0]  # (N', C')
    H, W = image.shape[-2:]
    h, w = H // vfm.patch_size[0], W // vfm.patch_size[1]
    gh, gw = H // clip.patch_size[0], W // clip.patch_size[1]
    sim = f @ f.T
    m = F.interpolate(labels[None, None].float(), size=(h, w), mode="nearest").int()[0, 0]
    vals = torch.unique(m)
    if len(vals) > 2:  # mask merging
        regions = [m == v for v in vals]
        feats = F.normalize(torch.stack([f.reshape(h, w, -1)[r].mean(0) for r in regions]), dim=1)[1:]
        clusters = union_find_clusters(feats @ feats.T, s.dbscan_eps)
        for r, c in zip(regions[1:], clusters):
            m[r] = c + 10000
    regions = [(m == v).flatten() for v in torch.unique(m)]
    equal = torch.zeros_like(sim, dtype=torch.bool)
    for r in regions[1:]:
        equal |= torch.outer(r, r)
    rest = regions[0]
    equal |= (rest[None] | rest[:, None]) & (sim > sim.mean())
    attn = (sim.masked_fill(~equal, float("-inf")) * s.tau).softmax(-1)
    mc = F.interpolate(m[None, None].float(), size=(gh, gw), mode="nearest").int()[0, 0]
    reg_c = torch.stack([(mc == v).flatten() for v in torch.unique(mc)])  # (R, gh*gw)
    R, P = reg_c.shape
    x = clip.embed(image)[0]  # (1 + P, C)
    seq = torch.cat([x[:1].repeat(R, 1), x])
    allowed = torch.zeros(R + 1 + P, R + 1 + P, dtype=torch.bool)
    allowed[R:, R:] = True
    allowed[:R, R] = True
    allowed[:R, R + 1:] = reg_c
    L = len(clip.blocks)
    ns = s.spatial_blocks(L)
    spatial = []
    for i in range(L - 1):
        seq = plain_block(raw_block(clip, i), seq, allowed)
        if L - 2 - ns <= i <= L - 3:
            spatial.append(seq[R:])
    ln1, _, _, (wv, bv), out, ls1, *_ = raw_block(clip, L - 1)
    branches = []
    for z in (seq[R:], torch.stack(spatial).mean(0)):
        v = (ln1(z) @ wv.T + bv)[1:].T.reshape(1, -1, gh, gw)
        v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False).flatten(2)[0].T  # (h*w, C)
        branches.append(ls1(out(attn @ v)))
    mct = plain_block(raw_block(clip, L - 1), seq, allowed)[:R]
    expand = F.interpolate(reg_c.reshape(1, R, gh, gw).float(), size=(h, w), mode="nearest").flatten(2)[0]
    semantic = expand.T @ mct
    head = raw_head(clip)
    return head(branches[0]) + s.alpha * head(branches[1]) + s.beta * head(semantic)


def label_map(H, W, seed=0):
    """A label map with a rest (0), a few rectangles and nested ones (ids not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(H, W, dtype=torch.long)
    for i, v in enumerate((3, 7, 12, 20, 21)):
        y, x = torch.randint(0, H - 8, (1,), generator=g).item(), torch.randint(0, W - 8, (1,), generator=g).item()
        lab[y:y + 8 + i * 2, x:x + 10] = v
    return lab


@pytest.mark.parametrize("backbone", ["open_clip", pytest.param("hf"), pytest.param("hf-blip")], indirect=True)
@pytest.mark.parametrize("eps", [0.2, 2.0])  # 2.0: every region merged into one cluster
def test_tokens_equal_the_official_computation(backbone, eps):
    vfm = tiny_vfm("dino", seed=1, patch_size=4)  # DINO on a finer grid than CLIP, as B/8 vs B/16
    s = CorrCLIPConfig(dbscan_eps=eps, num_spatial=2)
    proxy = CorrCLIPProxy(vfm, s)
    ph = backbone.patch_size[0]
    H, W = 4 * ph, 4 * ph  # the tiny models' native grids: no position embedding is resampled
    images = torch.randn(2, 3, H, W)
    labels = torch.stack([label_map(H, W, seed=b) for b in range(2)])
    with torch.no_grad():
        got, ori = corrclip_tokens(backbone, images, GEMConfig(), proxy=proxy, masks=labels, return_ori=True)
        want = torch.stack([reference(backbone, vfm, images[b:b + 1], labels[b], s) for b in range(2)])
    h = H // 4
    assert got.shape == (2, h * h, backbone.embed_dim) == want.shape
    assert (got - want).abs().max() < TOL
    assert ori.shape[1] == 1 + 16


def test_dbscan_and_merging():
    sim = torch.tensor([[1.0, 0.9, 0.1, 0.0], [0.9, 1.0, 0.2, 0.1], [0.1, 0.2, 1.0, 0.85], [0.0, 0.1, 0.85, 1.0]])
    assert dbscan(sim.max() - sim, 0.2, 1) == union_find_clusters(sim, 0.2) == [0, 0, 1, 1]
    # min_samples=3: no point has three neighbours within 0.2 -> all noise
    assert dbscan(sim.max() - sim, 0.2, 3) == [-1, -1, -1, -1]
    # a chain a-b-c: b is core (3 neighbours incl. itself), a and c border points of its cluster; d noise
    chain = torch.tensor([[0, .1, .3, 9], [.1, 0, .1, 9], [.3, .1, 0, 9], [9, 9, 9, 0]])
    assert dbscan(chain, 0.15, 3) == [0, 0, 0, -1]
    labels = torch.tensor([0, 0, 5, 5, 8, 8, 9])
    feats = F.normalize(torch.tensor([[1., 0], [1, 0], [0, 1], [0, 1], [.05, 1], [0, 1], [1, .1]]), dim=1)
    merged = merge_regions(labels, feats, eps=0.2, min_samples=1)
    assert merged[0] == 0 and merged[2] == merged[4] != merged[6]  # 5 and 8 point the same way; the rest kept
    assert torch.equal(merge_regions(torch.tensor([0, 0, 4, 4]), feats[:4], eps=0.2, min_samples=1),
                       torch.tensor([0, 0, 4, 4]))  # one region besides the rest: nothing to merge


def test_scope_attention_rows_and_rest_rule():
    f = F.normalize(torch.randn(6, 4), dim=1)
    sim = f @ f.T
    labels = torch.tensor([0, 0, 2, 2, 3, 3])
    attn = scope_attention(sim, labels, tau=4.0)
    assert torch.allclose(attn.sum(-1), torch.ones(6), atol=1e-6)
    assert attn[2, 4] == 0 and attn[4, 2] == 0  # two regions never attend to each other
    above = sim > sim.mean()
    assert torch.equal(attn[0] > 0, torch.tensor([True, True, False, False, False, False]) & above[0]
                       | torch.tensor([False, False, True, True, True, True]) & above[0])
    none = scope_attention(sim, labels, tau=4.0, rest="none")
    assert (none[0, 2:] == 0).all() and (none[0, :2] > 0).all()


def test_map_correction_takes_each_masks_mode():
    labels = torch.tensor([[1, 1, 2, 0], [2, 2, 2, 0], [3, 3, 1, 1]])
    regions = torch.tensor([[0, 0, 5, 5], [5, 5, 5, 5], [0, 7, 7, 7]])
    got = map_correction(labels, regions)
    ref = labels.clone()
    for v in (5, 7):
        m = regions == v
        ref[m] = torch.mode(labels[m])[0]
    assert torch.equal(got, ref) and got[0, 0] == 1  # the rest (smallest id) is left alone
    assert got[2, 1] == 1  # 3, 1, 1 -> 1


def test_settings_are_checked_and_change_the_output():
    assert CorrCLIPConfig().spatial_blocks(12) == 5 and CorrCLIPConfig().spatial_blocks(24) == 12
    assert CorrCLIPConfig().spatial_blocks(32) == 28 and CorrCLIPConfig().spatial_blocks(6) == 2
    with pytest.raises(ValueError, match="rest must be one of"):
        CorrCLIPConfig(rest="all")
    with pytest.raises(ValueError, match="dbscan_min_samples"):
        CorrCLIPConfig(dbscan_min_samples=0)
    with pytest.raises(TypeError, match="DINO/DINOv2"):
        CorrCLIPProxy(tiny_vfm("sam"))


def test_masks_are_padded_and_checked(clip_backbone):
    vfm = tiny_vfm("dino", seed=1, patch_size=4)
    proxy = CorrCLIPProxy(vfm)
    ph = clip_backbone.patch_size[0]
    images = torch.randn(1, 3, 4 * ph, 4 * ph)
    small = label_map(4 * ph - 5, 4 * ph - 3)[None]  # the padded border becomes a region of its own
    with torch.no_grad():
        tokens, _ = corrclip_tokens(clip_backbone, images, GEMConfig(), proxy=proxy, masks=small)
    assert torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match="larger than the input"):
        corrclip_tokens(clip_backbone, images, GEMConfig(), proxy=proxy, masks=label_map(40, 40)[None])
    with pytest.raises(ValueError, match="integer mask label maps"):
        corrclip_tokens(clip_backbone, images, GEMConfig(), proxy=proxy, masks=torch.rand(1, 8, 8))


def test_score_correction_gives_the_label_correction():
    from gemseg.methods.corrclip import correct_scores

    torch.manual_seed(3)
    scores = torch.randn(2, 4, 16, 18)
    regions = torch.stack([label_map(16, 18, seed=s) // 5 for s in (1, 2)])  # ids 0, 1, 2, 4: some merged
    labels = scores.argmax(dim=1)
    fixed = correct_scores(scores, labels, regions)
    for b in range(2):
        assert torch.equal(fixed[b].argmax(dim=0), map_correction(labels[b], regions[b]))
    rest = regions == regions.flatten(1).min(dim=1).values[:, None, None]
    assert torch.equal(fixed.permute(0, 2, 3, 1)[rest], scores.permute(0, 2, 3, 1)[rest])  # the rest untouched


class BoxSource:
    """A mask source: two fixed rectangles, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image, path=None):
        from gemseg.masks import MaskSet

        self.calls += 1
        H, W = image.shape[:2]
        m = torch.zeros(2, H, W, dtype=torch.bool)
        m[0, : H // 2, : W // 2] = True
        m[1, H // 2:, :] = True
        return MaskSet(m, torch.ones(2))


def test_model_runs_corrclip_end_to_end_with_a_mask_source(clip_backbone):
    import numpy as np
    from PIL import Image

    from gemseg import GEMModel

    vfm = tiny_vfm("dino", seed=1, patch_size=4)
    source = BoxSource()
    model = GEMModel(clip_backbone, method="corrclip", proxy=CorrCLIPProxy(vfm), masks=source)
    ph = clip_backbone.patch_size[0]
    images = torch.randn(2, 3, 4 * ph, 4 * ph)
    text = F.normalize(torch.randn(3, clip_backbone.embed_dim), dim=-1)
    maps = model.heatmaps(images, text)
    assert maps.shape == (2, 3, 4 * ph, 4 * ph) and source.calls == 2
    blank = np.zeros((4 * ph, 4 * ph, 3), np.uint8)  # BoxSource's masks depend on the size only
    given = torch.stack([source(blank).label_map(), source(blank).label_map()])
    assert torch.allclose(model.heatmaps(images, text, masks=given), maps, atol=1e-6)  # the same label maps
    pic = Image.fromarray((torch.rand(30, 44, 3) * 255).byte().numpy())
    seg = model.segment([pic], ["cat", "dog"], size=(32, 48))
    assert seg.labels.shape == (1, 32, 48)
    with pytest.raises(ValueError, match="needs masks: create_model"):
        GEMModel(clip_backbone, method="corrclip", proxy=CorrCLIPProxy(vfm)).heatmaps(images, text)
    with pytest.raises(ValueError, match=r"masks must be integer label maps \[2, 32, 32\]"):
        model.heatmaps(images, text, masks=given[:, :8])


def test_create_model_builds_corrclip_with_its_proxy_and_masks(tiny_model_files, tmp_path):
    import numpy as np

    from gemseg import create_model
    from gemseg.masks import FileMasks

    np.savez(tmp_path / "a.npz", instance_mask=np.ones((4, 4), np.int32))
    cfg, ckpt = tiny_model_files["open_clip"]
    vfm = tiny_vfm("dino", seed=1, patch_size=4)
    model = create_model(cfg, checkpoint=ckpt, method="corrclip", proxy=vfm, masks=f"files:{tmp_path}",
                         proxy_settings=CorrCLIPConfig(beta=0.25))
    assert isinstance(model.proxy, CorrCLIPProxy) and model.proxy.settings.beta == 0.25
    assert isinstance(model.mask_source, FileMasks)
    with pytest.raises(ValueError, match="mask_settings and mask_cache apply to masks given by name"):
        create_model(cfg, checkpoint=ckpt, method="corrclip", proxy=vfm, masks=BoxSource(), mask_cache=str(tmp_path))


def test_cli_heatmap_with_corrclip_and_mask_files(tmp_path, capsys, tiny_model_files):
    import json

    import numpy as np
    import timm.models

    from cli_util import run_cli, write_image
    from conftest import TINY_VFM

    a = write_image(tmp_path / "in" / "a.png", (40, 30), seed=1)
    write_image(tmp_path / "in" / "b.png", (40, 30), seed=2)
    masks = tmp_path / "masks"
    masks.mkdir()
    lab = np.zeros((30, 40), np.int32)
    lab[5:20, 10:30] = 3
    np.savez(masks / "a.npz", instance_mask=lab)  # b has no mask file: it fails alone, naming the fix
    folder = str(tmp_path / "vfm")
    timm.models.save_for_hf(tiny_vfm("dino", seed=5).model, folder, safe_serialization=True,
                            model_args=dict(embed_dim=32, depth=2, num_heads=2, **TINY_VFM["dino"][1]))
    cfg, ckpt = tiny_model_files["open_clip"]
    r = run_cli(capsys, "heatmap", a, tmp_path / "in" / "b.png", "-p", "cat", "-o", tmp_path / "out", "--model", cfg,
                "--checkpoint", ckpt, "--size", "32", "--method", "corrclip", "--proxy", folder,
                "--masks", f"files:{masks}")
    assert r.code == 1 and "b.png: no mask file b.npz" in r.err and "Traceback" not in r.err
    assert (tmp_path / "out" / "a.png" / "record.json").is_file()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["settings"]["method"] == "corrclip" and run["settings"]["masks"] == f"files:{masks}"


@pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")
def test_cli_eval_with_corrclip_skips_an_image_without_masks_and_retries_it(tmp_path, capsys, tiny_model_files):
    import json

    import numpy as np
    import timm.models
    from PIL import Image

    import eval_data
    from cli_util import run_cli
    from conftest import TINY_VFM

    voc = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    masks = tmp_path / "region_masks"
    masks.mkdir()

    def write_mask(image_id):
        w, h = Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size
        lab = np.zeros((h, w), np.int32)
        lab[: h // 2, : w // 2] = 1
        np.savez(masks / f"{image_id}.npz", instance_mask=lab)
    write_mask("2007_000000")  # 2007_000001 has none yet
    folder = str(tmp_path / "vfm")
    timm.models.save_for_hf(tiny_vfm("dino", seed=5).model, folder, safe_serialization=True,
                            model_args=dict(embed_dim=32, depth=2, num_heads=2, **TINY_VFM["dino"][1]))
    cfg, ckpt = tiny_model_files["open_clip"]
    argv = ["eval", "--dataset", "voc21", "--data-root", voc, "--model", cfg, "--checkpoint", ckpt, "--device", "cpu",
            "--workers", "0", "--no-progress", "--size", "48", "--crop", "32", "--stride", "16", "--templates",
            "single", "--method", "corrclip", "--proxy", folder, "--masks", f"files:{masks}", "--refine", "masks",
            "--out", tmp_path / "out"]
    r = run_cli(capsys, *argv)  # the CLI prints each warning as one "gemseg: warning:" line
    assert re.search(r"gemseg: warning: .*2007_000001: skipped: .*no mask file 2007_000001.npz", r.err), r.err
    assert r.code == 1 and "over 1 images (1 skipped for their masks" in r.out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["speed"]["failed_images"] == 1 and result["failed"][0]["image"] == "2007_000001"
    write_mask("2007_000001")
    r = run_cli(capsys, *argv)  # resumes: the one counted image is kept, the skipped one is counted now
    assert r.code == 0, r.err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["speed"]["resumed_images"] == 1 and result["speed"]["images"] == 1 and "failed" not in result
