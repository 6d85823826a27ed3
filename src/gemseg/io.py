"""Image input for the command line and scripts: robust loading and file discovery (PIL and numpy only).

:func:`load_image` turns any file PIL can read into an 8-bit RGB image, or raises
:class:`ImageLoadError` with a one-line reason. The conversions are:

- EXIF orientation is applied (a photo shot in portrait comes out upright).
- Grayscale (``L``, ``1``) and other colour spaces (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) go to RGB.
- 16-bit (``I;16*``) and 32-bit integer (``I``) images are scaled from 0-65535 to 0-255 (not
  stretched: a dim 12-bit image stays dim); 32-bit data outside 0-65535 and float (``F``) images are
  min-max stretched to 0-255.
- Transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) is composited on
  ``alpha_background`` (white by default), or dropped when that is ``None``.
- Animated or multi-page files give their first frame.
- Images of more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, 100 megapixels) are
  refused from their header, before any pixel is decoded: the decompression-bomb guard.
"""
from __future__ import annotations

import contextlib
import fnmatch
import glob
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: about 300 MB decoded as RGB

# extensions that folder and glob discovery treat as images (explicit files are tried whatever their name)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff",
                    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".avif", ".qoi", ".jp2", ".j2k")

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageLoadError(ValueError):
    """An input file is not a usable image; the message is one line naming the file and the reason."""


@dataclass
class LoadedImage:
    """An image ready for a model, with what was done to get it there."""

    image: Image.Image  # RGB, 8 bits per channel, upright
    path: str
    original_mode: str  # PIL mode of the file, e.g. "RGB", "I;16", "CMYK", "P"
    original_size: tuple[int, int]  # (width, height) as stored, before EXIF rotation
    exif_transposed: bool = False  # an EXIF orientation tag was applied
    notes: list[str] = field(default_factory=list)  # conversions worth telling the user about

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return self.image.size


@contextlib.contextmanager
def _pixel_limit(max_pixels: int | None):
    """Let our own ``max_pixels`` guard decide instead of PIL's global bomb limit, then restore it."""
    old = Image.MAX_IMAGE_PIXELS
    if max_pixels is None or (old is not None and max_pixels > old):
        Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_image(source: str | os.PathLike | bytes | BinaryIO, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               alpha_background: tuple[int, int, int] | None = (255, 255, 255),
               name: str | None = None) -> LoadedImage:
    """Read an image file as an upright 8-bit RGB image (see the module docstring for every conversion).

    Args:
        source: a path, the file's bytes, or a binary file object (read from its current position;
            uploads need no temporary file). The same guards apply to all three.
        max_pixels: refuse images with more pixels than this (``None``: no limit).
        alpha_background: RGB colour transparent pixels are composited on; ``None`` drops the alpha
            channel instead (hidden colours under transparent pixels then show).
        name: how messages and :attr:`LoadedImage.path` call the image (default: the path, the file
            object's ``name``, or ``"<bytes>"``).
    Raises:
        ImageLoadError: missing, empty, unreadable, truncated, zero-sized or too large files.
        TypeError: ``source`` is none of the above.
    """
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        data = bytes(source) if not hasattr(source, "read") else source.read()
        if not isinstance(data, bytes):
            raise TypeError(f"the file object must be opened in binary mode ('rb'), got {type(data).__name__}")
        label = name or (str(getattr(source, "name", "")) or "<bytes>")
        if not data:
            raise ImageLoadError(f"{label}: empty file (0 bytes)")
        return _load(io.BytesIO(data), label, data[:64], max_pixels, alpha_background)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path, bytes or a binary file object, got {type(source).__name__}")
    path = os.fspath(source)
    label = name or path
    try:
        info = os.stat(path)
    except OSError as e:
        raise ImageLoadError(f"{label}: cannot read ({e.strerror or e})") from e
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(f"{label}: is a folder, not an image")
    if not stat.S_ISREG(info.st_mode):  # reading a pipe or a device could block or never end
        raise ImageLoadError(f"{label}: not a regular file (a pipe, socket or device); save it to a file first")
    nbytes = info.st_size
    if nbytes == 0:
        raise ImageLoadError(f"{label}: empty file (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(64)
    return _load(path, label, head, max_pixels, alpha_background)


def _load(fp, path: str, head: bytes, max_pixels: int | None,
          alpha_background: tuple[int, int, int] | None) -> LoadedImage:
    """:func:`load_image` of an open-able ``fp`` (path or file object) named ``path``, whose first bytes
    are ``head``."""
    with _pixel_limit(max_pixels):
        try:
            im = Image.open(fp)
        except UnidentifiedImageError as e:
            raise ImageLoadError(f"{path}: {_why_unreadable(head)}") from e
        except Image.DecompressionBombError as e:
            raise ImageLoadError(f"{path}: refused by PIL's decompression-bomb guard ({e})") from e
        except OSError as e:
            raise ImageLoadError(f"{path}: cannot open ({e})") from e
        with im:
            w, h = im.size
            if w == 0 or h == 0:
                raise ImageLoadError(f"{path}: zero-sized image ({w}x{h})")
            if max_pixels is not None and w * h > max_pixels:
                raise ImageLoadError(
                    f"{path}: {w}x{h} = {w * h / 1e6:.1f} megapixels is over the limit of "
                    f"{max_pixels / 1e6:g} megapixels (decompression-bomb guard; raise it with --max-pixels)")
            mode = im.mode
            try:
                im.load()
            except (OSError, SyntaxError, ValueError) as e:  # truncated data, corrupt chunks, bad headers
                raise ImageLoadError(f"{path}: corrupt or truncated image data ({e})") from e
            orientation = _orientation(im)
            exif_note = []
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception as e:  # malformed EXIF must not lose the image
                upright = im
                exif_note = [f"EXIF orientation ignored (unreadable EXIF: {type(e).__name__})"]
            rgb, notes = to_rgb(upright, alpha_background=alpha_background)
    return LoadedImage(rgb, path, mode, (w, h), exif_transposed=orientation not in (None, 1),
                       notes=exif_note + notes)


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WEBP"))


def _why_unreadable(head: bytes) -> str:
    """Why PIL could not identify a file starting with ``head``: a zero-sized header, a known format
    with a broken header, or no image format at all."""
    size = None
    if head.startswith(b"\x89PNG") and head[12:16] == b"IHDR" and len(head) >= 24:
        size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    elif head.startswith(b"GIF8") and len(head) >= 10:
        size = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    elif head.startswith(b"BM") and len(head) >= 26:
        size = (int.from_bytes(head[18:22], "little", signed=True),
                abs(int.from_bytes(head[22:26], "little", signed=True)))  # negative height: top-down rows
    elif head[:1] == b"P" and head[1:2] in b"123456" and len(head) > 2:
        fields = head[2:].split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            size = int(fields[0]), int(fields[1])
    if size is not None and 0 in size:
        return f"zero-sized image ({size[0]}x{size[1]})"
    fmt = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    if fmt is None and size is not None:
        fmt = "PPM"
    if fmt:
        return f"looks like a {fmt} file but its header cannot be read (corrupt file)"
    return "not an image, or a format PIL cannot read"


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)  # Orientation
    except Exception:
        return None


