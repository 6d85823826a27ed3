"""The analysis the GEM paper uses to explain GEM, on any backbone and method.

* **Token grouping**: the mean cosine similarity of patch tokens of the same object (``intra``) against
  that of tokens of different objects (``inter``), objects taken from ground-truth masks downsampled to
  the patch grid (:func:`patch_labels`).
* **Vision-language alignment**: the mean cosine similarity of a patch token to the text embedding of
  its own class (``correct``) against the mean over the other classes (``other``), and how often its
  own class is the most similar (``top1``).
* Both per layer (every block's output through the final norm and projection, on the GEM and the original
  path), per number of self-self iterations, and per method.
* Token clusters: spherical k-means of the dense tokens (in torch); :func:`cluster_figure`
  draws them next to the image.

Statistics are sums and counts (:class:`Grouping`, :class:`Alignment`) so that batches add up
(:func:`merge`); means are taken once at the end, over all pairs / all tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbones.base import Backbone
from .config import GEMConfig
from .gem import gem_tokens

IGNORE_INDEX = 255


# --- statistics --------------------------------------------------------------------------------------
def _mean(total: float, count: int) -> float:
    return total / count if count else float("nan")


class _Sums:
    """Dataclasses of running sums: ``a + b`` adds them field by field (e.g. across processes)."""

    def __add__(self, other):
        return type(self)(*(x + y for x, y in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


@dataclass
class Grouping(_Sums):
    """Token grouping: sums of cosine similarities over ordered pairs of distinct labelled patches."""

    intra_sum: float = 0.0  # pairs with the same label
    intra_pairs: int = 0
    inter_sum: float = 0.0  # pairs with different labels
    inter_pairs: int = 0

    @property
    def intra(self) -> float:
        return _mean(self.intra_sum, self.intra_pairs)

    @property
    def inter(self) -> float:
        return _mean(self.inter_sum, self.inter_pairs)

    @property
    def gap(self) -> float:
        return self.intra - self.inter


@dataclass
class Alignment(_Sums):
    """Vision-language alignment, summed over labelled patch tokens."""

    correct_sum: float = 0.0  # cos(token, text of its class)
    other_sum: float = 0.0  # mean over the other classes of cos(token, text of that class)
    top1: int = 0  # tokens whose most similar text is their own class
    tokens: int = 0

    @property
    def correct(self) -> float:
        return _mean(self.correct_sum, self.tokens)

    @property
    def other(self) -> float:
        return _mean(self.other_sum, self.tokens)

    @property
    def gap(self) -> float:
        return self.correct - self.other

    @property
    def accuracy(self) -> float:
        return _mean(self.top1, self.tokens)


@dataclass
class Record:
    """The statistics of one setting, ``key`` e.g. ``(("path", "gem"), ("layer", 12))``."""

    key: tuple
    grouping: Grouping
    alignment: Alignment

    def as_dict(self) -> dict:
        g, a = self.grouping, self.alignment
        return {**dict(self.key), "intra": g.intra, "inter": g.inter, "grouping_gap": g.gap,
                "text_correct": a.correct, "text_other": a.other, "alignment_gap": a.gap, "top1": a.accuracy}


def merge(records: Iterable[Record]) -> list[Record]:
    """Add up records with the same key (e.g. over batches), in order of first appearance."""
    out: dict[tuple, Record] = {}
    for r in records:
        if r.key in out:
            out[r.key] = Record(r.key, out[r.key].grouping + r.grouping, out[r.key].alignment + r.alignment)
        else:
            out[r.key] = r
    return list(out.values())


# --- labels and features -----------------------------------------------------------------------------
def patch_labels(masks: torch.Tensor | np.ndarray, patch_size: int | Sequence[int], *,
                 ignore_index: int = IGNORE_INDEX, min_fraction: float = 0.5) -> torch.Tensor:
    """Ground-truth masks ``[B, H, W]`` (or ``[H, W]``) of integer labels -> patch labels ``[B, gh, gw]``.

    Masks are padded right and bottom with ``ignore_index`` to multiples of the patch size (as
    :class:`~gemseg.GEMModel` pads images). A patch takes its most frequent label (ties: the smaller
    label) if that label covers at least ``min_fraction`` of its pixels, else ``ignore_index``.
    """
    m = torch.as_tensor(masks)
    if m.is_floating_point() or m.dtype == torch.bool:
        raise TypeError(f"masks must hold integer labels, got {m.dtype}")
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be [B, H, W] or [H, W], got {list(m.shape)}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    m = m.long()
    m = F.pad(m, (0, -m.shape[-1] % pw, 0, -m.shape[-2] % ph), value=ignore_index)
    B, H, W = m.shape
    classes = m.unique()
    classes = classes[classes != ignore_index]
    if classes.numel() == 0:
        return torch.full((B, H // ph, W // pw), ignore_index, dtype=torch.long, device=m.device)
    onehot = (m[:, None] == classes.view(1, -1, 1, 1)).float()  # (B, K, H, W)
    frac = F.avg_pool2d(onehot, kernel_size=(ph, pw))  # (B, K, gh, gw)
    best, idx = frac.max(dim=1)  # ties: first, i.e. the smaller label
    return torch.where(best >= min_fraction, classes[idx], torch.full_like(idx, ignore_index))


def _patch_tokens(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """features [B, D, gh, gw] or [B, gh*gw, D]; labels [B, gh, gw] -> ([B, P, D], [B, P])."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be [B, gh, gw], got {list(labels.shape)}")
    B, gh, gw = labels.shape
    if features.ndim == 4:
        if features.shape[0] != B or features.shape[2:] != (gh, gw):
            raise ValueError(f"features {list(features.shape)} do not match labels {list(labels.shape)}")
        features = features.flatten(2).transpose(1, 2)
    if features.ndim != 3 or features.shape[:2] != (B, gh * gw):
        raise ValueError(f"features must be [B, D, {gh}, {gw}] or [B, {gh * gw}, D], got {list(features.shape)}")
    return features, labels.reshape(B, -1).to(features.device)


