"""Pictures of heatmaps, label maps and given token clusters, drawn with numpy and PIL only (no display,
no matplotlib), and the picture helpers the CLI and the demo share (sizes, legends, the random-weights mark).

Arrays are ``uint8`` RGB ``[H, W, 3]`` unless said otherwise; score maps are float ``[H, W]``.
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


# --- colour maps ------------------------------------------------------------------------------------
def _jet(x: np.ndarray) -> np.ndarray:
    # the classic piecewise-linear jet: blue -> cyan -> yellow -> red
    return np.stack([np.clip(1.5 - np.abs(4 * x - c), 0, 1) for c in (3, 2, 1)], axis=-1)


def _heat(x: np.ndarray) -> np.ndarray:
    # black -> red -> yellow -> white, monotonic in lightness (prints well in grayscale)
    return np.stack([np.clip(3 * x - c, 0, 1) for c in (0, 1, 2)], axis=-1)


def _gray(x: np.ndarray) -> np.ndarray:
    return np.repeat(x[..., None], 3, axis=-1)


COLORMAPS = {"jet": _jet, "heat": _heat, "gray": _gray}


def colormap_table(name: str = "jet", n: int = 256) -> np.ndarray:
    """The colour map ``name`` (one of :data:`COLORMAPS`) sampled at ``n`` levels -> uint8 [n, 3]."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}")
    return np.round(COLORMAPS[name](np.linspace(0.0, 1.0, n)) * 255).astype(np.uint8)


