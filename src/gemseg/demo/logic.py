"""What one request of the web demo does, without any web framework: the single adapter between the
demo and the library.

:func:`run` takes a loaded :class:`~gemseg.GEMModel`, the path of an uploaded picture and the page's
settings, and returns a :class:`Result` of PIL pictures and plain data. The work is the library's:
:meth:`GEMModel.heatmaps` and the predictor :class:`gemseg.Segmenter` (the same calls as ``gemseg heatmap``
and ``gemseg segment``); this module only checks the page's input and
draws the pictures.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

MODES = ("heatmaps", "segmentation")
# the page's masks choice: no class-agnostic masks; the server's mask source (given at launch, --masks), for the
# methods that need masks (corrclip); that source and the "masks" refiner (CorrCLIP's map correction) after any method
MASK_CHOICES = ("none", "masks", "masks+refine")


class DemoError(ValueError):
    """Bad input from the page; the message is one line for the user."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; checked before anything is decoded or computed."""

    max_bytes: int = 20 * 2 ** 20  # upload size: 20 MiB holds any photo a phone takes (our choice)
    max_pixels: int = 40_000_000  # 40 megapixels, refused from the header (gemseg.io's bomb guard)
    max_prompts: int = 32  # prompts + background prompts per request: bounds text encoding and figures
    max_side: int = 768  # the long side of the pictures shown (the maps are resized to it)
    max_iterations: int = 5  # GEM self-self iterations a request may ask for (default 1)


@dataclass
class Result:
    """What one request returns: pictures (PIL, RGB) and what the page prints beside them."""

    heatmaps: list = field(default_factory=list)  # [(PIL image, prompt)] in heatmaps mode
    segmentation: object = None  # PIL overlay with its legend in segmentation mode, else None
    classes: list = field(default_factory=list)  # [{"name", "pixels", "fraction", ...}] found, by area
    seconds: float = 0.0  # model and pictures, not the upload
    random_weights: bool = False  # the model is untrained: every picture carries a banner
    warnings: list = field(default_factory=list)  # one-line notes (duplicate prompts, ignored options)
    mode: str = "heatmaps"  # what was asked for

    def rows(self) -> list[list]:
        """The classes found as table rows: name, area in %, pixels, mean probability."""
        return [[c["name"], round(100 * c["fraction"], 2), c["pixels"], c["mean_probability"]]
                for c in self.classes]

    def status(self) -> str:
        """One line for the page (Markdown): seconds, what was found, the random-weights mark."""
        text = f"Done in {self.seconds:.2f} s"
        if self.mode == "segmentation":
            text += "; found: " + (", ".join(c["name"] for c in self.classes) or "nothing but background")
        return text + ("  **(RANDOM WEIGHTS: meaningless output)**" if self.random_weights else "")


def parse_prompts(text, max_prompts: int) -> tuple[list[str], list[str]]:
    """'cat, dog' -> (["cat", "dog"], warnings): blanks dropped, duplicates used once."""
    from ..segment import clean_prompts

    if not isinstance(text, str):
        raise DemoError("prompts must be text, e.g. 'cat, dog'")
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise DemoError("no prompts: type what to look for, separated by commas (e.g. 'cat, dog')")
    with warnings.catch_warnings(record=True) as caught:  # duplicates: used once, said in the page
        warnings.simplefilter("always")
        names = clean_prompts(parts, "prompt")
    if len(names) > max_prompts:
        raise DemoError(f"{len(names)} prompts given; at most {max_prompts} per request")
    return names, [str(w.message) for w in caught]


def load_upload(path, limits: Limits):
    """The uploaded file at ``path`` -> upright RGB PIL image, scaled to ``limits.max_side``.

    The file's size and its header's pixel count are checked before any pixel is decoded.
    """
    from ..io import ImageLoadError, load_image
    from ..viz import fit, output_size

    if not path:
        raise DemoError("no image: upload a picture, paste one or take one with the webcam")
    path = os.fspath(path)
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        raise DemoError("the uploaded file is gone; upload it again") from e
    if nbytes > limits.max_bytes:
        raise DemoError(f"the picture is {_bytes(nbytes)}, over the limit of {_bytes(limits.max_bytes)}; "
                        "send a smaller file")
    try:
        image = load_image(path, max_pixels=limits.max_pixels).image
    except ImageLoadError as e:
        reason = str(e).replace(f"{path}: ", "").replace(" (decompression-bomb guard; raise it with "
                                                         "--max-pixels)", "")
        raise DemoError(f"the uploaded file cannot be used: {reason}") from e
    return fit(image, output_size(*image.size, limits.max_side))


