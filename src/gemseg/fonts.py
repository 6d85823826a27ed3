"""Fonts for the text in pictures: a default with wide Latin, Greek and Cyrillic coverage (DejaVu Sans),
a font with CJK glyphs when text needs one, and a one-time warning when no installed font can draw a
text (its missing characters would otherwise come out as boxes, silently).

Fonts are looked up in the usual system places (Debian's ``fonts-dejavu-core`` and ``fonts-noto-cjk``,
Fedora, Arch, macOS, Windows) and in matplotlib's bundled DejaVu Sans when matplotlib is installed;
nothing is downloaded.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import unicodedata
import warnings

from PIL import ImageFont

# DejaVu Sans: Latin-1 and Latin Extended, Greek, Cyrillic, many symbols
DEFAULT_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian/Ubuntu fonts-dejavu-core
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/Library/Fonts/DejaVuSans.ttf",
)
# fonts with Chinese, Japanese and Korean glyphs, tried for text the first font cannot draw
FALLBACK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian/Ubuntu fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # fonts-droid-fallback
    "/System/Library/Fonts/PingFang.ttc",  # macOS
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "C:/Windows/Fonts/msyh.ttc",  # Windows: Microsoft YaHei
)
HOW_TO = ("pass a font that has them (font=FILE; on the command line --font FILE), e.g. Noto Sans CJK "
          "(Debian: apt-get install fonts-noto-cjk)")
_warned: set[str] = set()


def _matplotlib_dejavu() -> str | None:
    """matplotlib's bundled DejaVu Sans, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=None)
def default_font_path() -> str | None:
    """The first installed font of :data:`DEFAULT_FONTS` (or matplotlib's DejaVu Sans); None: none is."""
    return next((p for p in DEFAULT_FONTS if os.path.isfile(p)), None) or _matplotlib_dejavu()


@functools.lru_cache(maxsize=None)
def fallback_font_paths() -> tuple[str, ...]:
    return tuple(p for p in FALLBACK_FONTS if os.path.isfile(p))


def _drawable(ch: str) -> bool:
    """Characters that must leave ink: not spaces, controls or format characters."""
    return not ch.isspace() and unicodedata.category(ch)[0] not in "CZ"


def _mask(font, text: str) -> tuple:
    mask = font.getmask(text)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=4096)
def _has_glyph(font, ch: str) -> bool:
    # a character the font lacks is drawn as its .notdef glyph, the same as U+FFFF (never in a font)
    return _mask(font, ch) != _mask(font, "\uffff")


def missing_glyphs(font, text: str) -> str:
    """The characters of ``text`` that ``font`` cannot draw (each once, in order); '' when it draws all.
    Fonts that cannot tell (PIL's old bitmap font) report the characters outside Latin-1."""
    chars = dict.fromkeys(c for c in text if _drawable(c))
    if not isinstance(font, ImageFont.FreeTypeFont):
        return "".join(c for c in chars if ord(c) > 255)
    return "".join(c for c in chars if not _has_glyph(font, c))


@functools.lru_cache(maxsize=256)
def _fallback(path: str, size: int):
    return ImageFont.truetype(path, size)


def font_for_text(font, text: str):
    """``font``, or an installed fallback font of the same size that draws every character of
    ``text`` that ``font`` cannot. When none can, warns once per set of characters and returns ``font``."""
    missing = missing_glyphs(font, text)
    if not missing:
        return font
    size = int(getattr(font, "size", 14))
    for path in fallback_font_paths():
        candidate = _fallback(path, size)
        if not missing_glyphs(candidate, missing):
            return candidate
    if missing not in _warned:
        _warned.add(missing)
        name = " ".join(font.getname()) if isinstance(font, ImageFont.FreeTypeFont) else "PIL's bitmap font"
        warnings.warn(f"no installed font draws {missing!r} (of {text!r}; {name} has no glyph for it), so it "
                      f"shows as boxes; {HOW_TO}", stacklevel=3)
    return font


def load_font(size: int, path: str | None = None):
    """A TrueType font of ``size`` pixels: ``path`` if given, else :func:`default_font_path`, else PIL's
    built-in font (basic Latin only). Old PIL without sizes gets its bitmap font."""
    if path:
        try:
            return ImageFont.truetype(path, size)
        except OSError as e:
            raise ValueError(f"cannot load font {path}: {e}") from e
    default = default_font_path()
    if default:
        return ImageFont.truetype(default, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


__all__ = ["DEFAULT_FONTS", "FALLBACK_FONTS", "default_font_path", "font_for_text", "load_font",
           "missing_glyphs"]
