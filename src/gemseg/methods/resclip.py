"""ResCLIP (Yang et al., "ResCLIP: Residual Attention for Training-free Dense Vision-language Inference",
CVPR 2025, arXiv 2411.15851; code github.com/yvhangyang/ResCLIP, which carries no licence: read to
understand, written here from the paper and the code's formulas) as a plug-in on the attention of a
base method's last block.

A base's last block attends with ``A = Σ_t softmax(L_t + ω)`` over its similarity logits ``L_t = s a bᵀ``
(:data:`RESCLIP_BASES`: SCLIP q-q and k-k, ClearCLIP q-q, NACLIP k-k with its Gaussian ``ω``, CLIP q-k)
and outputs ``O(A v)``, with the residual and MLP where the base keeps them. ResCLIP changes ``A``:

- *RCS* (residual cross-correlation self-attention): ``A <- τ_r ((1 - λ_r) A + λ_r R)`` with ``R`` the
  q-k attention ``softmax(s q kᵀ)`` of blocks ``rcs_layers`` averaged over those blocks (per head).
- *SFR* (semantic feedback refinement): a first pass with RCS gives class probabilities (cosine to
  every query, bilinear to the input size, PAMR, ``softmax(logit_scale ·)``); each patch takes the most
  frequent top query of its pixels (query 0 where the top probability is below ``temp_thd``). ``G_ij =
  1`` for patches of the same query, decayed by ``exp(-steps_ij / max steps)`` where the straight path
  from i to j leaves the query's region (``delete_same_entity``), each row blurred by a 1-D Gaussian
  (``gaussian_std``) over the flattened patch index, clipped at 0, row-normalized, divided by its
  maximum: ``L_t <- τ_s ((1 - λ_s) L_t + λ_s G)`` before the softmax.

Every step is ``clip/model.py: VisionTransformer.forward``, ``custom_attn``, ``create_logit_temp``,
``create_patch_matrix``, ``check_path`` and ``generate_attention_sfr`` at the commit cited in
docs/methods.md. Ours: statistics per image; the path test runs in row chunks (same result, bounded
memory); a 1x1 grid has no path decay (the official code divides by 0 there).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..backbones.base import Backbone, ViTBlock
from ..config import GEMConfig
from .baselines import neighbourhood_bias, token_grid
from .purify import block_with_attention


@dataclass(frozen=True)
class AttentionBase:
    """A base method's last block as ResCLIP rewrites it (``custom_attn``'s ``attn_strategy`` branches)."""

    terms: tuple[str, ...]  # similarity logits softmaxed and summed: "qq", "kk", "qk"
    neighbourhood: bool  # NACLIP's Gaussian ω added to each term's logits
    residual: bool  # True: x + O(A v), then + MLP ('w_resi'); False: O(A v) alone ('wo_resi')


# The bases whose published ResCLIP rows the official code runs (test_all.sh ARCH ATTN): SCLIP 'w_resi
# sclip' (set_params requires w_resi), ClearCLIP 'wo_resi clearclip', NACLIP 'wo_resi resclip' (the
# README's main results; the 'naclip' branch is the same), and plain CLIP 'w_resi vanilla'.
RESCLIP_BASES: dict[str, AttentionBase] = {
    "sclip": AttentionBase(("qq", "kk"), neighbourhood=False, residual=True),
    "clearclip": AttentionBase(("qq",), neighbourhood=False, residual=False),
    "naclip": AttentionBase(("kk",), neighbourhood=True, residual=False),
    "clip": AttentionBase(("qk",), neighbourhood=False, residual=True),
}


@dataclass(frozen=True)
class ResCLIPConfig:
    """ResCLIP's settings. The official code has no defaults for the weights and ``temp_thd`` (each dataset
    config sets them; ``PRESET_DATASETS['resclip']`` holds them): the defaults here are ours, the values
    most configs use."""

    use_rcs: bool = True  # configs/base_config.py use_rcs=True
    use_sfr: bool = True  # configs/base_config.py use_sfr=True
    rcs_layers: tuple[int, ...] = (5, 6, 7, 8)  # clip/model.py forward: attn_map[i] for i in range(5, 9), blocks 6-9
    rcs_weights: tuple[float, float] = (2.0, 0.3)  # (τ_r, λ_r); cfg_*.py attn_rcs_weights (ours: voc21, context60, ade20k)
    sfr_weights: tuple[float, float] = (1.8, 0.7)  # (τ_s, λ_s); cfg_*.py attn_sfr_weights (ours: 4 of the 8 configs)
    temp_thd: float = 0.25  # cfg_*.py temp_thd (ours: the ADE20K/Context59 value)
    gaussian_std: float = 5.0  # test_all.sh ... resclip 5 (README): SFR blur, and NACLIP's ω
    delete_same_entity: bool = True  # cfg_*.py delete_same_entity=True (every config)
    logit_scale: float = 40.0  # resclip_segmentor.py logit_scale=40, the first pass's softmax scale
    pamr_steps: int = 10  # clip/model.py create_logit_temp: PAMR(10, dilations=(8, 16))
    pamr_dilations: tuple[int, ...] = (8, 16)  # clip/model.py create_logit_temp
    sfr_fp16: bool = True  # clip/model.py custom_attn: attn_sfr.to(torch.float16) (rounding kept)

    def __post_init__(self):
        for name in ("rcs_weights", "sfr_weights"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise ValueError(f"ResCLIP {name} must be two numbers (tau, lambda), got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        layers = tuple(self.rcs_layers)
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
            raise ValueError(f"ResCLIP rcs_layers must be non-negative block indices, got {self.rcs_layers!r}")
        object.__setattr__(self, "rcs_layers", layers)
        object.__setattr__(self, "pamr_dilations", tuple(int(d) for d in self.pamr_dilations))
        if not self.gaussian_std > 0:
            raise ValueError(f"ResCLIP gaussian_std must be > 0, got {self.gaussian_std!r}")

    def check(self, num_blocks: int) -> None:
        """Refuse RCS layers that a backbone of ``num_blocks`` blocks does not have before its last."""
        if self.use_rcs and max(self.rcs_layers) >= num_blocks - 1:
            raise ValueError(f"ResCLIP rcs_layers {list(self.rcs_layers)} out of range: blocks 0 .. {num_blocks - 2} "
                             f"come before the last of {num_blocks}; the defaults are ViT-B/16's")

    def to_dict(self) -> dict:
        return asdict(self)


# --- RCS ---------------------------------------------------------------------------------------------
def trunk_with_rcs(backbone: Backbone, images: torch.Tensor, layers: tuple[int, ...] | None):
    """Tokens entering the last block [B, N, C] and (``layers`` given) the mean of those blocks' q-k
    attention [B, heads, N, N]; the blocks run unmodified."""
    x, total = backbone.embed(images), 0
    for i, blk in enumerate(backbone.blocks[:-1]):
        if layers is not None and i in layers:
            x, attn = block_with_attention(blk, x)
            total = total + attn
        else:
            x = blk.plain(x)
    return x, (None if layers is None else total / len(layers))


# --- the last block ----------------------------------------------------------------------------------
def resclip_block(blk: ViTBlock, x: torch.Tensor, base: AttentionBase, s: ResCLIPConfig, *,
                  rcs: torch.Tensor | None = None, sfr: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """The base's last block with RCS (``rcs`` [B, heads, N, N]) and SFR (``sfr`` [B, N, N]) where given;
    ``bias`` [N, N] is NACLIP's ω. x [B, N, C] -> [B, N, C] (before the head)."""
    q, k, v = blk.qkv(blk.ln_1(x))  # (B, heads, N, d)
    src, scale = {"q": q, "k": k}, q.shape[-1] ** -0.5
    attn = 0
    for t in base.terms:
        logits = src[t[0]] @ src[t[1]].transpose(-2, -1) * scale  # (B, heads, N, N)
        if sfr is not None:
            tau, lam = s.sfr_weights
            logits = tau * ((1 - lam) * logits + lam * sfr[:, None].to(logits.dtype))
        if bias is not None:
            logits = logits + bias.to(logits.dtype)
        attn = attn + logits.softmax(dim=-1)
    if rcs is not None:
        tau, lam = s.rcs_weights
        attn = tau * ((1 - lam) * attn + lam * rcs.to(attn.dtype))
    out = blk.attn_out(attn @ v)
    if not base.residual:
        return out
    z = x + out
    return z + blk.mlp_residual(z)


