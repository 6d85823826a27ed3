"""Small charts drawn with PIL (no plotting library): lines over a numeric axis (linear or log) with
dashed reference levels, and grouped bars over categories. Each returns an RGB ``PIL.Image``; nothing
is shown on screen."""
from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw

from ..viz import draw_text, fit_text, get_font, text_box

# distinct, colour-blind friendly line colours (Okabe-Ito, then darker variants)
COLORS = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
          (240, 228, 66), (0, 0, 0), (0, 73, 115), (150, 104, 0), (0, 102, 74), (133, 79, 108))
_GRID = (225, 225, 225)
_AXIS = (60, 60, 60)
_SCALE = 2  # drawn at twice the size, then downsampled: smooth lines without antialiasing support

Series = tuple[str, Sequence[float], Sequence[float | None]]  # (label, xs, ys); a None y leaves a gap


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"cannot place ticks on [{lo}, {hi}]")
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw - 1e-12)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value < hi + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}"


class _Canvas:
    """A white figure with a title, axis labels, a plot area and a legend on the right."""

    def __init__(self, size: tuple[int, int], title: str, xlabel: str, ylabel: str, yticks: list[float],
                 legend: list[tuple[str, tuple[int, int, int], str]], xtick_labels: list[str]):
        s = _SCALE
        self.width, self.height = size[0] * s, size[1] * s
        self.image = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        self.font = get_font(13 * s)
        self.title_font = get_font(16 * s)
        fh = text_box("Ag", self.font)[1]
        self.fh = fh
        legend_w = 0
        if legend:
            legend_w = min(max(text_box(t, self.font)[0] for t, _, _ in legend) + 52 * s, self.width // 3)
        ytick_w = max(text_box(_label(t), self.font)[0] for t in yticks)
        xtick_h = fh if xtick_labels else 0
        self.left = 12 * s + fh + 8 * s + ytick_w + 8 * s
        self.right = self.width - 16 * s - legend_w
        self.top = 16 * s + text_box("Ag", self.title_font)[1] + 14 * s
        self.bottom = self.height - (12 * s + fh + 10 * s + xtick_h + 8 * s)
        if self.right - self.left < 100 or self.bottom - self.top < 100:
            raise ValueError(f"a chart of {size[0]}x{size[1]} pixels is too small for its labels")
        self.y0, self.y1 = yticks[0], yticks[-1]
        title = fit_text(title, self.title_font, self.width - 24 * s)
        draw_text(self.draw, ((self.width - text_box(title, self.title_font)[0]) // 2, 12 * s), title,
                  self.title_font)
        xl = fit_text(xlabel, self.font, self.right - self.left)
        draw_text(self.draw, ((self.left + self.right - text_box(xl, self.font)[0]) // 2,
                              self.height - 12 * s - fh), xl, self.font, fill=_AXIS)
        yl = fit_text(ylabel, self.font, self.bottom - self.top)
        box = Image.new("RGB", text_box(yl, self.font), (255, 255, 255))
        draw_text(ImageDraw.Draw(box), (0, 0), yl, self.font, fill=_AXIS)
        box = box.rotate(90, expand=True)
        self.image.paste(box, (12 * s, (self.top + self.bottom - box.height) // 2))
        for t in yticks:
            y = self.y(t)
            self.draw.line([(self.left, y), (self.right, y)], fill=_GRID, width=s)
            text = _label(t)
            draw_text(self.draw, (self.left - 8 * s - text_box(text, self.font)[0], y - fh // 2 - s), text,
                      self.font, fill=_AXIS)
        self._legend(legend, legend_w)

    def y(self, value: float) -> int:
        return round(self.bottom - (value - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top))

    def frame(self) -> None:
        s = _SCALE
        self.draw.rectangle([self.left, self.top, self.right, self.bottom], outline=_AXIS, width=s)

    def xtick(self, x: int, text: str) -> None:
        s = _SCALE
        self.draw.line([(x, self.bottom), (x, self.bottom + 5 * s)], fill=_AXIS, width=s)
        text = fit_text(text, self.font, max(self.right - self.left, 40))
        draw_text(self.draw, (x - text_box(text, self.font)[0] // 2, self.bottom + 8 * s), text, self.font,
                  fill=_AXIS)

    def _legend(self, entries, width: int) -> None:
        s = _SCALE
        y = self.top
        for text, color, style in entries:  # style: "line" (with a marker), "dashed" or "box"
            x = self.right + 16 * s
            mid = y + self.fh // 2 + s
            if style == "dashed":
                dashed_line(self.draw, (x, mid), (x + 22 * s, mid), color, 2 * s, dash=4 * s)
            elif style == "box":
                self.draw.rectangle([x + 5 * s, mid - 6 * s, x + 17 * s, mid + 6 * s], fill=color)
            else:
                self.draw.line([(x, mid), (x + 22 * s, mid)], fill=color, width=3 * s)
                marker(self.draw, x + 11 * s, mid, color)
            draw_text(self.draw, (x + 28 * s, y), fit_text(text, self.font, width - 44 * s), self.font)
            y += self.fh + 8 * s

    def done(self) -> Image.Image:
        return self.image.resize((self.width // _SCALE, self.height // _SCALE), Image.LANCZOS)


def marker(draw: ImageDraw.ImageDraw, x: float, y: float, color) -> None:
    r = 4 * _SCALE
    draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=(255, 255, 255), width=_SCALE)


def dashed_line(draw: ImageDraw.ImageDraw, start, end, color, width: int, dash: int = 8 * _SCALE) -> None:
    """A horizontal or sloped dashed line from ``start`` to ``end``."""
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    steps = max(int(length // dash), 1)
    for i in range(0, steps, 2):
        a, b = i / steps, min((i + 1) / steps, 1.0)
        draw.line([(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)],
                  fill=color, width=width)


def _y_range(values: list[float], *, from_zero: bool) -> list[float]:
    if not values:
        raise ValueError("nothing to plot: every value is missing")
    lo, hi = min(values), max(values)
    if from_zero:
        lo = min(lo, 0.0)
    pad = (hi - lo) * 0.05 if hi > lo else 1.0
    bottom = lo if from_zero and lo == 0 else lo - pad
    if lo >= 0:  # metrics in percent: never below 0
        bottom = max(bottom, 0.0)
    return nice_ticks(bottom, hi + pad)


def line_chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str, log_x: bool = False,
               references: Sequence[tuple[str, float, int]] = (), size: tuple[int, int] = (900, 520)) -> Image.Image:
    """Lines with markers, one per series, on a shared numeric x axis.

    Args:
        series: ``(label, xs, ys)``; a ``None`` in ys leaves a gap. x values must be > 0 with ``log_x``.
        references: ``(label, y, series index)``: a dashed horizontal line at ``y`` in that series' colour
            (e.g. the adaptive temperature beside fixed ones).
        log_x: a logarithmic x axis with ticks at powers of ten.
    Returns:
        An RGB image of ``size`` (width, height).
    """
    xs_all = [float(x) for _, xs, _ in series for x in xs]
    if not xs_all:
        raise ValueError("nothing to plot: no x values")
    if log_x and min(xs_all) <= 0:
        raise ValueError("a logarithmic x axis needs positive x values")
    ys_all = [float(y) for _, _, ys in series for y in ys if y is not None] + [float(y) for _, y, _ in references]
    yticks = _y_range(ys_all, from_zero=False)
    fx = (lambda v: math.log10(v)) if log_x else float
    lo, hi = fx(min(xs_all)), fx(max(xs_all))
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    legend = [(label, COLORS[i % len(COLORS)], "line") for i, (label, _, _) in enumerate(series)]
    legend += [(label, COLORS[i % len(COLORS)], "dashed") for label, _, i in references]
    if log_x:
        ticks = [10.0 ** p for p in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    else:
        distinct = sorted(set(xs_all))
        ticks = distinct if len(distinct) <= 13 else nice_ticks(min(xs_all), max(xs_all), 8)
        ticks = [t for t in ticks if lo <= t <= hi]
    c = _Canvas(size, title, xlabel, ylabel, yticks, legend, [_label(t) for t in ticks])

    def px(v: float) -> float:
        return c.left + (fx(v) - lo) / (hi - lo) * (c.right - c.left)

    for t in ticks:
        c.xtick(round(px(t)), _label(t))
    for label, y, i in references:
        dashed_line(c.draw, (c.left, c.y(y)), (c.right, c.y(y)), COLORS[i % len(COLORS)], 2 * _SCALE)
    for i, (_, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        points = sorted((float(x), float(y)) for x, y in zip(xs, ys) if y is not None)
        run: list[tuple[float, float]] = []
        order = sorted(zip((float(x) for x in xs), ys), key=lambda p: p[0])
        for x, y in order:  # draw runs between gaps
            if y is None:
                if len(run) > 1:
                    c.draw.line(run, fill=color, width=3 * _SCALE, joint="curve")
                run = []
            else:
                run.append((px(x), c.y(float(y))))
        if len(run) > 1:
            c.draw.line(run, fill=color, width=3 * _SCALE, joint="curve")
        for x, y in points:
            marker(c.draw, px(x), c.y(y), color)
    c.frame()
    return c.done()


def bar_chart(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, title: str,
              xlabel: str, ylabel: str, size: tuple[int, int] = (900, 520)) -> Image.Image:
    """Grouped bars: for each category, one bar per series (a ``None`` value draws no bar).

    Returns:
        An RGB image of ``size`` (width, height).
    """
    if not categories or not series:
        raise ValueError("nothing to plot: no categories or no series")
    values = [float(v) for _, vs in series for v in vs if v is not None]
    yticks = _y_range(values, from_zero=True)
    legend = [(label, COLORS[i % len(COLORS)], "box") for i, (label, _) in enumerate(series)]
    c = _Canvas(size, title, xlabel, ylabel, yticks, legend, list(categories))
    slot = (c.right - c.left) / len(categories)
    bar = slot * 0.8 / len(series)
    for k, name in enumerate(categories):
        start = c.left + slot * k + slot * 0.1
        c.xtick(round(c.left + slot * (k + 0.5)), name)
        for i, (_, vs) in enumerate(series):
            if vs[k] is None:
                continue
            x0 = start + bar * i
            top, base = c.y(float(vs[k])), c.y(max(yticks[0], 0.0))
            c.draw.rectangle([round(x0), min(top, base), round(x0 + bar) - _SCALE, max(top, base)],
                             fill=COLORS[i % len(COLORS)])
    c.frame()
    return c.done()
