"""Options the image commands share, and reading prompts and templates from them."""
from __future__ import annotations

import argparse
import os

from ..io import DEFAULT_MAX_PIXELS
from ..templates import check_template
from ..viz import COLORMAPS
from .common import needs_proxy
from .report import CLIError


def size_arg(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive integers, got {text!r}")
    return parts[0], parts[1]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def megapixels(text: str) -> int | None:
    if text.lower() in ("none", "0", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected megapixels > 0 or 'none', got {text!r}")
    return int(value * 1e6)


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """IMAGES, -o and the options of every command that reads images and writes pictures."""
    parser.add_argument("images", nargs="+", metavar="IMAGES",
                        help="image files, folders or glob patterns (quote globs: 'photos/*.jpg')")
    g = parser.add_argument_group("input and output")
    g.add_argument("-o", "--out", "--output", dest="output", default="gemseg-out", metavar="DIR",
                   help="output folder (default: %(default)s); see docs/cli.md for its layout")
    g.add_argument("-r", "--recursive", action="store_true",
                   help="look into subfolders of folder inputs; lets '**' in globs cross folders")
    g.add_argument("--overwrite", "--restart", dest="overwrite", action="store_true",
                   help="redo images that already have results in DIR (default: skip them), and allow "
                        "DIR to hold results of different settings")
    g.add_argument("-q", "--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bar and no summary; warnings and errors are still printed")
    g.add_argument("--size", type=size_arg, default=(448, 448), metavar="N|HxW",
                   help="model input size: each image is resized to it, aspect not kept (default: 448)")
    g.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per forward pass (default: 1)")
    g.add_argument("--max-pixels", type=megapixels, default=DEFAULT_MAX_PIXELS, metavar="MP",
                   help=f"refuse images over this many megapixels, read from the header before decoding "
                        f"(default: {DEFAULT_MAX_PIXELS / 1e6:g}; 'none' disables the guard)")
    g.add_argument("--max-side", type=int, default=2048, metavar="PX",
                   help="outputs are at the image's own size, scaled down so that the long side is at "
                        "most PX (default: %(default)s; 0: never scale)")
    g.add_argument("--transparency", choices=("white", "black", "drop"), default="white",
                   help="transparent pixels are composited on white or black, or the alpha channel is "
                        "dropped (default: %(default)s)")
    t = parser.add_argument_group("prompt templates")
    t.add_argument("--template", action="append", default=None, metavar="TEXT",
                   help="prompt template with {} where the prompt goes; repeat to average several "
                        "(default: 'a photo of a {}.')")
    t.add_argument("--templates", metavar="NAME|FILE",
                   help="a built-in template set (single, imagenet80: the 80 CLIP ImageNet templates) or a "
                        "file of templates, one per line (blank lines and lines starting with # are skipped)")
    v = parser.add_argument_group("pictures")
    v.add_argument("--grid", action="store_true",
                   help="also write grid.png: the image, each map and the result side by side")
    v.add_argument("--save-raw", action="store_true", help="also write the raw scores as .npy (float32)")
    v.add_argument("--opacity", type=fraction, default=0.5, metavar="A",
                   help="opacity of colours over the image (default: %(default)s)")
    v.add_argument("--cmap", choices=tuple(COLORMAPS), default="jet",
                   help="colour map of heatmaps and score maps (default: %(default)s)")
    v.add_argument("--font", metavar="TTF",
                   help="font for text in pictures (default: DejaVu Sans where installed, else PIL's built-in "
                        "font; text it cannot draw, such as CJK, uses an installed Noto Sans CJK or similar, "
                        "else a warning says so)")


def read_templates(args: argparse.Namespace) -> list[str] | None:
    """Templates from --template and --templates, or None for the library default."""
    templates = list(args.template or [])
    if args.templates and not os.path.exists(args.templates):  # a name: the sets `gemseg eval` uses
        from ..eval.datasets import list_templates, read_templates as builtin

        if args.templates not in list_templates():
            raise CLIError(f"--templates {args.templates}: no such file, nor a built-in set "
                           f"({', '.join(list_templates())})")
        return templates + builtin(args.templates)
    if args.templates:
        try:
            with open(args.templates, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as e:
            raise CLIError(f"cannot read templates file {args.templates}: {e}") from e
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            raise CLIError(f"templates file {args.templates} holds no templates")
        templates += from_file
    for t in templates:
        check_template(t, args.templates if t not in (args.template or []) else "--template")
    return templates or None


def check_weights_args(args: argparse.Namespace) -> None:
    """Refuse weight options that contradict each other, before anything slow happens."""
    if args.random_weights and (args.pretrained or args.checkpoint):
        raise CLIError("--random-weights contradicts --pretrained/--checkpoint; give one or the other")
    if args.model.endswith(".json") and not args.checkpoint and not args.random_weights:
        raise CLIError(f"{args.model} is a model config without weights: add --checkpoint PATH "
                       "(or --random-weights for a demo)")


def model_settings(args: argparse.Namespace, templates: list[str] | None) -> dict:
    """The options that change a command's results (for run.json and the resume check)."""
    return {"model": args.model, "pretrained": args.pretrained,
            "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
            "random_weights": bool(args.random_weights), "backend": args.backend, "precision": args.precision,
            "size": list(args.size), "depth": args.depth, "iterations": args.iterations,
            "temperature": args.temperature, "projections": args.projections, "l2_normalize": not args.no_l2,
            "gem_mlp": args.gem_mlp, "method": getattr(args, "method", "gem"), "templates": templates,
            "transparency": args.transparency, "max_side": args.max_side, "opacity": args.opacity,
            "grid": args.grid, "save_raw": args.save_raw, "font": args.font,
            **({"proxy": args.proxy, "proxy_weights": "random" if args.random_weights else args.proxy_weights}
               if needs_proxy(getattr(args, "method", "gem")) else {}),
            **({"method_setting": list(args.method_setting)} if getattr(args, "method_setting", None) else {}),
            **({"masks": args.masks} if getattr(args, "masks", None) else {}),
            **({"mask_setting": list(args.mask_setting)} if getattr(args, "mask_setting", None) else {})}