# --- SFR ---------------------------------------------------------------------------------------------
def feedback_probabilities(tokens: torch.Tensor, text: torch.Tensor, grid: tuple[int, int], images: torch.Tensor,
                           s: ResCLIPConfig, refine: Callable | None) -> torch.Tensor:
    """The first pass's query probabilities: patch tokens [B, n, D] against ``text`` [Q, D] or [B, Q, D]
    (cosine), bilinear to the input size, ``refine`` (PAMR) when ``pamr_steps > 0``, then
    ``softmax(logit_scale ·)`` over the queries -> [B, Q, H, W]."""
    feats = F.normalize(tokens.float(), dim=-1)
    text = F.normalize(text.float().to(feats.device), dim=-1)
    logits = torch.einsum("bnd,qd->bqn" if text.ndim == 2 else "bnd,bqd->bqn", feats, text)  # (B, Q, n)
    logits = logits.unflatten(-1, grid)
    logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    if s.pamr_steps > 0:
        if refine is None:
            raise ValueError("ResCLIP's feedback pass needs a refine function (PAMR) when pamr_steps > 0")
        logits = refine(logits, image=images, model=None, steps=s.pamr_steps, dilations=s.pamr_dilations)
    return (logits * s.logit_scale).softmax(dim=1)


def patch_labels(probs: torch.Tensor, patch: tuple[int, int], temp_thd: float) -> torch.Tensor:
    """Per-pixel top query (query 0 where the top probability is below ``temp_thd``), then the most
    frequent one in each patch (``torch.mode``, as the official code): probs [B, Q, gh·ph, gw·pw] ->
    [B, gh, gw]."""
    top, label = probs.max(dim=1)  # (B, H, W)
    label = label.masked_fill(top < temp_thd, 0)
    ph, pw = patch
    blocks = label.unfold(1, ph, ph).unfold(2, pw, pw)  # (B, gh, gw, ph, pw)
    return blocks.flatten(3).mode(dim=-1).values


