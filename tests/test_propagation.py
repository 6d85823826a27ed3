"""LPOSS / LPOSS+ (gemseg.propagation, gemseg.lposs) against plain re-implementations of the official
computation (vladan-stojnic/LPOSS segmentation/evaluation/lposs_eval.py, models/lposs/lposs.py): dense
matrices built in loops, a per-column conjugate gradient written from cupyx's loop, DINO's values read
with a forward hook on timm's own block as the official code hooks ``blocks[-1].attn.qkv``."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_vfm
from gemseg.backbones.base import Preprocess
from gemseg.lposs import LPOSSConfig, lposs, windows
from gemseg.propagation import LAB_SCALE, PixelGraph, conjugate_gradient, knn_affinity, propagate_sparse, rgb_to_lab

torch.set_grad_enabled(False)


def plain_cg(A: torch.Tensor, b: torch.Tensor, tol: float, maxiter: int) -> torch.Tensor:
    """cupyx.scipy.sparse.linalg.cg's loop for one right-hand side b [N], A dense [N, N]."""
    if b.norm() == 0:
        return b.clone()
    atol = tol * b.norm()
    x = torch.zeros_like(b)
    r = b - A @ x
    rho, p = 0.0, None
    for it in range(maxiter):
        rho1, rho = rho, r @ r
        p = r.clone() if it == 0 else r + (rho / rho1) * p
        q = A @ p
        alpha = rho / (p @ q)
        x = x + alpha * p
        r = r - alpha * q
        if r.norm() <= atol:
            break
    return x


def dense_knn(feats, locs, k, gamma, sigma, pw):
    """lposs_eval.py get_lposs_laplacian's W before normalization, in loops: [N, N]."""
    N = feats.shape[0]
    A = torch.zeros(N, N, dtype=feats.dtype)
    for i in range(N):
        sims = [float(feats[i] @ feats[j]) for j in range(N)]
        for j in sorted(range(N), key=lambda j: -sims[j])[:min(k, N)]:
            d = math.dist(locs[i].tolist(), locs[j].tolist())
            A[i, j] += max(sims[j], 0.0) ** gamma * math.exp(-sigma * d ** pw)
    W = A + A.T
    W.fill_diagonal_(0)
    return W


def normalized(W):
    s = W.sum(1)
    s[s == 0] = 1
    d = s.rsqrt()
    return d[:, None] * W * d[None]


def dense_pixel_graph(lab, radius, tau):
    """get_lposs_plus_laplacian's W in loops over pixels and offsets: [H*W, H*W]."""
    _, H, W = lab.shape
    M = torch.zeros(H * W, H * W, dtype=lab.dtype)
    for y, x in itertools.product(range(H), range(W)):
        for dy, dx in itertools.product(range(-radius, radius + 1), repeat=2):
            if (dy, dx) == (0, 0) or not (0 <= y + dy < H and 0 <= x + dx < W):
                continue
            M[y * W + x, (y + dy) * W + x + dx] = math.exp(-float((lab[:, y, x] - lab[:, y + dy, x + dx]).norm()) / tau)
    return M


def test_rgb_to_lab_gives_the_standard_values():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0]])
    lab = rgb_to_lab(rgb.T.reshape(3, 5, 1))[..., 0].T
    want = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [0.0, 0.0, 0.0], [53.39, 0.0, 0.0],
                         [32.30, 79.19, -107.86]])  # CIE Lab (D65) of sRGB white, red, black, 50 % grey, blue
    assert (lab - want).abs().max() < 0.05  # published values are rounded to 2 decimals; the D65 constants differ slightly


@pytest.mark.parametrize("maxiter", [1, 3, 200])
def test_conjugate_gradient_is_cupys_loop_per_column(maxiter):
    torch.manual_seed(0)
    M = torch.randn(12, 12, dtype=torch.float64)
    A = M @ M.T + 12 * torch.eye(12, dtype=torch.float64)
    B = torch.randn(12, 4, dtype=torch.float64)
    B[:, 2] = 0  # a zero right-hand side stays zero
    x = conjugate_gradient(lambda v: A @ v, B, tol=1e-6, maxiter=maxiter)
    want = torch.stack([plain_cg(A, B[:, j], 1e-6, maxiter) for j in range(4)], dim=1)
    assert torch.allclose(x, want, atol=1e-10)  # same float64 operations, summed in another order
    if maxiter == 200:  # run to convergence: the solution of the system
        assert torch.allclose(x, torch.linalg.solve(A, B), atol=1e-5)