def to_rgb(im: Image.Image, *, alpha_background: tuple[int, int, int] | None = (255, 255, 255)
           ) -> tuple[Image.Image, list[str]]:
    """Any PIL mode -> 8-bit RGB; returns the image and notes on lossy conversions."""
    notes: list[str] = []
    mode = im.mode
    if mode == "RGB":
        return im, notes
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            arr, how = _stretch(arr), "min-max stretched"
        else:
            arr, how = arr / 257.0, "scaled from 16 bits"
        notes.append(f"{mode} image {how} to 8 bits")
        return Image.fromarray(np.round(arr).clip(0, 255).astype(np.uint8)).convert("RGB"), notes
    if mode == "F":
        notes.append("float image min-max stretched to 8 bits")
        arr = np.round(_stretch(np.asarray(im, dtype=np.float64))).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB"), notes
    if mode == "P":
        has_alpha = "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA"
        im = im.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return im, notes
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        if alpha_background is None:
            notes.append("alpha channel dropped")
            return rgba.convert("RGB"), notes
        base = Image.new("RGBA", rgba.size, tuple(alpha_background) + (255,))
        if rgba.getextrema()[3][0] < 255:
            notes.append(f"transparent pixels composited on {tuple(alpha_background)}")
        return Image.alpha_composite(base, rgba).convert("RGB"), notes
    if mode == "CMYK":
        notes.append("CMYK converted to RGB without colour management")
    return im.convert("RGB"), notes


def _stretch(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)


# --- discovery ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSource:
    """One image to process: its ``path`` and ``key``, the relative name its outputs are stored under
    (the path relative to the folder or glob it was found in; the file name for a file given alone)."""

    path: str
    key: str


@dataclass
class Discovery:
    """What :func:`find_images` found: the images, inputs that gave nothing, and notes."""

    sources: list[ImageSource]
    problems: list[tuple[str, str]]  # (input as given, one-line reason)
    notes: list[str]


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str, recursive: bool) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and is_image_name(f)]
        if not recursive:
            break
    return found


