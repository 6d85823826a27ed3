"""LPOSS and LPOSS+ (Stojnić et al., "LPOSS: Label Propagation Over Patches and Pixels for Open-vocabulary
Semantic Segmentation", CVPR 2025, arXiv 2503.19777; code github.com/vladan-stojnic/LPOSS, MIT) as a
post-processing of the query scores of any method.

LPOSS: the image is cut into sliding windows (224 px, stride 112, as the official test configs); a DINO
ViT-B/16 runs on each window and the *value* projections of its last block's attention, heads
concatenated and L2-normalized, are the patch features. One k-NN graph joins the patches of all windows
(:func:`gemseg.propagation.knn_affinity`: feature similarity times a Gaussian-like term of the distance of
the patch centres in the image), and the method's scores, pooled onto each window's patch grid, are
propagated on it (:func:`gemseg.propagation.propagate_sparse`). Each window's result is resized bilinearly
to the window and overlapping windows are averaged.

LPOSS+ (``pixel=True``) then propagates those pixel scores once more over a graph of pixels joined to
their neighbours in a ``window x window`` square, weighted by their CIE Lab colour distance
(:class:`gemseg.propagation.PixelGraph`), over the whole image as the official code does.

The result is the propagated scores, whose scale is not a cosine's: ``(I − α Wn)^-1`` multiplies them by up
to ``1 / (1 − α)`` (20 with α = 0.95). The argmax is what the official evaluation takes; a probability
threshold applied after ``softmax(logit_scale · s)`` sees sharper probabilities than before.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from .backbones.base import Preprocess
from .backbones.vfm import VisionBackbone
from .config import as_floats
from .propagation import LAB_SCALE, PixelGraph, knn_affinity, propagate_sparse, rgb_to_lab

DEFAULT_PROXY = "dino-b16"  # configs/lposs.yaml model.vit_arch vit_base, vit_patch_size 16 -> models/lposs/lposs.py dino_vitb16


@dataclass(frozen=True)
class LPOSSConfig:
    """LPOSS's settings; the defaults are the official ones (configs/lposs.yaml, configs/lposs_plus.yaml,
    segmentation/evaluation/lposs_eval.py and the dataset configs of vladan-stojnic/LPOSS)."""

    alpha: float = 0.95  # lposs.yaml alpha: propagation strength in (I - alpha Wn) z = y
    gamma: float = 3.0  # lposs.yaml gamma: power of the feature similarities
    k: int = 400  # lposs.yaml k: nearest neighbours per patch
    sigma: float = 0.01  # lposs.yaml sigma: rate of the distance term exp(-sigma d^pow), d in pixels
    dist_pow: float = 1.0  # lposs.yaml pix_dist_pow
    pixel: bool = False  # lposs.yaml pixel_refine: false (LPOSS); lposs_plus.yaml: true (LPOSS+)
    tau: float = 0.01  # lposs.yaml tau: colour bandwidth of the pixel graph
    window: int = 13  # lposs.yaml r: pixel neighbourhood side; radius window // 2 (lposs_eval.py neigh=r // 2)
    features: str = "v"  # lposs.yaml enc_type_feats: which projection of DINO's last attention ("q", "k", "v")
    crop: int | None = 224  # datasets' test_cfg crop_size (224, 224); None: the whole image as one window
    stride: int = 112  # datasets' test_cfg stride (112, 112)
    tol: float = 1e-6  # lposs_eval.py dfs_search: cg(tol=1e-6)
    maxiter: int = 10  # lposs_eval.py dfs_search: cg(maxiter=10)
    chunk: int = 32  # ours: queries propagated together on the pixel graph (memory, not results)

    def __post_init__(self):
        as_floats(self, "LPOSS", ("alpha", "gamma", "sigma", "dist_pow", "tau", "tol"))
        if not 0 < self.alpha < 1:
            raise ValueError(f"LPOSS alpha must lie in (0, 1), got {self.alpha}")
        if self.features not in ("q", "k", "v"):
            raise ValueError(f"LPOSS features must be 'q', 'k' or 'v', got {self.features!r}")
        for name in ("k", "window", "stride", "maxiter", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LPOSS {name} must be a positive integer, got {value!r}")
        if self.crop is not None and (isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 1):
            raise ValueError(f"LPOSS crop must be a positive integer or None, got {self.crop!r}")
        if self.window < 3:
            raise ValueError(f"LPOSS window must be >= 3 pixels (a radius of at least 1), got {self.window}")

    def to_dict(self) -> dict:
        return asdict(self)


def windows(height: int, width: int, crop: int | None, stride: int) -> list[tuple[int, int, int, int]]:
    """Sliding windows ``(y1, y2, x1, x2)`` over an image, as mmseg's (and LPOSS's) ``slide_inference``:
    the last window of a row or column is shifted back to end at the border; ``crop=None``: one window."""
    if crop is None:
        return [(0, height, 0, width)]
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


def patch_features(vfm: VisionBackbone, rgb: torch.Tensor, *, features: str = "v") -> torch.Tensor:
    """RGB crops in [0, 1] [n, 3, h, w] -> L2-normalized patch features [n, gh, gw, C] of ``vfm``: the
    ``features`` projection (q, k or v) of its last attention block, heads concatenated. The crop is
    zero-padded (black, before normalization) to a multiple of the patch size, as the official code."""
    ph, pw = vfm.patch_size
    h, w = rgb.shape[-2:]
    x = F.pad(rgb, (0, (-w) % pw, 0, (-h) % ph))
    mean = torch.tensor(vfm.preprocess.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(vfm.preprocess.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    q, k, v = vfm.attention_qkv((x - mean) / std)  # each (n, heads, N, d)
    t = {"q": q, "k": k, "v": v}[features][:, :, vfm.num_prefix_tokens:]
    n, heads, N, d = t.shape
    gh, gw = x.shape[-2] // ph, x.shape[-1] // pw
    t = t.transpose(1, 2).reshape(n, N, heads * d)  # (n, gh*gw, C): heads side by side
    return F.normalize(t.float(), dim=-1).reshape(n, gh, gw, -1)


def lposs_patches(scores: torch.Tensor, rgb: torch.Tensor, vfm: VisionBackbone, config: LPOSSConfig) -> torch.Tensor:
    """LPOSS on one image: ``scores`` [Q, H, W] and ``rgb`` [3, H, W] in [0, 1] -> [Q, H, W]."""
    c = config
    Q, H, W = scores.shape
    wins = windows(H, W, c.crop, c.stride)
    feats, ys, locs, grids = [], [], [], []
    ph, pw = vfm.patch_size
    for y1, y2, x1, x2 in wins:
        f = patch_features(vfm, rgb[None, :, y1:y2, x1:x2], features=c.features)[0]  # (gh, gw, C)
        gh, gw = f.shape[:2]
        y = F.adaptive_avg_pool2d(scores[None, :, y1:y2, x1:x2].float(), (gh, gw))[0]  # (Q, gh, gw)
        rows = y1 + ph // 2 + torch.arange(gh, device=f.device) * ph  # patch centres in the image
        cols = x1 + pw // 2 + torch.arange(gw, device=f.device) * pw
        loc = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2).float()
        feats.append(f.reshape(gh * gw, -1))
        ys.append(y.reshape(Q, -1).T)
        locs.append(loc)
        grids.append((gh, gw))
    graph = knn_affinity(torch.cat(feats), torch.cat(locs), k=c.k, gamma=c.gamma, sigma=c.sigma, dist_pow=c.dist_pow)
    z = propagate_sparse(graph, torch.cat(ys), alpha=c.alpha, tol=c.tol, maxiter=c.maxiter)  # (N, Q)
    total = scores.new_zeros((Q, H, W), dtype=torch.float32)
    count = scores.new_zeros((1, H, W), dtype=torch.float32)
    start = 0
    for (y1, y2, x1, x2), (gh, gw) in zip(wins, grids):
        zw = z[start:start + gh * gw].T.reshape(1, Q, gh, gw)
        start += gh * gw
        total[:, y1:y2, x1:x2] += F.interpolate(zw, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
        count[:, y1:y2, x1:x2] += 1
    return total / count


def lposs_pixels(scores: torch.Tensor, rgb: torch.Tensor, config: LPOSSConfig) -> torch.Tensor:
    """LPOSS+'s pixel step on one image: ``scores`` [Q, H, W], ``rgb`` [3, H, W] in [0, 1] -> [Q, H, W]."""
    lab = rgb_to_lab(rgb.float()) / torch.tensor(LAB_SCALE, device=rgb.device).view(3, 1, 1)
    graph = PixelGraph(lab, radius=config.window // 2, tau=config.tau)
    return graph.propagate(scores.float(), alpha=config.alpha, tol=config.tol, maxiter=config.maxiter,
                           chunk=config.chunk)


def lposs(scores: torch.Tensor, *, image: torch.Tensor, source: Preprocess, vfm: VisionBackbone,
          config: LPOSSConfig | None = None) -> torch.Tensor:
    """LPOSS (and with ``config.pixel`` LPOSS+) on a batch.

    Args:
        scores: [B, Q, H, W] query scores of any method at the resolution of ``image``.
        image: [B, 3, H, W] the images those scores are of, normalized with ``source``.
        source: the statistics ``image`` is normalized with (the CLIP model's ``backbone.preprocess``).
        vfm: the ViT whose patch features build the graph (:data:`DEFAULT_PROXY` in the official code).
    Returns:
        [B, Q, H, W] float32 propagated scores (see the module docstring for their scale).
    """
    config = config or LPOSSConfig()
    if scores.ndim != 4 or image.ndim != 4 or scores.shape[0] != image.shape[0] \
            or scores.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"LPOSS needs scores [B, Q, H, W] and images [B, 3, H, W] of the same size, got "
                         f"{tuple(scores.shape)} and {tuple(image.shape)}")
    if vfm.kind == "sam":
        raise ValueError("LPOSS reads the attention projections of a ViT proxy; SAM's encoder has none")
    mean = torch.tensor(source.mean, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(source.std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    rgb = (image * std + mean).clamp(0, 1)
    out = []
    with torch.no_grad():
        for b in range(scores.shape[0]):
            z = lposs_patches(scores[b], rgb[b], vfm, config)
            out.append(lposs_pixels(z, rgb[b], config) if config.pixel else z)
    return torch.stack(out)


class LPOSSRefiner:
    """LPOSS (``pixel=False``) or LPOSS+ (``pixel=True``) as a refiner, ``refiner(scores, *, image, model)``.

    Args:
        pixel: LPOSS+ (the pixel step after the patch step).
        vfm: the proxy ViT; default: :data:`DEFAULT_PROXY` with ``weights``, built on first use on the
            scores' device (so that a registered refiner costs nothing until it runs).
        config: the other settings (``pixel`` replaces its own).
        weights: the default proxy's weights (``"pretrained"``, ``"random"`` or a checkpoint file).
    """

    def __init__(self, *, pixel: bool = False, vfm: VisionBackbone | None = None, config: LPOSSConfig | None = None,
                 weights: str = "pretrained"):
        self.config = replace(config or LPOSSConfig(), pixel=bool(pixel))
        self.vfm, self.weights = vfm, weights
        self._built: dict[str, VisionBackbone] = {}  # the default proxy, per weights, built on first use
        self.__name__ = "lposs+" if pixel else "lposs"

    def _proxy(self, device: torch.device, weights: str | None = None) -> VisionBackbone:
        """The given ``vfm``, else :data:`DEFAULT_PROXY` with ``weights`` (default: the refiner's own)."""
        if self.vfm is not None:
            return self.vfm.to(device)
        weights = self.weights if weights is None else weights
        if weights not in self._built:
            from .backbones.vfm import create_vfm
            from .errors import WeightsUnavailableError

            try:
                self._built[weights] = create_vfm(DEFAULT_PROXY, weights=weights, device=device)
            except WeightsUnavailableError as e:  # the refiner takes no --proxy-weights / --cache-dir: say what does
                raise WeightsUnavailableError(
                    f"refiner {self.__name__}: cannot load its DINO ViT-B/16 ({DEFAULT_PROXY}) weights. To supply "
                    "them, put timm's weights in the hub cache (HF_HOME), or run with --random-weights for a demo "
                    "(library: LPOSSRefiner(vfm=..., weights=PATH) or refine=[(\"lposs\", {\"weights\": PATH})])"
                ) from e
        return self._built[weights].to(device)

    def describe(self) -> dict:
        """What identifies the refiner in a run's record."""
        name = self.vfm.name if self.vfm is not None else DEFAULT_PROXY
        return {"proxy": name, **self.config.to_dict()}

    def __call__(self, scores: torch.Tensor, *, image: torch.Tensor, model, **settings) -> torch.Tensor:
        """``scores`` [B, Q, H, W] (the output size) of ``image`` [B, 3, h, w] (the network input, normalized
        for ``model``) -> [B, Q, H, W]. LPOSS runs at the network input's size, as the official code, so
        the scores are resized bilinearly to it and back. ``settings``: :class:`LPOSSConfig` fields for
        this call (``refine=("lposs", {"k": 200})``), and ``weights``: the default proxy's weights for this call
        (``"random"``: what ``--random-weights`` gives); other keywords a predictor adds are ignored."""
        fields = set(LPOSSConfig.__dataclass_fields__) - {"pixel"}
        config = replace(self.config, **{k: v for k, v in settings.items() if k in fields})
        size, net = tuple(scores.shape[-2:]), tuple(image.shape[-2:])
        x = scores.float()
        if size != net:
            x = F.interpolate(x, size=net, mode="bilinear", align_corners=False)
        out = lposs(x, image=image.to(scores.device).float(), source=model.backbone.preprocess,
                    vfm=self._proxy(scores.device, settings.get("weights")), config=config)
        return out if size == net else F.interpolate(out, size=size, mode="bilinear", align_corners=False)