def token_grouping(features: torch.Tensor, labels: torch.Tensor, *,
                   ignore_index: int = IGNORE_INDEX) -> Grouping:
    """Token grouping of patch ``features`` ([B, D, gh, gw] or [B, gh*gw, D]) under ``labels`` [B, gh, gw].

    Over the ordered pairs ``i ≠ j`` of labelled patches of one image: the summed cosine similarity of
    pairs with the same label and of pairs with different labels, and the pair counts.
    """
    feats, labs = _patch_tokens(features, labels)
    out = Grouping()
    for f, lab in zip(feats, labs):
        keep = lab != ignore_index
        t = F.normalize(f[keep].double(), dim=-1)  # (n, D)
        lab = lab[keep]
        n = t.shape[0]
        if n == 0:
            continue
        classes, inverse = lab.unique(return_inverse=True)
        sums = torch.zeros(len(classes), t.shape[1], dtype=t.dtype, device=t.device).index_add_(0, inverse, t)
        counts = torch.bincount(inverse, minlength=len(classes)).double()  # (K,)
        same = (sums.pow(2).sum() - n).item()  # sum_c |S_c|^2 counts each self-pair once (cos = 1)
        total = (sums.sum(0).pow(2).sum() - n).item()
        out = out + Grouping(same, int((counts * (counts - 1)).sum().item()), total - same,
                             int(n * n - counts.pow(2).sum().item()))
    return out


def vl_alignment(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, *,
                 ignore_index: int = IGNORE_INDEX) -> Alignment:
    """Vision-language alignment of patch ``features`` with class embeddings ``text`` [C, D] (row ``c`` is
    the text of label ``c``); ``labels`` [B, gh, gw] hold values in ``[0, C)`` or ``ignore_index``."""
    feats, labs = _patch_tokens(features, labels)
    C = text.shape[0]
    if C < 2:
        raise ValueError("vision-language alignment needs text for at least two classes")
    keep = labs != ignore_index
    lab = labs[keep]
    if lab.numel() and (lab.min() < 0 or lab.max() >= C):
        raise ValueError(f"labels must be in [0, {C}) (one text row per label) or {ignore_index}, "
                         f"got values {lab.unique().tolist()[:8]}")
    sims = F.normalize(feats[keep].double(), dim=-1) @ F.normalize(text.to(feats.device).double(), dim=-1).T
    correct = sims.gather(1, lab[:, None])[:, 0]  # (n,)
    other = (sims.sum(1) - correct) / (C - 1)
    top1 = int((sims.argmax(1) == lab).sum().item())
    return Alignment(correct.sum().item(), other.sum().item(), top1, int(lab.numel()))