def masks_name(model) -> str | None:
    """What the page calls ``model``'s mask source: the generator's name (``sam-vit-b``, a hub id or a
    folder), ``files:FOLDER``, or the source's class name; ``None`` without one."""
    source = model.mask_source
    if source is None:
        return None
    about = source.describe() if callable(getattr(source, "describe", None)) else {}
    return about.get("model") or (f"files:{about['folder']}" if "folder" in about else type(source).__name__)


def mask_choices(model) -> list[tuple[str, str]]:
    """The masks choices the page offers for ``model``, as (label, value) of :data:`MASK_CHOICES`: only
    ``"none"`` for a server started without ``--masks``."""
    name = masks_name(model)
    if name is None:
        return [("none", "none")]
    return [("none", "none"), (f"{name} (for methods that need masks: corrclip)", "masks"),
            (f"{name} + the masks refiner (any method)", "masks+refine")]


def default_masks(model, refine=()) -> str:
    """The masks choice that serves ``model`` as launched: ``"none"`` without a mask source, else with the
    ``"masks"`` refiner when the server's ``refine`` has it."""
    if model.mask_source is None:
        return "none"
    return "masks+refine" if "masks" in refine else "masks"


def request_refiners(masks: str | None, refine=()) -> tuple[str, ...]:
    """The refiners of one segmentation: the server's ``refine``, with the ``"masks"`` refiner added by
    ``masks="masks+refine"`` and dropped by ``masks="none"`` (``None``: the server's as they are)."""
    refine = tuple(refine)
    if masks == "masks+refine" and "masks" not in refine:
        return refine + ("masks",)
    if masks == "none":
        return tuple(r for r in refine if r != "masks")
    return refine


def _check_masks(model, method: str, masks: str | None, needs_masks: bool) -> None:
    if masks is not None and masks not in MASK_CHOICES:
        raise DemoError(f"unknown masks choice {masks!r}; use one of {', '.join(MASK_CHOICES)}")
    if masks not in (None, "none") and model.mask_source is None:
        raise DemoError(f"masks {masks!r}: this server has no class-agnostic masks; start it with "
                        "--masks SOURCE (e.g. sam-vit-b)")
    if needs_masks and model.mask_source is None:
        raise DemoError(f"method {method!r} needs class-agnostic masks: start the server with "
                        f"--method {method} --proxy NAME --masks SOURCE (e.g. sam-vit-b)")
    if needs_masks and masks == "none":
        raise DemoError(f"method {method!r} needs class-agnostic masks: choose {masks_name(model)} under masks, "
                        "not none")


def model_for(model, *, method: str | None = None, depth: int | None = None, iterations: int | None = None,
              masks: str | None = None, limits: Limits = Limits()):
    """``model`` itself, or a view sharing its weights with another method, GEM depth or iterations.
    ``masks`` (:data:`MASK_CHOICES`, ``None``: as launched) is checked against the method and the server's
    mask source: a method that needs masks is refused with ``"none"`` or without a source."""
    from .. import list_methods

    changes = {}
    if depth is not None and int(depth) != model.config.depth:
        changes["depth"] = int(depth)
    if iterations is not None and int(iterations) != model.config.iterations:
        if not 0 <= int(iterations) <= limits.max_iterations:
            raise DemoError(f"iterations must be between 0 and {limits.max_iterations}, got {int(iterations)}")
        changes["iterations"] = int(iterations)
    method = method or model.method
    if method not in list_methods():
        raise DemoError(f"unknown method {method!r}; use one of {', '.join(list_methods())}")
    from ..methods import get_method

    fn = get_method(method)
    _check_masks(model, method, masks, "masks" in fn.needs)
    if not changes and method == model.method:
        return model
    if "proxy" in fn.needs and model.proxy is None:  # another method's holder of a VFM is re-held by variant()
        raise DemoError(f"method {method!r} needs a proxy vision model: start the server with "
                        f"--method {method} --proxy NAME")
    try:
        return model.variant(method=method, **changes)  # a proxy-free method drops the model's proxy
    except (ValueError, TypeError) as e:  # e.g. a depth the backbone has no blocks for, or a proxy of another kind
        raise DemoError(str(e).splitlines()[0]) from e