def _path_valid(labels: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``check_path``: for patches i, j of ``labels`` [gh, gw], whether the first ``steps_ij + 1`` of the
    ``max_steps + 1`` points sampled along the segment from i to j (rounded) all carry i's label;
    ``steps`` is the Chebyshev distance. -> [n, n] bool (rows i in chunks)."""
    gh, gw = labels.shape
    rows, cols = torch.meshgrid(torch.arange(gh, device=labels.device), torch.arange(gw, device=labels.device),
                                indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1)  # (n, 2) long
    n, max_steps = coords.shape[0], max(gh, gw) - 1
    t = torch.linspace(0, 1, steps=max_steps + 1, device=labels.device).unsqueeze(1).unsqueeze(0)  # (1, T, 1)
    out = []
    for a in range(0, n, chunk):
        start = coords[a:a + chunk].repeat_interleave(n, dim=0)  # (c*n, 2)
        end = coords.repeat(start.shape[0] // n, 1)
        steps = (end - start).abs().max(dim=1).values  # (c*n,)
        cur = (start.unsqueeze(1) * (1 - t) + end.unsqueeze(1) * t).round().long()  # (c*n, T, 2)
        checked = torch.arange(max_steps + 1, device=labels.device).unsqueeze(0) <= steps.unsqueeze(1)
        same = labels[cur[..., 0], cur[..., 1]] == labels[start[:, 0], start[:, 1]].unsqueeze(1)
        out.append((same | ~checked).all(dim=1).view(-1, n))
    return torch.cat(out)


def sfr_attention(labels: torch.Tensor, s: ResCLIPConfig, num_prefix_tokens: int) -> torch.Tensor:
    """SFR's attention term of one image: patch labels [gh, gw] -> [p + n, p + n] (prefix rows and
    columns 0), divided by its maximum (rounded to float16 with ``sfr_fp16``)."""
    gh, gw = labels.shape
    flat = labels.flatten()
    n = flat.numel()
    m = (flat[:, None] == flat[None, :]).float()  # (n, n), 1 on the diagonal
    if s.delete_same_entity and n > 1:
        coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij"), -1).view(-1, 2)
        steps = (coords[None] - coords[:, None]).abs().max(dim=-1).values.to(m.device)  # (n, n)
        decay = torch.exp(-steps / (max(gh, gw) - 1))
        m = torch.where(_path_valid(labels), m, m * decay)
    size = min(n, int(6 * s.gaussian_std + 1))
    size = size if size % 2 == 1 else size + 1
    x = torch.arange(size, device=m.device) - size // 2
    kernel = torch.exp(-(x ** 2) / (2 * s.gaussian_std ** 2))
    kernel = kernel / kernel.sum()
    blurred = F.conv1d(m.unsqueeze(1), kernel.view(1, 1, -1), padding=size // 2).squeeze(1).relu()  # (n, n)
    blurred = blurred / (blurred.sum(dim=1, keepdim=True) + 1e-8)
    p = num_prefix_tokens
    g = m.new_zeros(p + n, p + n)
    g[p:, p:] = blurred
    g = g / g.max()
    return g.half().float() if s.sfr_fp16 else g


# --- the plug-in on a base --------------------------------------------------------------------------
def resclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, base: str,
                   return_ori: bool = False, settings: ResCLIPConfig | None = None,
                   text: torch.Tensor | None = None,
                   refine: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``base`` (a key of :data:`RESCLIP_BASES`) with ResCLIP: ``images`` [B, 3, H, W] -> tokens [B, N, D],
    and with ``return_ori`` the unmodified encoder's. SFR needs ``text``, the queries' embeddings [Q, D]
    (or [B, Q, D] per image), and ``refine(scores, *, image, model, steps, dilations)``, PAMR (the
    ``"pamr"`` refiner of :mod:`gemseg.refiners`, which the model passes)."""
    s = settings or ResCLIPConfig()
    s.check(len(backbone.blocks))
    spec = RESCLIP_BASES[base]
    x, rcs = trunk_with_rcs(backbone, images, s.rcs_layers if s.use_rcs else None)
    p = backbone.num_prefix_tokens
    grid = token_grid(backbone, images, x.shape[1])
    bias = (neighbourhood_bias(grid, std=s.gaussian_std, num_prefix_tokens=p, device=x.device)
            if spec.neighbourhood else None)
    blk = backbone.blocks[-1]
    sfr = None
    if s.use_sfr:
        if text is None:
            raise ValueError(f"{base}+resclip's semantic feedback needs the queries' text embeddings: use "
                             "heatmaps()/segment(), pass text= to encode_image, or set use_sfr=False")
        first = backbone.head(resclip_block(blk, x, spec, s, rcs=rcs, bias=bias))[:, p:]  # (B, n, D)
        probs = feedback_probabilities(first, text, grid, images, s, refine)  # (B, Q, H, W)
        labels = patch_labels(probs, backbone.patch_size, s.temp_thd)  # (B, gh, gw)
        sfr = torch.stack([sfr_attention(lab, s, p) for lab in labels]).to(x.device)  # (B, N, N)
    y = resclip_block(blk, x, spec, s, rcs=rcs, sfr=sfr, bias=bias)
    ori = backbone.head(blk.plain(x)) if return_ori else None
    return backbone.head(y), ori


def resclip_plugin(base: str) -> Callable:
    """The token function of ``<base>+resclip`` (``base`` in :data:`RESCLIP_BASES`), carrying its
    settings type; its registered :class:`~gemseg.methods.Method` needs ``("text", "refine")``."""
    if base not in RESCLIP_BASES:
        raise ValueError(f"resclip composes with {', '.join(RESCLIP_BASES)}, not {base!r}")

    def tokens(backbone, images, config, **kwargs):
        return resclip_tokens(backbone, images, config, base=base, **kwargs)

    tokens.__name__ = f"{base}_resclip_tokens"
    tokens.__doc__ = f"{base} with the ResCLIP plug-in; see :func:`resclip_tokens`."
    tokens.settings_type = ResCLIPConfig
    return tokens