def test_knn_affinity_is_the_official_graph():
    torch.manual_seed(1)
    feats = F.normalize(torch.randn(30, 8, dtype=torch.float64), dim=-1)
    locs = torch.rand(30, 2, dtype=torch.float64) * 100
    for k in (7, 400):  # k above N takes every node
        W = knn_affinity(feats, locs, k=k, gamma=3.0, sigma=0.01, dist_pow=1.0, chunk=8).to_dense()
        assert torch.allclose(W, dense_knn(feats, locs, k, 3.0, 0.01, 1.0), atol=1e-12)
    W = knn_affinity(feats, locs, k=7, gamma=3.0, sigma=0.01)
    y = torch.randn(30, 3, dtype=torch.float64)
    L = torch.eye(30, dtype=torch.float64) - 0.95 * normalized(W.to_dense())
    want = torch.stack([plain_cg(L, y[:, j], 1e-6, 10) for j in range(3)], dim=1)
    assert torch.allclose(propagate_sparse(W, y, alpha=0.95), want, atol=1e-10)


def test_pixel_graph_is_the_official_graph_without_storing_it():
    torch.manual_seed(2)
    lab = torch.rand(3, 5, 6, dtype=torch.float64)
    graph = PixelGraph(lab, radius=2, tau=0.3)
    Wn = normalized(dense_pixel_graph(lab, 2, 0.3))
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    assert torch.allclose(graph.normalized_matvec(x).reshape(4, -1), (Wn @ x.reshape(4, -1).T).T, atol=1e-12)
    L = torch.eye(30, dtype=torch.float64) - 0.95 * Wn
    want = torch.stack([plain_cg(L, x[j].flatten(), 1e-6, 10) for j in range(4)]).reshape(4, 5, 6)
    for chunk in (1, 3, 32):  # queries are independent: chunking changes nothing
        assert torch.allclose(graph.propagate(x, alpha=0.95, chunk=chunk), want, atol=1e-10)


def test_windows_are_mmsegs_slide_windows():
    assert windows(48, 64, 32, 16) == [(y, y + 32, x, x + 32) for y in (0, 16) for x in (0, 16, 32)]
    assert windows(40, 50, 32, 16) == [(y, y + 32, x, x + 32) for y in (0, 8) for x in (0, 16, 18)]
    assert windows(20, 20, 32, 16) == [(0, 20, 0, 20)]
    assert windows(48, 64, None, 16) == [(0, 48, 0, 64)]