def run(model, image_path, prompts: str, mode: str = "heatmaps", *, background: str = "auto",
        threshold: float | None = None, method: str | None = None, depth: int | None = None,
        iterations: int | None = None, size: tuple[int, int] = (448, 448), limits: Limits = Limits(),
        refine: tuple[str, ...] = (), masks: str | None = None) -> Result:
    """One request: heatmaps (one per prompt) or a segmentation (prompts are classes) of one picture.

    Args:
        model: a loaded :class:`~gemseg.GEMModel`; ``method``/``depth``/``iterations`` run a view of it.
        image_path: the uploaded file (any format :func:`gemseg.io.load_image` reads).
        prompts: comma-separated text, e.g. ``"cat, dog"``.
        mode: ``"heatmaps"`` or ``"segmentation"``.
        background: segmentation only: ``"auto"``, ``"none"`` or comma-separated background prompts
            (the rules of ``gemseg segment --background``).
        threshold: segmentation only: pixels whose top class probability is below it become
            background; 0 turns it off, ``None`` takes the rule's default.
        size: (height, width) the model sees.
        refine: segmentation only: refiners of the scores before labelling (``gemseg.refiners`` names).
        masks: the page's masks choice (:data:`MASK_CHOICES`; ``None``: the server's as launched):
            ``"masks+refine"`` adds the ``"masks"`` refiner to ``refine``, ``"none"`` drops it.
    Raises:
        DemoError: bad picture, no or too many prompts, unknown mode or method, impossible settings.
    """
    if mode not in MODES:
        raise DemoError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    names, notes = parse_prompts(prompts, limits.max_prompts)
    view = model_for(model, method=method, depth=depth, iterations=iterations, masks=masks, limits=limits)
    refine = request_refiners(masks, refine)
    if mode == "heatmaps" and masks == "masks+refine":
        notes.append("the masks refiner changes segmentations only; heatmaps are shown unrefined")
    image = load_upload(image_path, limits)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # e.g. a method that ignores a GEM setting
        warnings.simplefilter("always")
        if mode == "heatmaps":
            result = Result(heatmaps=_heatmaps(view, image, names, size))
        else:
            result = _segmentation(view, image, names, background, threshold, size, limits, notes, refine)
    notes += list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    result.mode = mode
    result.random_weights = model.backbone.pretrained is None
    if result.random_weights:
        result.heatmaps = [(_banner(p), n) for p, n in result.heatmaps]
        if result.segmentation is not None:
            result.segmentation = _banner(result.segmentation)
    result.seconds = round(time.perf_counter() - start, 3)
    result.warnings = notes + result.warnings
    return result


def _bytes(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 19 else f"{n / 1024:.0f} KiB"


def _heatmaps(model, image, names: list[str], size) -> list:
    """One heatmap figure per prompt at the picture's size; the model sees ``size`` (H, W)."""
    from .. import viz
    from ..segment import resize_maps

    font = page_font(image.size)
    maps = resize_maps(model.heatmaps(image, names, size=size)[0].float().cpu(), image.size[::-1])  # (Q, H, W)
    return [(viz.heatmap_figure(image, m.numpy(), font=font), n) for n, m in zip(names, maps)]


def _segmentation(model, image, classes, background, threshold, size, limits, notes, refine=()) -> Result:
    import numpy as np

    from .. import viz
    from ..segment import background_rule
    from ..segmenter import Segmenter

    try:
        bg = background_rule(background or "auto", classes, threshold=threshold)
    except ValueError as e:
        raise DemoError(str(e).splitlines()[0]) from e
    if len(classes) + len(bg.prompts) > limits.max_prompts:
        raise DemoError(f"{len(classes)} classes + {len(bg.prompts)} background prompts; at most "
                        f"{limits.max_prompts} per request")
    seg = Segmenter.from_classes(model, classes, background=bg, size=size, refine=list(refine) or None).predict(
        image, out_size=image.size[::-1])
    colors = viz.palette(len(seg.names))
    stats = [{**s, "color": [int(c) for c in colors[s["index"]]]} for s in seg.stats(0)]
    font = page_font(image.size)
    labels = seg.labels[0].cpu().numpy().astype(np.uint8)
    fig = viz.segmentation_figure(image, labels, colors, viz.legend_entries(stats), font=font)
    found = sorted((s for s in stats[1:] if s["pixels"]), key=lambda s: -s["pixels"])
    return Result(segmentation=fig, classes=found)


def _banner(picture):
    from .. import viz

    return viz.banner(picture, viz.RANDOM_BANNER, font=page_font(picture.size))


PAGE_FONT_FRACTION = 20  # text is at least 1/20 of a picture's long side: legible when a phone shrinks it


def page_font(size: tuple[int, int]):
    """The font of the page's pictures of ``size`` (width, height): larger than the command line's, since
    the page scales each picture to the screen (a 768-pixel figure is about 350 pixels on a phone)."""
    from .. import viz

    return viz.get_font(max(viz.font_size_for(*size), round(max(size) / PAGE_FONT_FRACTION)))
