"""SAM and SAM 2 / 2.1 as mask generators, through Hugging Face ``transformers`` (``SamModel``,
``Sam2Model``).

Why ``transformers`` and not the official ``segment-anything`` / ``sam2`` packages: it is already a
dependency, it loads every SAM / SAM 2 / 2.1 checkpoint from the hub or a local folder like gemseg's other
Hugging Face models, and it builds tiny random models from a config in code for tests. Only the networks
are taken from it: the pixel preprocessing, the prompt coordinates, the mask upscaling (here) and the whole
automatic generator (:mod:`.amg`) follow the official code, not ``transformers``' processors and pipeline:

- SAM (segment-anything ``predictor.py``, ``utils/transforms.py``, ``modeling/sam.py``): resize the longest
  side to the encoder size with PIL bilinear, normalize with mean (123.675, 116.28, 103.53) and std (58.395,
  57.12, 57.375) on 0-255, pad right/bottom to a square; points scaled to the resized frame; low-res masks
  upsampled bilinearly to the square, cropped to the resized image, upsampled to the image.
- SAM 2 (sam2 ``utils/transforms.py`` SAM2Transforms): pixels in [0, 1] resized to the square (bilinear,
  antialiased, no aspect kept), ImageNet mean/std; points as fractions of the image times the size;
  low-res masks upsampled bilinearly straight to the image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SAM_MEAN = (123.675, 116.28, 103.53)  # segment_anything/modeling/sam.py Sam.pixel_mean
SAM_STD = (58.395, 57.12, 57.375)  # segment_anything/modeling/sam.py Sam.pixel_std
SAM2_MEAN = (0.485, 0.456, 0.406)  # sam2/utils/transforms.py SAM2Transforms.mean
SAM2_STD = (0.229, 0.224, 0.225)  # sam2/utils/transforms.py SAM2Transforms.std


@dataclass(frozen=True)
class MaskModelEntry:
    """A known SAM-family checkpoint: short name, Hugging Face id, family."""

    name: str
    hub_id: str
    family: str  # "sam" or "sam2"


MASK_MODELS: dict[str, MaskModelEntry] = {e.name: e for e in (
    MaskModelEntry("sam-vit-b", "facebook/sam-vit-base", "sam"),
    MaskModelEntry("sam-vit-l", "facebook/sam-vit-large", "sam"),
    MaskModelEntry("sam-vit-h", "facebook/sam-vit-huge", "sam"),
    MaskModelEntry("sam2-hiera-t", "facebook/sam2-hiera-tiny", "sam2"),
    MaskModelEntry("sam2-hiera-s", "facebook/sam2-hiera-small", "sam2"),
    MaskModelEntry("sam2-hiera-b+", "facebook/sam2-hiera-base-plus", "sam2"),
    MaskModelEntry("sam2-hiera-l", "facebook/sam2-hiera-large", "sam2"),  # CorrCLIP's sam2_hiera_large
    MaskModelEntry("sam2.1-hiera-t", "facebook/sam2.1-hiera-tiny", "sam2"),
    MaskModelEntry("sam2.1-hiera-s", "facebook/sam2.1-hiera-small", "sam2"),
    MaskModelEntry("sam2.1-hiera-b+", "facebook/sam2.1-hiera-base-plus", "sam2"),
    MaskModelEntry("sam2.1-hiera-l", "facebook/sam2.1-hiera-large", "sam2"),
)}


def _family_of(model) -> str:
    kind = getattr(model.config, "model_type", "")
    if kind == "sam":
        return "sam"
    if kind.startswith("sam2"):
        return "sam2"
    raise TypeError(f"a mask model must be a transformers SamModel or Sam2Model, got {type(model).__name__}")


class SamPrompter:
    """A ``transformers`` ``SamModel`` / ``Sam2Model`` as a :class:`~gemseg.masks.amg.Prompter`."""

    def __init__(self, model, *, name: str, source: str | None):
        self.model = model.eval()
        self.family = _family_of(model)
        self.name, self.source = name, source
        cfg = model.config
        self.size = int(cfg.vision_config.image_size if self.family == "sam"
                        else cfg.vision_config.backbone_config.image_size[0])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> dict:
        """RGB uint8 [h, w, 3] -> the image embedding and the frame it was computed in."""
        h, w = image.shape[:2]
        S = self.size
        if self.family == "sam":
            scale = S / max(h, w)
            nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)  # ResizeLongestSide.get_preprocess_shape
            x = np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))  # apply_image: PIL bilinear
            x = torch.from_numpy(x).to(self.device).permute(2, 0, 1).float()  # (3, nh, nw), 0-255
            x = (x - _stat(SAM_MEAN, x)) / _stat(SAM_STD, x)
            x = F.pad(x, (0, S - nw, 0, S - nh))[None]  # (1, 3, S, S)
            emb = self.model.get_image_embeddings(x)
        else:
            x = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float()[None] / 255  # (1, 3, h, w)
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
            x = (x - _stat(SAM2_MEAN, x)) / _stat(SAM2_STD, x)
            emb = self.model.get_image_embeddings(x)
            nh, nw = S, S
        return dict(embeddings=emb, size=(h, w), resized=(nh, nw))

    @torch.no_grad()
    def predict(self, state: dict, points: torch.Tensor, *, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Points [N, 2] (x, y) in image pixels -> mask logits [N, K, h, w] at the image size, IoUs [N, K]."""
        (h, w), (nh, nw) = state["size"], state["resized"]
        pts = points.double().clone()
        if self.family == "sam":
            pts *= torch.tensor([nw / w, nh / h], dtype=torch.float64)  # ResizeLongestSide.apply_coords
        else:
            pts = pts / torch.tensor([w, h], dtype=torch.float64) * self.size  # SAM2Transforms.transform_coords
        pts = pts.float().to(self.device)[None, :, None, :]  # (1, N, 1, 2)
        labels = torch.ones(pts.shape[:3], dtype=torch.int, device=self.device)
        out = self.model(image_embeddings=state["embeddings"], input_points=pts, input_labels=labels,
                         multimask_output=multimask)
        low, iou = out.pred_masks[0].float(), out.iou_scores[0].float()  # (N, K, s, s), (N, K)
        return torch.cat([self._upscale(c, (h, w), (nh, nw)) for c in low.split(8)]), iou  # 8 prompts at a time

    def _upscale(self, low: torch.Tensor, size: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Low-res mask logits [n, K, s, s] -> [n, K, h, w] (in chunks: SAM's S x S step is large)."""
        if self.family == "sam":
            up = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
            return F.interpolate(up[..., :resized[0], :resized[1]], size=size, mode="bilinear", align_corners=False)
        return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def _stat(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def resolve_mask_model(name: str) -> tuple[str, str | None]:
    """A short name (:data:`MASK_MODELS`), a Hugging Face id or a local folder -> ``(id or folder, family)``
    (family ``None``: read from the checkpoint's config)."""
    if not isinstance(name, str) or not name:
        raise TypeError("a mask model name must be a non-empty string, e.g. 'sam-vit-b'")
    if name in MASK_MODELS:
        return MASK_MODELS[name].hub_id, MASK_MODELS[name].family
    if os.path.isdir(name) and not os.path.isfile(os.path.join(name, "config.json")):
        raise ValueError(f"{name} has no config.json; save the model with save_pretrained()")
    return name, None


def load_prompter(name: str, *, device="cpu", cache_dir: str | None = None,
                  dynamic_multimask: bool | None = None) -> SamPrompter:
    """Load a SAM / SAM 2 checkpoint (short name, hub id or folder) as a :class:`SamPrompter`.

    ``dynamic_multimask`` overrides SAM 2's ``mask_decoder_config.dynamic_multimask_via_stability`` (the
    official builder sets it only with ``apply_postprocessing=True``; CorrCLIP builds with ``False``).
    """
    try:
        import transformers
    except ImportError as e:
        raise ImportError("mask generators need transformers: pip install 'gemseg[hf]'") from e
    source, _ = resolve_mask_model(name)
    from ..backbones.weights import weights_unavailable

    try:
        config = transformers.AutoConfig.from_pretrained(source, cache_dir=cache_dir)
        if dynamic_multimask is not None and hasattr(config, "mask_decoder_config"):
            config.mask_decoder_config.dynamic_multimask_via_stability = bool(dynamic_multimask)
        cls = transformers.SamModel if config.model_type == "sam" else transformers.Sam2Model
        model = cls.from_pretrained(source, config=config, cache_dir=cache_dir)
    except OSError as e:  # not cached offline / not on the hub / unreadable folder
        raise weights_unavailable(f"mask model {name} ({source})", "hf", e) from e
    return SamPrompter(model.to(device), name=name, source=source)
