"""Analysis quantities against hand computations on synthetic masks and tokens, and on tiny models."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gemseg
from gemseg import analysis
from gemseg.analysis import (IGNORE_INDEX, Alignment, Grouping, cluster_figure, iteration_analysis, iteration_tokens,
                             kmeans, layer_analysis, layer_tokens, merge, method_analysis, patch_labels, token_clusters,
                             token_grouping, vl_alignment)
from gemseg.config import GEMConfig
from gemseg.gem import gem_tokens

torch.set_grad_enabled(False)
X = IGNORE_INDEX


# --- patch labels --------------------------------------------------------------------------------------
def test_patch_labels_majority_threshold_and_padding():
    mask = torch.tensor([[0, 0, 1, 1, 2, X],
                         [0, 1, 1, 1, X, X],
                         [3, 3, 3, 0, 2, 2],
                         [3, 3, 0, 0, 2, 2]])
    # 2x2 patches: {0,0,0,1} -> 0; {1,1,1,1} -> 1; {2,X,X,X} -> 2 covers 1/4 -> X
    #              {3,3,3,3} -> 3; {3,0,0,0} -> 0; {2,2,2,2} -> 2
    assert patch_labels(mask, 2).tolist() == [[[0, 1, X], [3, 0, 2]]]
    assert patch_labels(mask, 2, min_fraction=0.25).tolist() == [[[0, 1, 2], [3, 0, 2]]]
    assert patch_labels(mask, 2, min_fraction=1.0).tolist() == [[[X, 1, X], [3, X, 2]]]
    # a tie takes the smaller label; 5x5 pads to 6x6 with ignore: edge patches are half padding, the corner 3/4
    tie = torch.tensor([[4, 4], [1, 1]])
    assert patch_labels(tie, 2).tolist() == [[[1]]]
    m5 = torch.zeros(5, 5, dtype=torch.long)
    assert patch_labels(m5, 2).tolist() == [[[0, 0, 0], [0, 0, 0], [0, 0, X]]]
    assert patch_labels(m5, 2, min_fraction=0.75).tolist() == [[[0, 0, X], [0, 0, X], [X, X, X]]]
    assert patch_labels(np.zeros((2, 4, 4), dtype=np.int64), (2, 4)).shape == (2, 2, 1)
    with pytest.raises(TypeError):
        patch_labels(torch.zeros(4, 4), 2)
    with pytest.raises(ValueError):
        patch_labels(mask, 2, min_fraction=0)


# --- token grouping -----------------------------------------------------------------------------------
def _cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def test_token_grouping_by_hand():
    # 2x2 grid, labels [[0, 0], [1, X]]: one same-label pair (0, 1), two cross pairs (0, 2), (1, 2)
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])  # [P, D]
    labels = torch.tensor([[[0, 0], [1, X]]])
    g = token_grouping(t[None], labels)
    assert (g.intra_pairs, g.inter_pairs) == (2, 4)  # ordered pairs
    assert math.isclose(g.intra, 1 / math.sqrt(2), rel_tol=1e-9)  # cos((1, 0), (1, 1))
    assert math.isclose(g.inter, (0 + 1 / math.sqrt(2)) / 2, rel_tol=1e-9)  # cos(t0, t2), cos(t1, t2)
    assert math.isclose(g.gap, 1 / math.sqrt(2) - 1 / (2 * math.sqrt(2)), rel_tol=1e-6)
    # [B, D, gh, gw] input is the same
    assert token_grouping(t.T.reshape(1, 2, 2, 2), labels) == g


def test_token_grouping_equals_a_pair_loop_and_adds_over_images():
    torch.manual_seed(0)
    feats = torch.randn(2, 12, 5)
    labels = torch.randint(0, 3, (2, 3, 4))
    labels[0, 0, 0] = X
    g = token_grouping(feats, labels)
    same = diff = 0.0
    n_same = n_diff = 0
    for b in range(2):
        lab = labels[b].flatten()
        for i, j in itertools.permutations(range(12), 2):
            if X in (lab[i], lab[j]):
                continue
            c = _cos(feats[b, i], feats[b, j])
            if lab[i] == lab[j]:
                same, n_same = same + c, n_same + 1
            else:
                diff, n_diff = diff + c, n_diff + 1
    assert (g.intra_pairs, g.inter_pairs) == (n_same, n_diff)
    assert math.isclose(g.intra, same / n_same, rel_tol=1e-6) and math.isclose(g.inter, diff / n_diff, rel_tol=1e-6)
    assert token_grouping(feats[:1], labels[:1]) + token_grouping(feats[1:], labels[1:]) == g
    empty = token_grouping(feats[:1], torch.full((1, 3, 4), X))
    assert empty == Grouping() and math.isnan(empty.intra)


# --- vision-language alignment ------------------------------------------------------------------------
def test_vl_alignment_by_hand():
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])  # class c <-> axis c
    t = torch.tensor([[2.0, 0.0, 0.0],   # label 0: cos 1 to its class, others 0, 0
                      [1.0, 1.0, 0.0],   # label 1: cos 1/sqrt2; others 1/sqrt2, 0; top1 tie -> class 0: miss
                      [0.0, 0.0, 1.0],   # label X: ignored
                      [0.0, 1.0, 1.0]])  # label 0: cos 0; others 1/sqrt2, 1/sqrt2; miss
    labels = torch.tensor([[[0, 1], [X, 0]]])
    a = vl_alignment(t[None], labels, text)
    r = 1 / math.sqrt(2)
    assert a.tokens == 3 and a.top1 == 1
    assert math.isclose(a.correct, (1 + r + 0) / 3, rel_tol=1e-9)
    assert math.isclose(a.other, (0 + r / 2 + r) / 3, rel_tol=1e-9)
    assert math.isclose(a.accuracy, 1 / 3) and math.isclose(a.gap, a.correct - a.other)
    assert a + Alignment() == a
    with pytest.raises(ValueError, match="labels must be in"):
        vl_alignment(t[None], torch.tensor([[[0, 3], [X, 0]]]), text)
    with pytest.raises(ValueError, match="at least two"):
        vl_alignment(t[None], labels, text[:1])
    with pytest.raises(ValueError, match="do not match"):
        vl_alignment(t.T.reshape(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long), text)


def test_records_merge_by_key():
    from gemseg.analysis import Record

    a = Record((("layer", 1),), Grouping(1.0, 2, 0.5, 4), Alignment(1.0, 0.5, 1, 2))
    b = Record((("layer", 2),), Grouping(0.0, 0, 0.0, 0), Alignment())
    merged = merge([a, b, a])
    assert [m.key for m in merged] == [(("layer", 1),), (("layer", 2),)]
    assert merged[0].grouping == Grouping(2.0, 4, 1.0, 8)
    row = merged[0].as_dict()
    assert row["layer"] == 1 and row["intra"] == 0.5 and row["inter"] == 0.125 and row["top1"] == 0.5


# --- per layer and per iteration on tiny models ---------------------------------------------------------
CFG = GEMConfig(depth=3)  # the last two of four blocks carry the GEM path


def test_layer_tokens_follow_both_paths(backbone):
    images = torch.randn(2, 3, 32, 40)
    gem, ori = gem_tokens(backbone, images, CFG, return_ori=True)
    g, o = layer_tokens(backbone, images, CFG), layer_tokens(backbone, images, CFG, path="ori")
    assert len(g) == len(o) == len(backbone.blocks) == 4
    assert torch.allclose(g[-1], gem, atol=1e-6) and torch.allclose(o[-1], ori, atol=1e-6)
    assert torch.equal(g[0], o[0]) and torch.equal(g[1], o[1])  # before the first GEM block: same kernels, inputs
    assert (g[2] - o[2]).abs().max() > 1e-3
    # a block's output is the head of the library's blocks run that far
    x = backbone.embed(images)
    for blk in backbone.blocks[:2]:
        x = blk.plain(x)
    assert torch.allclose(o[1], backbone.head(x), atol=1e-6)
    with pytest.raises(ValueError, match="path"):
        layer_tokens(backbone, images, CFG, path="x")


def test_iteration_tokens_are_gem_with_that_many_iterations(backbone):
    images = torch.randn(1, 3, 32, 32)
    toks = iteration_tokens(backbone, images, CFG, iterations=(0, 2))
    assert torch.equal(toks[1], gem_tokens(backbone, images, GEMConfig(depth=3, iterations=2))[0])
    assert (toks[0] - toks[1]).abs().max() > 1e-4


def _synthetic(B=2, H=32, W=40):
    """Masks of two rectangles on a background (labels 0, 1, 2) plus an ignored strip."""
    masks = torch.zeros(B, H, W, dtype=torch.long)
    masks[:, 4:20, 4:20] = 1
    masks[:, 16:, 24:] = 2
    masks[:, :, -3:] = X
    return masks


def test_layer_analysis_rows_match_the_quantities_on_layer_tokens(backbone):
    model = gemseg.GEMModel(backbone, config=CFG)
    images, masks = torch.randn(2, 3, 32, 40), _synthetic()
    names = ["background", "a cat", "a dog"]
    records = layer_analysis(model, images, masks, names)
    assert [dict(r.key)["path"] for r in records] == ["ori"] * 4 + ["gem"] * 4
    assert [dict(r.key)["layer"] for r in records] == [1, 2, 3, 4] * 2
    labels = patch_labels(masks, backbone.patch_size)
    tokens = layer_tokens(backbone, images, CFG)[2][:, backbone.num_prefix_tokens:]
    text = model.encode_text(names)
    assert records[6].grouping == token_grouping(tokens, labels)
    assert records[6].alignment == vl_alignment(tokens, labels, text)
    for r in records:
        row = r.as_dict()
        assert -1 <= row["intra"] <= 1 and -1 <= row["inter"] <= 1 and 0 <= row["top1"] <= 1
    # the final GEM row is what the model's heatmaps are made of
    feats = model.encode_image(images)
    assert math.isclose(records[-1].alignment.correct, vl_alignment(feats, labels, text).correct, rel_tol=1e-5)


def test_iteration_and_method_analyses(backbone):
    model = gemseg.GEMModel(backbone, config=CFG)
    images, masks = torch.randn(1, 3, 32, 40), _synthetic(B=1)
    text = model.encode_text(["background", "a cat", "a dog"])
    its = iteration_analysis(model, images, masks, text, iterations=(0, 1, 3))
    assert [dict(r.key)["iterations"] for r in its] == [0, 1, 3]
    with pytest.warns(UserWarning, match="ignores the GEM setting"):
        ms = method_analysis(model, images, masks, text, methods=("gem", "clip", "clearclip"))
    assert [dict(r.key)["method"] for r in ms] == ["gem", "clip", "clearclip"]
    assert math.isclose(ms[0].grouping.intra, its[1].grouping.intra, rel_tol=1e-5)  # gem: 1 iteration
    assert ms[0].grouping.intra != ms[1].grouping.intra
    with pytest.raises(ValueError, match="do not match"):
        layer_analysis(model, images, masks[:, :16], text)


# --- clusters -----------------------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters_deterministically():
    torch.manual_seed(0)
    centers = torch.eye(4)[:3] * 10
    truth = torch.arange(3).repeat_interleave(20)
    x = centers[truth] + 0.3 * torch.randn(60, 4)
    labels, c = kmeans(x, 3, seed=1)
    # the same partition up to renaming
    assert all(len(set(labels[truth == t].tolist())) == 1 for t in range(3))
    assert len(set(labels.tolist())) == 3
    assert torch.allclose(c.norm(dim=-1), torch.ones(3))
    assert torch.equal(kmeans(x, 3, seed=1)[0], labels)
    assert kmeans(x, 1)[0].eq(0).all()
    with pytest.raises(ValueError):
        kmeans(x, 61)


def test_token_clusters_and_the_cluster_figure(backbone):
    model = gemseg.GEMModel(backbone, config=CFG)
    images = torch.randn(2, 3, 32, 40)
    labels = token_clusters(model, images, k=3)
    assert labels.shape == (2, 4, 5) and labels.max() < 3
    # one image alone runs other matmul shapes than the batch: features agree to float32 rounding, so a
    # token at a near-tie between two clusters may move; nearly all keep their cluster
    assert (token_clusters(model, images[0], k=3) == labels[0]).float().mean() >= 0.9
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    fig = cluster_figure(model, photo, k=4, size=(32, 48))
    assert fig.size == (2 * 48 + 4, 32) and fig.mode == "RGB"


def test_viz_draws_given_clusters_and_does_not_compute_them():
    from gemseg import viz

    assert not hasattr(viz, "cluster_figure") and not hasattr(viz, "token_clusters")  # viz draws labels it is given
    assert not hasattr(analysis, "render_clusters") and not hasattr(analysis, "palette")  # one of each: gemseg.viz
