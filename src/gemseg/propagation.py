"""Label propagation on affinity graphs, in torch only: the linear algebra of LPOSS and LPOSS+
(Stojnić et al., CVPR 2025, arXiv 2503.19777; code github.com/vladan-stojnic/LPOSS, MIT).

Given a symmetric non-negative affinity ``W`` [N, N] with its diagonal removed, the normalized graph is
``Wn = D^-1/2 W D^-1/2`` (``D`` the row sums, a zero row sum counted as 1) and propagation solves

    (I − α Wn) Z = Y        (Y [N, Q]: initial scores, one column per query)

with conjugate gradients, each column on its own, started at 0 and stopped when ``‖r‖ ≤ tol · ‖y‖`` or
after ``maxiter`` steps, as ``cupyx.scipy.sparse.linalg.cg`` does in the official code (which calls it
with ``tol=1e-6, maxiter=10``: ten steps, not the exact solution).

Two graphs:

- :func:`knn_affinity` over patch features (LPOSS): each node's ``k`` nearest neighbours by inner
  product, ``w_ij = max(f_i·f_j, 0)^γ · exp(−σ ‖p_i − p_j‖^pow)`` with ``p`` pixel positions, then
  ``W + Wᵀ``; held as a sparse tensor with at most ``2 N k`` entries, built in row chunks.
- :class:`PixelGraph` over pixels (LPOSS+): every pixel joined to the others in its
  ``(2 r + 1)²`` window, ``w_ij = exp(−‖lab_i − lab_j‖ / τ)`` on CIE Lab colours scaled by
  ``(100, 128, 128)``. It is never stored as a matrix: each product recomputes the weights of one
  offset at a time, so memory stays at a few copies of the scores whatever the radius.
"""
from __future__ import annotations

from typing import Callable

import torch

