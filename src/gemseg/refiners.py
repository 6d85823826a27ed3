"""Score refiners: steps that rework a predictor's query scores before they become labels.

A refiner is a function

    fn(scores, *, image, model) -> refined scores

- ``scores``: [B, Q, H, W] float32 cosine similarity of every pixel with every query, at the output size
  (the size the labels are made at);
- ``image``: [B, 3, h, w] the normalized network input the scores were computed from (any size: a refiner
  that reads colours resizes it to ``H x W`` itself);
- ``model``: the :class:`~gemseg.GEMModel` view that computed the scores (its backbone, proxy and
  :meth:`~gemseg.GEMModel.encode_image` give a refiner patch features or anything else it needs);
- returns [B, Q, H, W], the same shape.

:class:`gemseg.Segmenter` runs its refiners in order (``refine=`` a name, a callable or a sequence of
them); settings are bound with ``functools.partial`` or given as ``(name, {settings})``. The context a
refiner gets is by keyword (:func:`refine_scores`): today ``image`` and ``model``; context added later
(per-image class-agnostic masks, a proxy's patch features) reaches only the refiners whose signature
names it or takes ``**context``, so a refiner written today keeps working. Where the predictor has masks
it passes ``masks=`` (mask label maps [B, H, W] at the scores' size) and ``labels=`` (scores -> its labels);
a refiner with ``needs_masks = True`` makes it get them. ``"pamr"``, ``"sam-prompts"`` (Trident's
SAM-prompt refinement, :mod:`gemseg.sam_refine`), ``"lposs"`` / ``"lposs+"`` (:class:`gemseg.lposs.LPOSSRefiner`)
and ``"masks"`` (CorrCLIP's map correction) are registered here; others add theirs with
:func:`register_refiner`.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from .lposs import LPOSSRefiner
from .pamr import pamr as _pamr_algorithm
from .sam_refine import sam_prompt_refiner

Refiner = Callable[..., torch.Tensor]
RefineSpec = Union[str, Refiner, tuple, Sequence[Union[str, Refiner, tuple]], None]

_REFINERS: dict[str, Refiner] = {}


def register_refiner(name: str, fn: Refiner, *, overwrite: bool = False) -> None:
    """Make ``fn`` selectable as ``refine=name`` (and ``--refine name``); see the module docstring."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError("a refiner name must be a non-empty string")
    if not callable(fn):
        raise TypeError(f"refiner {name!r} must be callable")
    if name in _REFINERS and not overwrite:
        raise ValueError(f"refiner {name!r} is already registered; pass overwrite=True to replace it")
    _REFINERS[name] = fn


def get_refiner(name: str) -> Refiner:
    """The refiner registered as ``name``."""
    try:
        return _REFINERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown refiner {name!r}; choose from {', '.join(list_refiners())}") from None


def list_refiners() -> list[str]:
    """Names of the registered refiners, in registration order."""
    return list(_REFINERS)


def resolve_refiners(refine: RefineSpec) -> list[tuple[str, Refiner]]:
    """``refine`` (None, a name, a callable, ``(name, {settings})`` or a sequence of them) ->
    ``[(name, fn)]`` with settings bound; a callable is named by its ``__name__``."""
    if refine is None:
        return []
    items = [refine] if isinstance(refine, (str, tuple)) or callable(refine) else list(refine)
    out = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], dict):
                raise TypeError(f"a refiner with settings is (name, {{settings}}), got {item!r}")
            out.append((item[0], functools.partial(get_refiner(item[0]), **item[1])))
        elif isinstance(item, str):
            out.append((item, get_refiner(item)))
        elif callable(item):
            base = item.func if isinstance(item, functools.partial) else item
            out.append((getattr(base, "__name__", type(base).__name__), item))
        else:
            raise TypeError(f"refine takes refiner names or callables, got {type(item).__name__}")
    return out


def refine_scores(scores: torch.Tensor, refiners: Sequence[tuple[str, Refiner]], **context) -> torch.Tensor:
    """Run ``refiners`` (from :func:`resolve_refiners`) in order on ``scores`` [B, Q, H, W]; each gets the
    keywords of ``context`` its signature accepts (all of them with ``**context``)."""
    for name, fn in refiners:
        out = fn(scores, **_accepted(fn, context))
        if not isinstance(out, torch.Tensor) or out.shape != scores.shape:
            raise ValueError(f"refiner {name!r} must return scores of shape {list(scores.shape)}, "
                             f"got {list(getattr(out, 'shape', [])) or type(out).__name__}")
        scores = out
    return scores


def _accepted(fn: Refiner, context: dict) -> dict:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        return context
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return context
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = {p.name for p in params if p.kind in named}
    return {k: v for k, v in context.items() if k in names}


def pamr_refiner(scores: torch.Tensor, *, image: torch.Tensor, model=None, steps: int = 10,
                 dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """PAMR (:func:`gemseg.pamr.pamr`) of ``scores`` [B, Q, H, W] guided by ``image`` resized bilinearly to
    H x W. Defaults: NACLIP's 10 steps with dilations 8 and 16."""
    guide = F.interpolate(image.to(scores.device).float(), size=tuple(scores.shape[-2:]), mode="bilinear",
                          align_corners=False)  # (B, 3, H, W)
    return _pamr_algorithm(guide, scores, steps=steps, dilations=dilations)


register_refiner("pamr", pamr_refiner)
sam_prompt_refiner.sam_methods = ("trident",)  # the methods whose model carries the SAM it uses (model.proxy.sam)
register_refiner("sam-prompts", sam_prompt_refiner)  # Trident's SAM-prompt refinement (gemseg.sam_refine)
# LPOSS / LPOSS+ (gemseg.lposs): label propagation with a DINO ViT-B/16, built on first use
register_refiner("lposs", LPOSSRefiner())
register_refiner("lposs+", LPOSSRefiner(pixel=True))


def masks_refiner(scores: torch.Tensor, *, image: torch.Tensor, model=None, masks: torch.Tensor,
                  labels=None) -> torch.Tensor:
    """CorrCLIP's map correction (:func:`gemseg.methods.corrclip.correct_scores`) for any method: every
    mask of ``masks`` [B, H, W] (label maps at the scores' size, from the model's mask source; the
    smallest id, pixels in no mask, is left alone) takes its most frequent label, by carrying the scores of
    one of that label's pixels. ``labels``: the predictor's scores -> labels [B, H, W] (default: argmax)."""
    from .methods.corrclip import correct_scores

    current = labels(scores) if labels is not None else scores.argmax(dim=1)
    return correct_scores(scores, current.to(scores.device), masks.to(scores.device))


masks_refiner.needs_masks = True  # the Segmenter passes masks= and labels=
register_refiner("masks", masks_refiner)

__all__ = ["register_refiner", "get_refiner", "list_refiners", "resolve_refiners", "refine_scores", "pamr_refiner",
           "masks_refiner"]