# --- tokens per layer and per iteration --------------------------------------------------------------
@torch.no_grad()
def layer_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                 path: str = "gem") -> list[torch.Tensor]:
    """Every block's output in the joint space: a list of L tensors [B, N, D], ``head`` of the tokens
    after block 1..L. ``path="gem"``: the GEM path (the original tokens before the first GEM block);
    ``"ori"``: the unmodified encoder. The intermediates of :func:`~gemseg.gem.gem_tokens`, whose output
    is the last entry."""
    if path not in ("gem", "ori"):
        raise ValueError(f"path must be 'gem' or 'ori', got {path!r}")
    return gem_tokens(backbone, images, config, return_intermediates=True)[2][path]


@torch.no_grad()
def iteration_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *,
                     iterations: Sequence[int] = (0, 1, 2, 3)) -> list[torch.Tensor]:
    """GEM's final tokens [B, N, D] for each number of self-self iterations in ``iterations``."""
    return [gem_tokens(backbone, images, dataclasses.replace(config, iterations=int(i)))[0] for i in iterations]


# --- analyses on a model -----------------------------------------------------------------------------
def _inputs(model, images, masks, text, ignore_index, min_fraction):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise TypeError("images must be a normalized [B, 3, H, W] tensor (see GEMModel.preprocess)")
    labels = patch_labels(masks, model.patch_size, ignore_index=ignore_index, min_fraction=min_fraction)
    if labels.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks {list(masks.shape)} do not match images {list(images.shape)}")
    if not isinstance(text, torch.Tensor):
        text = model.encode_text(list(text))
    ph, pw = model.patch_size
    padded = F.pad(images.to(model.device).float(), (0, -images.shape[-1] % pw, 0, -images.shape[-2] % ph))
    return padded, labels, text


def _record(key, tokens, prefix, labels, text, ignore_index):
    patches = tokens[:, prefix:].float()
    return Record(key, token_grouping(patches, labels, ignore_index=ignore_index),
                  vl_alignment(patches, labels, text, ignore_index=ignore_index))


def layer_analysis(model, images: torch.Tensor, masks, text, *, paths: Sequence[str] = ("ori", "gem"),
                   ignore_index: int = IGNORE_INDEX, min_fraction: float = 0.5) -> list[Record]:
    """Token grouping and alignment after every block, for the original and the GEM path of ``model``
    (a :class:`~gemseg.GEMModel`; fp32). ``images`` [B, 3, H, W] normalized, ``masks`` [B, H, W] labels
    indexing ``text`` (class names, or embeddings [C, D]). Keys: ``path``, ``layer`` (1-based)."""
    if any(p not in ("gem", "ori") for p in paths):
        raise ValueError(f"paths must be 'gem' and/or 'ori', got {list(paths)}")
    images, labels, text = _inputs(model, images, masks, text, ignore_index, min_fraction)
    prefix = model.backbone.num_prefix_tokens
    with torch.no_grad():
        layers = gem_tokens(model.backbone, images, model.config, return_intermediates=True)[2]
    return [_record((("path", p), ("layer", i + 1)), t, prefix, labels, text, ignore_index)
            for p in paths for i, t in enumerate(layers[p])]


def iteration_analysis(model, images: torch.Tensor, masks, text, *, iterations: Sequence[int] = (0, 1, 2, 3),
                       ignore_index: int = IGNORE_INDEX, min_fraction: float = 0.5) -> list[Record]:
    """Token grouping and alignment of GEM's output per number of self-self iterations (key ``iterations``)."""
    images, labels, text = _inputs(model, images, masks, text, ignore_index, min_fraction)
    toks = iteration_tokens(model.backbone, images, model.config, iterations=iterations)
    return [_record((("iterations", int(i)),), t, model.backbone.num_prefix_tokens, labels, text, ignore_index)
            for i, t in zip(iterations, toks)]