def official_values(vfm, crop):
    """models/lposs/lposs.py get_dino_features: a forward hook on the last block's qkv of timm's own model,
    its values, heads concatenated, L2-normalized. crop [1, 3, h, w] in [0, 1] at the model's native size."""
    seen = {}
    handle = vfm.model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: seen.setdefault("qkv", o))
    x = (crop - torch.tensor(vfm.preprocess.mean).view(1, 3, 1, 1)) / torch.tensor(vfm.preprocess.std).view(1, 3, 1, 1)
    vfm.model.forward_features(x)
    handle.remove()
    qkv = seen["qkv"]
    B, N, C3 = qkv.shape
    heads = vfm.model.blocks[-1].attn.num_heads
    v = qkv.reshape(B, N, 3, heads, C3 // 3 // heads)[:, 1:, 2]  # (B, N-1, heads, d)
    return F.normalize(v.flatten(-2), dim=-1)[0]  # (h*w, C)


def reference_lposs(scores, rgb, vfm, cfg):
    """lposs_eval.py slide_inference (and LPOSS+), with dense matrices: [Q, H, W]."""
    Q, H, W = scores.shape
    assert (H, W, cfg.crop, cfg.stride) == (40, 48, 32, 16)
    wins = [(y1, x1) for y1 in (0, 8) for x1 in (0, 16)]  # by hand: the last row and column end at the border
    feats, ys, locs = [], [], []
    for y1, x1 in wins:
        feats.append(official_values(vfm, rgb[None, :, y1:y1 + cfg.crop, x1:x1 + cfg.crop]))
        g = cfg.crop // 8
        ys.append(F.avg_pool2d(scores[None, :, y1:y1 + cfg.crop, x1:x1 + cfg.crop], 8)[0].reshape(Q, -1).T)
        locs += [(y1 + 4 + 8 * i, x1 + 4 + 8 * j) for i in range(g) for j in range(g)]
    f, y = torch.cat(feats).double(), torch.cat(ys).double()
    Wd = dense_knn(f, torch.tensor(locs, dtype=torch.float64), cfg.k, cfg.gamma, cfg.sigma, cfg.dist_pow)
    L = torch.eye(len(f), dtype=torch.float64) - cfg.alpha * normalized(Wd)
    z = torch.stack([plain_cg(L, y[:, q], cfg.tol, cfg.maxiter) for q in range(Q)], dim=1).float()
    total, count = torch.zeros(Q, H, W), torch.zeros(1, H, W)
    g = cfg.crop // 8
    for n, (y1, x1) in enumerate(wins):
        zw = z[n * g * g:(n + 1) * g * g].T.reshape(1, Q, g, g)
        total[:, y1:y1 + cfg.crop, x1:x1 + cfg.crop] += F.interpolate(zw, size=(cfg.crop, cfg.crop), mode="bilinear")[0]
        count[:, y1:y1 + cfg.crop, x1:x1 + cfg.crop] += 1
    out = total / count
    if cfg.pixel:
        lab = (rgb_to_lab(rgb) / torch.tensor(LAB_SCALE).view(3, 1, 1)).double()
        L = torch.eye(H * W, dtype=torch.float64) - cfg.alpha * normalized(dense_pixel_graph(lab, cfg.window // 2, cfg.tau))
        out = torch.stack([plain_cg(L, out[q].flatten().double(), cfg.tol, cfg.maxiter) for q in range(Q)])
        out = out.reshape(Q, H, W).float()
    return out


@pytest.mark.parametrize("pixel", [False, True])
def test_lposs_equals_the_official_computation(pixel):
    vfm = tiny_vfm("dino", seed=3)  # patch 8, native 32x32: the 32-pixel windows need no resampling
    cfg = LPOSSConfig(crop=32, stride=16, k=20, pixel=pixel, window=3)
    torch.manual_seed(4)
    source = Preprocess()
    rgb = torch.rand(1, 3, 40, 48)
    image = (rgb - torch.tensor(source.mean).view(1, 3, 1, 1)) / torch.tensor(source.std).view(1, 3, 1, 1)
    scores = torch.randn(1, 3, 40, 48) * 0.1 + 0.2
    out = lposs(scores, image=image, source=source, vfm=vfm, config=cfg)
    want = reference_lposs(scores[0], rgb[0], vfm, cfg)
    assert out.shape == (1, 3, 40, 48)
    # fp32 features and CG against float64 loops: the largest difference seen is 1e-6 (LPOSS) and 5e-6 (LPOSS+)
    # of the largest value
    assert torch.allclose(out[0], want, rtol=1e-4, atol=1e-4 * want.abs().max())
    assert not torch.allclose(out, scores, atol=1e-3)


def test_lposs_checks_its_inputs_and_settings():
    vfm = tiny_vfm("dino")
    with pytest.raises(ValueError, match="same size"):
        lposs(torch.zeros(1, 2, 32, 32), image=torch.zeros(1, 3, 40, 40), source=Preprocess(), vfm=vfm)
    with pytest.raises(ValueError, match="SAM"):
        lposs(torch.zeros(1, 2, 64, 64), image=torch.zeros(1, 3, 64, 64), source=Preprocess(), vfm=tiny_vfm("sam"))
    for bad in (dict(alpha=1.0), dict(features="x"), dict(k=0), dict(window=2), dict(crop=0)):
        with pytest.raises(ValueError):
            LPOSSConfig(**bad)
    with pytest.raises(TypeError):
        LPOSSConfig(tau="0.1")


def test_the_refiner_runs_at_the_network_size_and_takes_settings():
    from types import SimpleNamespace

    from gemseg.lposs import LPOSSRefiner

    vfm = tiny_vfm("dino", seed=3)
    source = Preprocess()
    model = SimpleNamespace(backbone=SimpleNamespace(preprocess=source))
    torch.manual_seed(5)
    image = torch.randn(1, 3, 40, 48)
    scores = torch.randn(1, 3, 40, 48)
    cfg = LPOSSConfig(crop=32, stride=16, k=20)
    refiner = LPOSSRefiner(vfm=vfm, config=cfg)
    same = refiner(scores, image=image, model=model)
    assert torch.allclose(same, lposs(scores, image=image, source=source, vfm=vfm, config=cfg), atol=0)
    # output size other than the network input: resized to it, propagated, resized back
    big = F.interpolate(scores, size=(80, 96), mode="bilinear", align_corners=False)
    out = refiner(big, image=image, model=model, k=10, unknown_context=1)
    small = F.interpolate(big, size=(40, 48), mode="bilinear", align_corners=False)
    want = lposs(small, image=image, source=source, vfm=vfm, config=LPOSSConfig(crop=32, stride=16, k=10))
    assert out.shape == (1, 3, 80, 96)
    assert torch.allclose(out, F.interpolate(want, size=(80, 96), mode="bilinear", align_corners=False), atol=1e-6)
    plus = LPOSSRefiner(pixel=True, vfm=vfm, config=cfg)
    assert plus.config.pixel and plus.__name__ == "lposs+" and plus.describe()["window"] == 13
    assert not torch.allclose(plus(scores, image=image, model=model), same, atol=1e-3)
