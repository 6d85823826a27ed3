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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..backbones.sam import SAM_MODELS, SamEntry, load_sam_model, resolve_sam

SAM_MEAN = (123.675, 116.28, 103.53)  # segment_anything/modeling/sam.py Sam.pixel_mean
SAM_STD = (58.395, 57.12, 57.375)  # segment_anything/modeling/sam.py Sam.pixel_std
SAM2_MEAN = (0.485, 0.456, 0.406)  # sam2/utils/transforms.py SAM2Transforms.mean
SAM2_STD = (0.229, 0.224, 0.225)  # sam2/utils/transforms.py SAM2Transforms.std


MaskModelEntry = SamEntry  # the registry is gemseg.backbones.sam's (one set of names for every SAM user)
MASK_MODELS = SAM_MODELS


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
    """:func:`gemseg.backbones.sam.resolve_sam`: a short name, alias, hub id or folder -> ``(id or folder,
    family)``."""
    return resolve_sam(name)


def load_prompter(name: str, *, device="cpu", cache_dir: str | None = None,
                  dynamic_multimask: bool | None = None) -> SamPrompter:
    """A SAM / SAM 2 checkpoint (short name, hub id or folder) as a :class:`SamPrompter`, its model from
    :func:`gemseg.backbones.sam.load_sam_model` (shared with any other user of the same checkpoint).

    ``dynamic_multimask`` overrides SAM 2's ``mask_decoder_config.dynamic_multimask_via_stability`` (the
    official builder sets it only with ``apply_postprocessing=True``; CorrCLIP builds with ``False``).
    """
    model = load_sam_model(name, device=device, cache_dir=cache_dir, dynamic_multimask=dynamic_multimask)
    return SamPrompter(model, name=name, source=resolve_sam(name)[0])