_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                 (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))  # sRGB (D65) -> CIE XYZ
_WHITE_D65 = (0.95047, 1.0, 1.08883)  # reference white, observer 2°
LAB_SCALE = (100.0, 128.0, 128.0)  # lposs_eval.py get_pixel_connections: Lab divided by these


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] [..., 3, H, W] -> CIE Lab (D65, 2°) [..., 3, H, W]: L in [0, 100], a and b
    about [-128, 127]. The sRGB curve, the XYZ matrix and the cube root with the linear segment below
    ``0.008856`` are the standard formulas (the official code calls kornia's ``rgb_to_lab``)."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    m = torch.tensor(_XYZ_FROM_RGB, dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin)
    xyz = xyz / torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    thr = 0.008856
    f = torch.where(xyz > thr, xyz.clamp(min=thr).pow(1 / 3), 7.787 * xyz + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, tol: float = 1e-6,
                       maxiter: int = 10) -> torch.Tensor:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given by ``matvec`` ([N, Q] -> [N, Q]),
    each of the ``Q`` columns by its own unpreconditioned CG from ``x = 0``: a column stops when its
    residual norm is at most ``tol`` times the norm of its ``b`` (a zero column returns 0), or after
    ``maxiter`` steps. Running the columns together changes nothing: each keeps its own step sizes."""
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    x = torch.zeros_like(b)
    r = b.clone()
    atol = tol * b.norm(dim=0)  # (Q,)
    active = b.norm(dim=0) > 0  # cupy returns b itself (here 0) for a zero right-hand side
    p = torch.zeros_like(b)
    rho = torch.ones(b.shape[1], dtype=b.dtype, device=b.device)
    for it in range(maxiter):
        if not active.any():
            break
        rho_new = (r * r).sum(0)  # (Q,)
        beta = torch.where(active, rho_new / torch.where(rho == 0, torch.ones_like(rho), rho), 0.0)
        p = r + (beta if it else torch.zeros_like(beta)) * p
        q = matvec(p)
        pq = (p * q).sum(0)
        alpha = torch.where(active, rho_new / torch.where(pq == 0, torch.ones_like(pq), pq), 0.0)
        x = x + alpha * p
        r = r - alpha * q
        rho = rho_new
        active = active & (r.norm(dim=0) > atol)
    return x


def knn_affinity(feats: torch.Tensor, locations: torch.Tensor, *, k: int, gamma: float, sigma: float,
                 dist_pow: float = 1.0, chunk: int = 2048) -> torch.Tensor:
    """LPOSS's patch graph. ``feats`` [N, C] L2-normalized, ``locations`` [N, 2] pixel positions (row,
    column) -> ``W`` [N, N] sparse (coalesced COO), symmetric, zero diagonal.

    For each node ``i`` and each of its ``min(k, N)`` nearest nodes ``j`` by inner product (``i``
    itself among them), ``w_ij = max(f_i·f_j, 0)^γ · exp(−σ ‖p_i − p_j‖^dist_pow)``; then ``W + Wᵀ``
    (a pair found from both ends counts twice, as the official sparse sum does) and the diagonal is
    dropped. Similarities are computed ``chunk`` rows at a time (memory ``chunk · N``)."""
    N = feats.shape[0]
    k = min(int(k), N)
    rows, cols, vals = [], [], []
    for start in range(0, N, chunk):
        f = feats[start:start + chunk]
        sims, idx = (f @ feats.T).topk(k, dim=1)  # (c, k)
        dist = (locations[start:start + chunk, None, :] - locations[idx]).norm(dim=-1)  # (c, k)
        w = sims.clamp(min=0).pow(gamma) * torch.exp(-sigma * dist.pow(dist_pow))
        rows.append(torch.arange(start, start + f.shape[0], device=feats.device).repeat_interleave(k))
        cols.append(idx.flatten())
        vals.append(w.flatten())
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    keep = r != c
    r, c, v = r[keep], c[keep], v[keep]
    idx = torch.stack([torch.cat([r, c]), torch.cat([c, r])])
    return torch.sparse_coo_tensor(idx, torch.cat([v, v]), (N, N), check_invariants=True).coalesce()


def propagate_sparse(W: torch.Tensor, y: torch.Tensor, *, alpha: float, tol: float = 1e-6,
                     maxiter: int = 10) -> torch.Tensor:
    """Propagate ``y`` [N, Q] on the sparse affinity ``W`` [N, N] (symmetric, zero diagonal): the CG
    solution of ``(I − α D^-1/2 W D^-1/2) z = y`` (:func:`conjugate_gradient`), [N, Q]."""
    d = torch.sparse.sum(W, dim=1).to_dense()
    d = torch.where(d == 0, torch.ones_like(d), d).rsqrt()  # (N,)
    i, j = W.indices()
    Wn = torch.sparse_coo_tensor(W.indices(), W.values() * d[i] * d[j], W.shape, check_invariants=True).coalesce()
    return conjugate_gradient(lambda x: x - alpha * torch.sparse.mm(Wn, x), y, tol=tol, maxiter=maxiter)


class PixelGraph:
    """LPOSS+'s pixel graph of one image, applied without storing it.

    Args:
        lab: [3, H, W] CIE Lab colours already divided by :data:`LAB_SCALE`.
        radius: neighbours are the pixels at offsets ``(dy, dx)`` with ``|dy|, |dx| ≤ radius`` but not
            ``(0, 0)`` (the official ``neigh = r // 2``).
        tau: the colour bandwidth ``τ`` of ``exp(−‖Δlab‖ / τ)``.
    """

    def __init__(self, lab: torch.Tensor, *, radius: int, tau: float):
        if radius < 1:
            raise ValueError(f"the pixel neighbourhood radius must be >= 1, got {radius}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        self.lab, self.radius, self.tau = lab, int(radius), float(tau)
        self.offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                        if (dy, dx) != (0, 0)]
        H, W = lab.shape[-2:]
        deg = lab.new_zeros(H, W)
        for off in self.offsets:
            w, dst, _ = self._weights(off)
            deg[dst] += w
        self.dinv = torch.where(deg == 0, torch.ones_like(deg), deg).rsqrt()  # (H, W)

    def _weights(self, off: tuple[int, int]):
        """Weights of the edges ``p -> p + off`` for every ``p`` whose neighbour is inside the image, and
        the slices of ``p`` and of ``p + off``."""
        H, W = self.lab.shape[-2:]
        dy, dx = off
        dst = (slice(max(0, -dy), H - max(0, dy)), slice(max(0, -dx), W - max(0, dx)))
        src = (slice(max(0, dy), H - max(0, -dy)), slice(max(0, dx), W - max(0, -dx)))
        diff = self.lab[(slice(None),) + dst] - self.lab[(slice(None),) + src]  # (3, h', w')
        return torch.exp(-diff.pow(2).sum(0).sqrt() / self.tau), dst, src

    def normalized_matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``D^-1/2 W D^-1/2 x`` for ``x`` [Q, H, W]."""
        xs = x * self.dinv
        out = torch.zeros_like(x)
        for off in self.offsets:
            w, dst, src = self._weights(off)
            out[(slice(None),) + dst] += w * xs[(slice(None),) + src]
        return out * self.dinv

    def propagate(self, y: torch.Tensor, *, alpha: float, tol: float = 1e-6, maxiter: int = 10,
                  chunk: int = 32) -> torch.Tensor:
        """The CG solution of ``(I − α Wn) z = y`` for ``y`` [Q, H, W], ``chunk`` queries at a time
        (columns are independent, so chunking changes nothing but memory), [Q, H, W]."""
        Q, H, W = y.shape
        outs = []
        for start in range(0, Q, chunk):
            yc = y[start:start + chunk]
            c = yc.shape[0]

            def matvec(v: torch.Tensor) -> torch.Tensor:  # (H*W, c) -> (H*W, c)
                grid = v.T.reshape(c, H, W)
                return (grid - alpha * self.normalized_matvec(grid)).reshape(c, H * W).T

            z = conjugate_gradient(matvec, yc.reshape(c, H * W).T, tol=tol, maxiter=maxiter)
            outs.append(z.T.reshape(c, H, W))
        return torch.cat(outs)
