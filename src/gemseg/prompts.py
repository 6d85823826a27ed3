"""The rules of prompts and background that need no tensors: the one prompt validator and the
background choice of class names (label 0 is background, labels ``1..C`` the classes in the order given).

Pure Python, so that the command line checks its arguments before torch is imported;
:mod:`gemseg.segment` re-exports every name here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

# Generic scene "stuff" that competes with the classes as background under background="auto"; a class
# the user names is taken out of it. Chosen by hand (our choice), not tuned on any benchmark.
AUTO_BACKGROUND = ("sky", "wall", "floor", "ceiling", "ground", "road", "grass", "tree", "building", "water")
DEFAULT_THRESHOLD = 0.5  # a pixel keeps its class only if the class holds at least half the probability
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained logit scale: softmax(100 * cosine)


@dataclass(frozen=True)
class Background:
    """How pixels become background (label 0); build it with :func:`background_rule`."""

    rule: str  # "auto", "prompts" or "none"
    prompts: tuple[str, ...]  # background queries, all scoring label 0
    threshold: float | None  # pixels whose top class probability is below it become background; None: off
    logit_scale: float  # probabilities are softmax(logit_scale * cosine)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "prompts": list(self.prompts), "threshold": self.threshold,
                "logit_scale": self.logit_scale}


def clean_prompts(prompts: Sequence[str], what: str = "prompt", *, unique: bool = True) -> list[str]:
    """The one prompt validator: a list of strings, each with its whitespace collapsed; an empty one or a
    non-string is refused (``ValueError``/``TypeError`` naming it, counted from 1). With ``unique``, exact
    duplicates are used once, with a warning (``GEMModel.encode_text`` keeps them: one row per prompt)."""
    if isinstance(prompts, str):
        raise TypeError(f"{what}s must be a list of strings, not a single string; wrap it: [{what}]")
    out: list[str] = []
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise TypeError(f"{what} {i} is a {type(p).__name__}, expected a string")
        text = " ".join(p.split())
        if not text:
            raise ValueError(f"{what} {i} is empty; remove it or give it text")
        if unique and text in out:
            warnings.warn(f"{what} {text!r} is given more than once; using it once", stacklevel=2)
            continue
        out.append(text)
    if not out:
        raise ValueError(f"the {what} list is empty; give at least one {what}")
    return out


def background_rule(background: str | Sequence[str] | None, classes: Sequence[str], *,
                    threshold: float | None = None, logit_scale: float = DEFAULT_LOGIT_SCALE) -> Background:
    """Resolve a background rule against ``classes``.

    Args:
        background: ``"auto"`` (:data:`AUTO_BACKGROUND` minus any class named), ``"none"`` or ``None``
            (no background prompts), a comma-separated string or a list of background prompts.
        threshold: pixels whose top class probability is below it become background. ``None``:
            :data:`DEFAULT_THRESHOLD` with background prompts, off without; ``0``: off.
        logit_scale: probabilities are ``softmax(logit_scale * cosine)``; must be > 0.
    Raises:
        ValueError: a threshold outside [0, 1], ``logit_scale <= 0``, or no background prompt left.
    """
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale:g}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (0 turns it off), got {threshold:g}")
    taken = {c.lower() for c in classes}
    key = background.strip().lower() if isinstance(background, str) else background
    if key is None or key == "none":
        return Background("none", (), threshold or None, float(logit_scale))
    thr = DEFAULT_THRESHOLD if threshold is None else (threshold or None)
    if key == "auto":
        return Background("auto", tuple(p for p in AUTO_BACKGROUND if p not in taken), thr, float(logit_scale))
    prompts = clean_prompts(background.split(",") if isinstance(background, str) else list(background),
                            "background prompt")
    clash = [p for p in prompts if p.lower() in taken]
    if clash:
        warnings.warn(f"background prompt(s) {', '.join(clash)} are also classes; they stay classes", stacklevel=2)
        prompts = [p for p in prompts if p.lower() not in taken]
    if not prompts:
        raise ValueError("no background prompts left; use background 'none' for no background")
    return Background("prompts", tuple(prompts), thr, float(logit_scale))
