"""ResCLIP (Yang et al., "ResCLIP: Residual Attention for Training-free Dense Vision-language Inference",
CVPR 2025, arXiv 2411.15851; code github.com/yvhangyang/ResCLIP, which carries no licence: read to
understand, written here from the paper and the code's formulas) as a plug-in on the attention of a
base method's last block.

A base declares how its last block attends (:attr:`gemseg.methods.Method.attention`, :mod:`.attention`):
one effective map ``A`` that weights the values, built from similarity logits ``L_t`` (SCLIP q-q and k-k,
ClearCLIP q-q, NACLIP k-k with its Gaussian ``ω``, CLIP q-k: ``A = Σ_t softmax(L_t + ω)``; GEM and vv:
``A = mean_p softmax(L_p)`` in the last block of GEM's path). ResCLIP changes ``A``:

- *RCS* (residual cross-correlation self-attention): ``A <- τ_r ((1 - λ_r) A + λ_r R)`` with ``R`` the
  q-k attention ``softmax(s q kᵀ)`` of blocks ``rcs_layers`` averaged over those blocks (per head).
- *SFR* (semantic feedback refinement): a first pass with RCS gives class probabilities (cosine to
  every query, bilinear to the input size, PAMR, ``softmax(logit_scale ·)``); each patch takes the most
  frequent top query of its pixels (query 0 where the top probability is below ``temp_thd``). ``G_ij =
  1`` for patches of the same query, decayed by ``exp(-steps_ij / max steps)`` where the straight path
  from i to j leaves the query's region (``delete_same_entity``), each row blurred by a 1-D Gaussian
  (``gaussian_std``) over the flattened patch index, clipped at 0, row-normalized, divided by its
  maximum: ``L_t <- τ_s ((1 - λ_s) L_t + λ_s G)`` before the softmax (for GEM: the final logits of each projection, after its iterations).

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

from ..backbones.base import Backbone
from ..config import GEMConfig
from .attention import AttentionKind, LastBlockAttention, SelfSelfAttention
from .baselines import token_grid

BaseAttention = LastBlockAttention | SelfSelfAttention  # what a base declares (Method.attention)


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
def resclip_tokens(backbone: Backbone, images: torch.Tensor, config: GEMConfig, *, base: BaseAttention,
                   return_ori: bool = False, settings: ResCLIPConfig | None = None,
                   text: torch.Tensor | None = None, refine: Callable | None = None,
                   name: str = "<base>+resclip") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The method whose last-block attention ``base`` describes (:mod:`.attention`) with ResCLIP:
    ``images`` [B, 3, H, W] -> tokens [B, N, D], and with ``return_ori`` the unmodified encoder's. RCS mixes
    the base's effective map ``A``, SFR each of its terms' logits. SFR needs ``text``, the queries'
    embeddings [Q, D] (or [B, Q, D] per image), and ``refine(scores, *, image, model, steps, dilations)``,
    PAMR (the ``"pamr"`` refiner of :mod:`gemseg.refiners`, which the model passes). ``name`` is the
    method's, for messages."""
    s = settings or ResCLIPConfig()
    s.check(len(backbone.blocks))
    last = base.enter(backbone, images, config, layers=s.rcs_layers if s.use_rcs else None,
                      neighbourhood_std=s.gaussian_std)
    rcs = None
    if last.qk is not None:
        tau_r, lam_r = s.rcs_weights
        rcs = lambda a: tau_r * ((1 - lam_r) * a + lam_r * last.qk.to(a.dtype))  # noqa: E731
    p = backbone.num_prefix_tokens
    if not s.use_sfr:
        y = last.run(attention=rcs)
    else:
        if text is None:
            raise ValueError(f"{name}'s semantic feedback needs the queries' text embeddings: use "
                             "heatmaps()/segment(), pass text= to encode_image, or set use_sfr=False")
        first = backbone.head(last.run(attention=rcs))[:, p:]  # (B, n, D)
        grid = token_grid(backbone, images, last.x.shape[1])
        probs = feedback_probabilities(first, text, grid, images, s, refine)  # (B, Q, H, W)
        labels = patch_labels(probs, backbone.patch_size, s.temp_thd)  # (B, gh, gw)
        g = torch.stack([sfr_attention(lab, s, p) for lab in labels]).to(last.x.device)[:, None]  # (B, 1, N, N)
        tau_s, lam_s = s.sfr_weights
        y = last.run(logits=lambda lg: tau_s * ((1 - lam_s) * lg + lam_s * g.to(lg.dtype)), attention=rcs)
    ori = backbone.head(backbone.blocks[-1].plain(last.x)) if return_ori else None
    return backbone.head(y), ori


def resclip_plugin(name: str, attention: BaseAttention) -> Callable:
    """The token function of the method ``name`` (``"<base>+resclip"``) on a base that declares its
    last-block ``attention``; its registered :class:`~gemseg.methods.Method` needs ``("text", "refine")``."""
    if not isinstance(attention, AttentionKind):
        raise TypeError(f"{name}: a base declares its attention as one of "
                        f"{', '.join(k.__name__ for k in AttentionKind)}, got {type(attention).__name__}")

    def tokens(backbone, images, config, **kwargs):
        return resclip_tokens(backbone, images, config, base=attention, name=name, **kwargs)

    tokens.__name__ = name.replace("+", "_").replace("-", "_") + "_tokens"
    tokens.__doc__ = f"{name}: the base with the ResCLIP plug-in; see :func:`resclip_tokens`."
    tokens.settings_type = ResCLIPConfig
    return tokens