def method_analysis(model, images: torch.Tensor, masks, text, *, methods: Sequence[str] | None = None,
                    ignore_index: int = IGNORE_INDEX, min_fraction: float = 0.5) -> list[Record]:
    """Token grouping and alignment of the final dense tokens of each method (key ``method``; default:
    every registered method that needs no proxy, i.e. shares the patch grid) on views of ``model``
    (:meth:`~gemseg.GEMModel.variant`: its backbone, settings, precision, position embeddings and proxy)."""
    from .methods import get_method, list_methods

    images, labels, text = _inputs(model, images, masks, text, ignore_index, min_fraction)
    out = []
    clip_only = [m for m in list_methods() if "proxy" not in get_method(m).needs]  # same patch grid
    for name in methods if methods is not None else clip_only:
        view = model.variant(method=name)
        feats = view.encode_image(images, text=text if "text" in get_method(name).needs else None)  # ResCLIP: SFR
        out.append(Record((("method", name),), token_grouping(feats, labels, ignore_index=ignore_index),
                          vl_alignment(feats, labels, text, ignore_index=ignore_index)))
    return out


# --- token clusters ----------------------------------------------------------------------------------
def kmeans(x: torch.Tensor, k: int, *, iters: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means of ``x`` [N, D] (cosine similarity; k-means++ seeding from a fixed ``seed``).

    Returns ``(labels [N], centers [k, D])``, centers L2-normalized. Deterministic for a given input.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be [N, D], got {list(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be between 1 and the number of points ({x.shape[0]}), got {k}")
    x = F.normalize(x.float(), dim=-1)
    gen = torch.Generator().manual_seed(seed)
    centers = [x[torch.randint(x.shape[0], (1,), generator=gen).item()]]
    for _ in range(1, k):  # k-means++: the next center with probability ~ squared distance to the nearest
        d2 = (2 - 2 * (x @ torch.stack(centers).T).max(dim=1).values).clamp_min(0)
        p = d2.cpu() / d2.sum().cpu() if d2.sum() > 0 else torch.full((x.shape[0],), 1.0 / x.shape[0])
        centers.append(x[torch.multinomial(p, 1, generator=gen).item()])
    centers = torch.stack(centers)  # (k, D)
    labels = None
    for _ in range(iters):
        new = (x @ centers.T).argmax(dim=1)  # (N,)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        empty = torch.bincount(labels, minlength=k) == 0
        if empty.any():  # re-seed empty clusters at the points worst served by their centers
            worst = (x * centers[labels]).sum(1).argsort()[: int(empty.sum())]
            sums[empty] = x[worst]
        centers = F.normalize(sums, dim=-1)
    return labels, centers


@torch.no_grad()
def token_clusters(model, images: torch.Tensor, k: int = 8, *, return_ori: bool = False,
                   seed: int = 0) -> torch.Tensor:
    """Cluster each image's dense tokens (:meth:`~gemseg.GEMModel.encode_image`) into ``k`` groups.
    ``images`` [B, 3, H, W] (or [3, H, W]) normalized -> labels [B, gh, gw] (or [gh, gw])."""
    single = images.ndim == 3
    feats = model.encode_image(images[None] if single else images, return_ori=return_ori)  # (B, D, gh, gw)
    out = torch.stack([kmeans(f.flatten(1).T, k, seed=seed)[0].reshape(f.shape[1:]) for f in feats])
    return out[0] if single else out


def cluster_figure(model, image, k: int = 8, *, size: int | Sequence[int] | None = 448, return_ori: bool = False,
                   alpha: float = 1.0, seed: int = 0):
    """One picture: ``image`` (PIL or uint8 array, resized to ``size`` like the model input) next to the
    clusters of its dense tokens (:func:`token_clusters` of the :class:`~gemseg.GEMModel` ``model``), drawn
    by :func:`gemseg.viz.render_clusters`."""
    from PIL import Image

    from .transforms import to_pil
    from .viz import render_clusters

    x = model.preprocess(image, size=size)  # (3, H, W)
    labels = token_clusters(model, x, k, return_ori=return_ori, seed=seed)
    pil = to_pil(image)
    if pil.size != (x.shape[-1], x.shape[-2]):
        pil = pil.resize((x.shape[-1], x.shape[-2]), resample=Image.BICUBIC)
    return render_clusters(pil, labels, patch_size=model.patch_size, alpha=alpha)


__all__ = ["Grouping", "Alignment", "Record", "merge", "patch_labels", "token_grouping", "vl_alignment",
           "layer_tokens", "iteration_tokens", "layer_analysis", "iteration_analysis", "method_analysis",
           "kmeans", "token_clusters", "cluster_figure", "IGNORE_INDEX"]