def _glob_root(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard."""
    parts = pattern.replace(os.sep, "/").split("/")
    fixed = []
    for p in parts[:-1]:
        if glob.has_magic(p):
            break
        fixed.append(p)
    return "/".join(fixed) if fixed and fixed != [""] else ("/" if pattern.startswith("/") else ".")


def _match_parts(pattern: list[str], parts: list[str]) -> bool:
    """``parts`` of a relative path match the ``pattern`` parts (``**``: any number of folders)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(pattern[1:], parts[1:])


def _recursive_glob(pattern: str) -> tuple[list[str], list[str]]:
    """``glob.glob(pattern, recursive=True)`` for a pattern with ``**``, following folder links once
    each: a folder reached again (a link loop, or two links to one folder) is not entered twice.
    Returns the matching paths and a note per link loop cut."""
    pattern = pattern.replace(os.sep, "/")
    root = _glob_root(pattern)
    rest = pattern if root == "." and not pattern.startswith("./") else pattern[len(root):]
    want = [p for p in rest.split("/") if p]
    found, notes, seen = [], [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            notes.append(f"{folder} leads back to {real}, already searched; not searched again (a folder link loop?)")
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        base = [] if rel == "." else rel.replace(os.sep, "/").split("/")
        found += [os.path.join(folder, f) for f in sorted(files)
                  if not f.startswith(".") and _match_parts(want, base + [f])]
    return found, notes


def _glob_key(path: str, root: str, common: str) -> str:
    """The key of a glob match: its path relative to the pattern's fixed folder, or (when the pattern's
    ``..`` climbs out of that folder) relative to the folder all the pattern's matches share."""
    key = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    if key == ".." or key.startswith(".." + os.sep) or os.path.isabs(key):
        key = os.path.relpath(os.path.normpath(path), common)
    return key


def find_images(inputs: list[str], *, recursive: bool = False) -> Discovery:
    """Expand files, folders and globs into images, in the order given (folders and globs sorted).

    Folders give the image files directly inside them (all levels with ``recursive``); globs give
    the image files they match (``**`` crosses folders with ``recursive``). Hidden files and folders
    are left out, and so are files without an image extension (:data:`IMAGE_EXTENSIONS`) unless
    named explicitly. A file listed more than once is processed once.
    """
    found: list[tuple[str, str]] = []  # (path, key)
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    for item in inputs:
        if os.path.isfile(item):
            found.append((item, os.path.basename(item)))
        elif os.path.isdir(item):
            files = _walk(item, recursive)
            if not files:
                deeper = not recursive and _walk(item, True)
                hint = f" ({len(deeper)} in subfolders: add --recursive)" if deeper else ""
                problems.append((item, f"{item}: folder has no images{hint}"))
            found += [(f, os.path.relpath(f, item)) for f in files]
        elif glob.has_magic(item):
            root = _glob_root(item)
            if recursive and "**" in item:
                matches, loops = _recursive_glob(item)
                notes += loops
            else:
                matches = glob.glob(item)
            files = sorted(f for f in matches if os.path.isfile(f) and is_image_name(f))
            if not files:
                problems.append((item, f"{item}: pattern matches no image files"))
                continue
            common = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
            found += [(f, _glob_key(f, root, common)) for f in files]
        elif os.path.exists(item):
            problems.append((item, f"{item}: not a regular file or folder (a pipe, socket or device); "
                                   "save it to a file first"))
        else:
            problems.append((item, f"{item}: no such file or folder"))
    sources, seen = [], {}
    for path, key in found:
        real = os.path.realpath(path)
        if real in seen:
            notes.append(f"{path} is listed more than once; processing it once")
            continue
        seen[real] = True
        sources.append(ImageSource(path, key.replace(os.sep, "/")))
    return Discovery(_unique_keys(sources), problems, notes)


def _unique_keys(sources: list[ImageSource]) -> list[ImageSource]:
    """Different files with the same key (``a/cat.jpg`` and ``b/cat.jpg`` given as files) get keys
    relative to the folder they share, so that the layout depends only on the paths."""
    by_key: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        by_key.setdefault(s.key, []).append(i)
    out = list(sources)
    for key, idx in by_key.items():
        if len(idx) < 2:
            continue
        paths = [os.path.abspath(sources[i].path) for i in idx]
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
        for i, p in zip(idx, paths):
            out[i] = ImageSource(sources[i].path, os.path.relpath(p, common).replace(os.sep, "/"))
    taken: set[str] = set()
    for i, s in enumerate(out):  # a re-keyed name can still meet another image's: number it
        key, n = s.key, 1
        while key in taken:
            n += 1
            key = f"{s.key}~{n}"
        taken.add(key)
        if key != s.key:
            out[i] = ImageSource(s.path, key)
    return out