def colorize(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Values in [0, 1] (clipped; NaN counts as 0) [H, W] -> uint8 RGB [H, W, 3]."""
    table = colormap_table(cmap)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    idx = np.round(np.clip(v, 0.0, 1.0) * (len(table) - 1)).astype(np.intp)
    return table[idx]


def normalize(scores: np.ndarray, lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, float, float]:
    """Scale ``scores`` to [0, 1] between ``lo`` and ``hi`` (default: its min and max); returns the
    scaled array and the ``(lo, hi)`` used. A constant map becomes all zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    lo = float(np.nanmin(scores)) if lo is None else float(lo)
    hi = float(np.nanmax(scores)) if hi is None else float(hi)
    span = hi - lo
    return (np.clip((scores - lo) / span, 0, 1) if span > 0 else np.zeros_like(scores)), lo, hi


def blend(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5, mask: np.ndarray | None = None) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors``, only where ``mask`` [H, W] is true when given."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    image = np.asarray(image, dtype=np.float32)
    mixed = (1 - alpha) * image + alpha * np.asarray(colors, dtype=np.float32)
    if mask is not None:
        mixed = np.where(np.asarray(mask, dtype=bool)[..., None], mixed, image)
    return np.round(mixed).clip(0, 255).astype(np.uint8)


# --- class colours ----------------------------------------------------------------------------------
def palette(n: int) -> np.ndarray:
    """``n`` distinct colours -> uint8 [n, 3]; colour 0 (background) is black.

    Hues step by the golden angle so that neighbouring class indices differ strongly; saturation and
    value alternate so that far-apart indices with close hues still differ.
    """
    if not 1 <= n <= 256:
        raise ValueError(f"a palette holds 1 to 256 colours, got {n}")
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(1, n):
        h = ((i - 1) * 0.381966) % 1.0
        s = (0.85, 0.55)[(i - 1) % 2]
        v = (0.95, 0.75, 0.55)[((i - 1) // 2) % 3]
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


def label_image(labels: np.ndarray, colors: np.ndarray) -> Image.Image:
    """Label map [H, W] with values < 256 -> an indexed (``P`` mode) PIL image with ``colors`` as its
    palette: reading it back with ``np.array(Image.open(path))`` gives the labels."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= 256):
        raise ValueError("an indexed PNG holds labels 0-255")
    h, w = labels.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(colors)] = colors
    im.putpalette(pal.flatten().tolist())
    return im


# --- text -------------------------------------------------------------------------------------------
def get_font(size: int, path: str | None = None):
    """A TrueType font of ``size`` pixels: ``path`` if given, else PIL's built-in font (Latin only;
    pass a font such as Noto Sans CJK for other scripts). Old PIL without sizes gets its bitmap font."""
    if path:
        try:
            return ImageFont.truetype(path, size)
        except OSError as e:
            raise ValueError(f"cannot load font {path}: {e}") from e
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _safe_text(draw: ImageDraw.ImageDraw, font, text: str) -> str:
    try:
        draw.textbbox((0, 0), text, font=font)
        return text
    except UnicodeEncodeError:  # bitmap fonts only draw Latin-1
        return text.encode("latin-1", "replace").decode("latin-1")


def text_box(text: str, font) -> tuple[int, int]:
    """(width, height) ``text`` takes in ``font``."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = _safe_text(draw, font, text)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - min(left, 0), bottom - min(top, 0)


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, fill=(0, 0, 0)) -> None:
    draw.text(xy, _safe_text(draw, font, text), font=font, fill=fill)


def font_size_for(width: int, height: int) -> int:
    """A legible font size for a figure of this size (12 to 40 pixels)."""
    return int(np.clip(round(max(width, height) / 45), 12, 40))


def fit_text(text: str, font, max_width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``max_width`` pixels: the longest prefix that fits,
    found by bisection (about log2(len) measurements, whatever the length)."""
    if text_box(text, font)[0] <= max_width:
        return text
    lo, hi = 1, len(text) - 1  # text[:lo] + "…" is the fallback; text[:hi + 1] is known too wide
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_box(text[:mid] + "…", font)[0] <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


# --- figure parts -----------------------------------------------------------------------------------
WHITE = (255, 255, 255)


def colorbar(height: int, lo: float, hi: float, *, cmap: str = "jet", font=None, label: str | None = None,
             ticks: int = 5) -> Image.Image:
    """A vertical colour bar of ``height`` pixels, ``hi`` at the top, with ``ticks`` value labels."""
    font = font or get_font(font_size_for(height, height))
    fs = text_box("0", font)[1]
    bar_w = max(10, fs)
    label_h = (fs + 6) if label else 0
    top = label_h + fs // 2 + 2
    bar_h = max(height - top - fs // 2 - 2, 16)
    labels = [f"{lo + (hi - lo) * t:.3g}" for t in np.linspace(1, 0, ticks)]
    text_w = max(text_box(s, font)[0] for s in labels)
    width = max(bar_w + 8 + text_w + 6, text_box(label, font)[0] + 4 if label else 0)
    canvas = Image.new("RGB", (width, max(height, top + bar_h + fs // 2 + 2)), WHITE)
    grad = colorize(np.linspace(1, 0, bar_h)[:, None].repeat(bar_w, axis=1), cmap)
    canvas.paste(Image.fromarray(grad), (2, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([2, top, 2 + bar_w - 1, top + bar_h - 1], outline=(0, 0, 0))
    if label:
        draw_text(draw, (2, 0), label, font)
    for t, s in zip(np.linspace(0, 1, ticks), labels):
        y = top + int(round(t * (bar_h - 1)))
        draw.line([2 + bar_w, y, 2 + bar_w + 4, y], fill=(0, 0, 0))
        draw_text(draw, (2 + bar_w + 7, y - fs // 2 - 1), s, font)
    return canvas


def legend(entries: Sequence[tuple[str, Sequence[int]]], *, font=None, max_width: int = 400,
           min_height: int = 0) -> Image.Image:
    """A column of colour swatches with names: ``entries`` are ``(text, (r, g, b))``."""
    font = font or get_font(14)
    fs = text_box("Ag", font)[1]
    row = fs + 8
    texts = [fit_text(t, font, max_width - fs - 16) for t, _ in entries]
    width = min(max_width, max([text_box(t, font)[0] for t in texts] + [0]) + fs + 16)
    canvas = Image.new("RGB", (width, max(min_height, row * len(entries) + 8)), WHITE)
    draw = ImageDraw.Draw(canvas)
    for i, (text, (_, color)) in enumerate(zip(texts, entries)):
        y = 4 + i * row
        draw.rectangle([4, y + 2, 4 + fs, y + 2 + fs], fill=tuple(int(c) for c in color), outline=(0, 0, 0))
        draw_text(draw, (fs + 10, y + 1), text, font)
    return canvas


def hstack(parts: Sequence[Image.Image], *, gap: int = 6, background=WHITE) -> Image.Image:
    """Images side by side, top-aligned."""
    width = sum(p.width for p in parts) + gap * (len(parts) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in parts)), background)
    x = 0
    for p in parts:
        canvas.paste(p.convert("RGB"), (x, 0))
        x += p.width + gap
    return canvas


def titled(image: Image.Image, title: str, *, font=None) -> Image.Image:
    """``image`` with ``title`` written above it."""
    font = font or get_font(font_size_for(*image.size))
    text = fit_text(title, font, max(image.width - 8, 20))
    fs = text_box("Ag", font)[1]
    canvas = Image.new("RGB", (image.width, image.height + fs + 8), WHITE)
    draw_text(ImageDraw.Draw(canvas), (4, 3), text, font)
    canvas.paste(image.convert("RGB"), (0, fs + 8))
    return canvas


def banner(image: Image.Image, text: str, *, font=None, color=(200, 0, 0)) -> Image.Image:
    """``image`` with a coloured strip and ``text`` on top (used to mark random weights)."""
    font = font or get_font(font_size_for(*image.size))
    fs = text_box("Ag", font)[1]
    strip = Image.new("RGB", (image.width, fs + 10), color)
    draw_text(ImageDraw.Draw(strip), (6, 4), fit_text(text, font, image.width - 12), font, fill=WHITE)
    canvas = Image.new("RGB", (image.width, image.height + strip.height), WHITE)
    canvas.paste(strip, (0, 0))
    canvas.paste(image.convert("RGB"), (0, strip.height))
    return canvas


def grid(panels: Sequence[tuple[str, Image.Image]], *, height: int = 384, columns: int = 4, font=None,
         gap: int = 8) -> Image.Image:
    """Titled panels side by side, each scaled to ``height`` pixels, in rows of at most ``columns``
    (balanced: 5 panels with ``columns=4`` make rows of 3 and 2)."""
    if not panels:
        raise ValueError("grid needs at least one panel")
    rows_needed = -(-len(panels) // max(columns, 1))
    columns = -(-len(panels) // rows_needed)
    font = font or get_font(font_size_for(height, height))
    tiles = []
    for title, im in panels:
        w = max(1, round(im.width * height / im.height))
        tiles.append(titled(im.convert("RGB").resize((w, height), Image.BILINEAR), title, font=font))
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    strips = [hstack(r, gap=gap) for r in rows]
    canvas = Image.new("RGB", (max(s.width for s in strips) + 2 * gap,
                               sum(s.height for s in strips) + gap * (len(strips) + 1)), WHITE)
    y = gap
    for s in strips:
        canvas.paste(s, (gap, y))
        y += s.height + gap
    return canvas


# --- whole pictures -----------------------------------------------------------------------------------
def heatmap_overlay(image: Image.Image, scores: np.ndarray, *, cmap: str = "jet", alpha: float = 0.5,
                    vrange: tuple[float, float] | None = None) -> tuple[Image.Image, float, float]:
    """Colour the raw ``scores`` [H, W] (the image's size) over ``image``; the colours span
    ``vrange`` (default the map's own min and max). Returns the overlay and the ``(lo, hi)`` used."""
    scores = np.asarray(scores)
    if scores.shape != (image.height, image.width):
        raise ValueError(f"scores {scores.shape} do not match the image's {image.height}x{image.width}")
    unit, lo, hi = normalize(scores, *(vrange or (None, None)))
    return Image.fromarray(blend(np.asarray(image.convert("RGB")), colorize(unit, cmap), alpha)), lo, hi


def heatmap_figure(image: Image.Image, scores: np.ndarray, *, title: str | None = None, cmap: str = "jet",
                   alpha: float = 0.5, vrange: tuple[float, float] | None = None, font=None,
                   bar_label: str = "cosine") -> Image.Image:
    """Overlay with a colour bar on its right (in the scores' units), and ``title`` above if given."""
    font = font or get_font(font_size_for(*image.size))
    over, lo, hi = heatmap_overlay(image, scores, cmap=cmap, alpha=alpha, vrange=vrange)
    fig = hstack([over, colorbar(over.height, lo, hi, cmap=cmap, font=font, label=bar_label)])
    return titled(fig, title, font=font) if title else fig


def segmentation_overlay(image: Image.Image, labels: np.ndarray, colors: np.ndarray, *,
                         alpha: float = 0.5, background_index: int | None = 0) -> Image.Image:
    """Class colours over ``image``; ``background_index`` pixels stay uncoloured."""
    labels = np.asarray(labels)
    if labels.shape != (image.height, image.width):
        raise ValueError(f"labels {labels.shape} do not match the image's {image.height}x{image.width}")
    mask = labels != background_index if background_index is not None else None
    return Image.fromarray(blend(np.asarray(image.convert("RGB")), colors[labels], alpha, mask))


def segmentation_figure(image: Image.Image, labels: np.ndarray, colors: np.ndarray,
                        entries: Sequence[tuple[str, Sequence[int]]], *, title: str | None = None,
                        alpha: float = 0.5, background_index: int | None = 0, font=None) -> Image.Image:
    """Overlay with a legend of ``entries`` (``(text, colour)``) on its right."""
    font = font or get_font(font_size_for(*image.size))
    over = segmentation_overlay(image, labels, colors, alpha=alpha, background_index=background_index)
    fig = hstack([over, legend(entries, font=font, max_width=max(160, image.width // 2), min_height=over.height)])
    return titled(fig, title, font=font) if title else fig


# --- token clusters -------------------------------------------------------------------------------
def render_clusters(image: Image.Image | np.ndarray, labels, *, patch_size: int | Sequence[int] | None = None,
                    alpha: float = 1.0, gap: int = 4, colors: np.ndarray | None = None) -> Image.Image:
    """The image and, to its right, its patch clusters ``labels`` [gh, gw] (array or tensor) in colour
    (blended over the image with ``alpha`` < 1). With ``patch_size`` each label covers its patch (the grid
    may overhang the image right and bottom, as padded); without it the grid is stretched over the image.
    Cluster ``c`` gets ``palette(k + 1)[c + 1]`` unless ``colors`` [k, 3] are given (no cluster is black)."""
    from .transforms import to_pil

    img = to_pil(image)
    lab = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64)
    if lab.ndim != 2 or lab.min() < 0:
        raise ValueError(f"labels must be a [gh, gw] grid of cluster indices >= 0, got shape {lab.shape}")
    colors = palette(int(lab.max()) + 2)[1:] if colors is None else np.asarray(colors, dtype=np.uint8)
    W, H = img.size
    if patch_size is not None:
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        full = colors[lab].repeat(ph, axis=0).repeat(pw, axis=1)[:H, :W]
        if full.shape[:2] != (H, W):
            raise ValueError(f"a {lab.shape[0]}x{lab.shape[1]} grid of {ph}x{pw} patches does not cover a "
                             f"{H}x{W} image")
        overlay = Image.fromarray(np.ascontiguousarray(full))
    else:
        overlay = Image.fromarray(colors[lab]).resize((W, H), resample=Image.NEAREST)
    if alpha < 1.0:
        overlay = Image.blend(img, overlay, alpha)
    canvas = Image.new("RGB", (2 * W + gap, H), WHITE)
    canvas.paste(img, (0, 0))
    canvas.paste(overlay, (W + gap, 0))
    return canvas


# --- picture sizes, legends and the random-weights mark (the CLI and the demo draw the same) -----------
RANDOM_BANNER = "RANDOM WEIGHTS - untrained model, meaningless output (demo/test)"


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height), PIL's order, of the pictures of a ``width`` x ``height`` image: its own size,
    scaled down so that the long side is at most ``max_side`` (0: never)."""
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized (bicubic) to ``size`` = (width, height), PIL's order, unless it already has it."""
    return image if image.size == tuple(size) else image.resize(tuple(size), Image.BICUBIC)


def legend_entries(stats: list[dict]) -> list[tuple[str, list[int]]]:
    """Legend rows (text, colour) for the labels present in ``stats`` (:meth:`gemseg.Segmentation.stats`
    rows with a ``"color"``): background first, then classes by area."""
    present = [s for s in stats if s["pixels"]]
    present.sort(key=lambda s: (s["index"] != 0, -s["pixels"]))

    def percent(f: float) -> str:
        return "<0.1%" if f < 0.001 else f"{100 * f:.1f}%"

    return [(("background (uncoloured)" if s["index"] == 0 else s["name"]) + "  " + percent(s["fraction"]),
             s["color"]) for s in present]
