"""``gemseg segment``: a label map per image from a list of class names, with a background rule."""
from __future__ import annotations

import argparse
import os
import textwrap

from ..names import DEFAULT_REDUCTION, REDUCTIONS
from ..prompts import AUTO_BACKGROUND, DEFAULT_LOGIT_SCALE, DEFAULT_THRESHOLD, clean_prompts
from .common import add_model_args, add_refine_arg, refine_arg
from .options import add_image_args, fraction, model_settings, read_templates
from ..viz import fit, legend_entries, output_size
from .output import Fonts, Layout, grid_size, save_png
from .report import CLIError, Reporter
from .run import Item, Task, execute

MAX_CLASSES = 255  # label 0 is background; an indexed PNG holds 256 values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value

_AUTO_LIST = textwrap.fill(", ".join(AUTO_BACKGROUND), width=62, initial_indent=" " * 18,
                           subsequent_indent=" " * 18)

EXAMPLES = f"""\
examples:
  gemseg segment photo.jpg -c "cat,dog,sofa"
  gemseg segment photos/ -r -c "person,bicycle,car" --background "sky,road,building,tree" --grid
  gemseg segment photo.jpg -c "cat,sofa" --background none      # every pixel gets a class
  gemseg segment photo.jpg -c "cat" --prob-threshold 0.7        # stricter background

background rules (label 0 is background, classes are 1..C in the order given):
  auto (default)  these prompts compete as background (minus any class you name):
{_AUTO_LIST}
                  and a pixel whose top class probability is below --prob-threshold
                  (default {DEFAULT_THRESHOLD:g}) becomes background too
  "a,b,c"         your own background prompts instead, with the same threshold
  none            no background prompts and no threshold: every pixel gets a class
                  (unless you pass --prob-threshold)

probabilities: softmax(logit_scale * cosine) over all prompts (classes and background
prompts), then each class takes the max over its prompts (the order of the official
SCLIP/ClearCLIP/NACLIP code); --reduction max_then_softmax takes the max of cosines
per class first, then the softmax over classes (gemseg segment's order
before --reduction existed)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment", help="a label map per image from class names",
        description="Label every pixel with one of the given classes or background. Writes an indexed "
                    "PNG label map, an overlay with a legend and a JSON record per image. Layout of DIR "
                    "and the JSON schema: docs/cli.md.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--classes", action="append", default=[], metavar="A,B,C",
                   help="class names, comma-separated; repeat to add more")
    p.add_argument("--classes-file", metavar="FILE", help="class names, one per line (# starts a comment)")
    b = p.add_argument_group("background")
    b.add_argument("--background", default="auto", metavar="auto|none|A,B,C",
                   help="background rule (default: auto); see below")
    b.add_argument("--prob-threshold", "--threshold", dest="threshold", type=fraction, default=None, metavar="P",
                   help=f"pixels whose top class probability is below P become background (default: "
                        f"{DEFAULT_THRESHOLD:g} with auto or a prompt list, off with none; 0 turns it off)")
    b.add_argument("--logit-scale", type=_positive_float, default=DEFAULT_LOGIT_SCALE, metavar="S",
                   help="probabilities are softmax(S * cosine similarity) (default: %(default)g)")
    b.add_argument("--reduction", choices=REDUCTIONS, default=DEFAULT_REDUCTION,
                   help="prompts -> class probabilities (default: %(default)s); see below")
    add_refine_arg(b)
    e = p.add_argument_group("exports for labeling tools (docs/cli.md#exports)")
    e.add_argument("--export", default=None, metavar="FORMATS",
                   help="also write DIR/export/: coco (COCO JSON, RLE masks per class), cvat (Segmentation "
                        "mask 1.1), masks (indexed PNGs + classes.json, FiftyOne), labelstudio (tasks.json with "
                        "brush masks + labelstudio-config.xml); comma-separated")
    add_image_args(p)
    add_model_args(p)
    p.set_defaults(func=main)


def read_classes(args: argparse.Namespace) -> list[str]:
    names = [c for group in args.classes for c in group.split(",")]
    if args.classes_file:
        try:
            with open(args.classes_file, encoding="utf-8") as f:
                names += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            raise CLIError(f"cannot read classes file {args.classes_file}: {e}") from e
    if not names:
        raise CLIError("no classes given: use -c 'cat,dog' or --classes-file FILE")
    classes = clean_prompts(names, "class")
    if len(classes) > MAX_CLASSES:
        raise CLIError(f"{len(classes)} classes given; at most {MAX_CLASSES} fit in an indexed PNG label map")
    return classes


def make_task(args: argparse.Namespace, report: Reporter) -> Task:
    from .. import viz
    from ..prompts import background_rule

    classes = read_classes(args)
    exports = _export_formats(args.export)
    bg = background_rule(args.background, classes, threshold=args.threshold, logit_scale=args.logit_scale)
    templates = read_templates(args)
    names = ["background"] + classes
    colors = viz.palette(len(names))
    fonts = Fonts(args.font)
    settings = {**model_settings(args, templates), "classes": classes, "background": bg.to_dict(),
                "reduction": args.reduction, "cmap": args.cmap, **({"refine": args.refine} if args.refine else {})}
    state: dict = {}

    def setup(model) -> None:
        from ..segmenter import Segmenter  # torch: imported once the model is built

        state["random"] = model.backbone.pretrained is None
        state["seg"] = Segmenter.from_classes(model, classes, background=bg, templates=templates, size=args.size,
                                              reduction=args.reduction, refine=refine_arg(args))  # text encoded once

    def infer(items: list[Item]) -> list:
        """Per image: (query maps [Q, h, w] at the model input size, network input [3, h, w], mask label map
        [h, w] or None), on the CPU; masks are made once per image (mask files found by its path)."""
        seg = state["seg"]
        images = [it.loaded.image for it in items]
        x = seg.prepare(images)
        masks = seg.masks(images, x, [it.source.path for it in items])
        per = [None] * len(items) if masks is None else list(masks.cpu())
        return list(zip(seg.query_maps(x, masks=masks).cpu(), x.cpu(), per))

    def segment(result, size: tuple[int, int]):
        """(query maps, network input, masks) of one image -> its Segmentation at ``size`` = (width, height)."""
        seg, (maps, x, masks) = state["seg"], result
        return seg.segmentation(seg.at_size(maps[None], x[None], (size[1], size[0]),
                                            masks=None if masks is None else masks[None]))

    def write(item: Item, sims) -> dict:
        size = output_size(*item.loaded.image.size, args.max_side)
        image = fit(item.loaded.image, size)
        seg = segment(sims, size)
        stats = [{**s, "color": [int(c) for c in colors[s["index"]]]} for s in seg.stats(0)]
        labels_np = seg.labels[0].numpy().astype("uint8")
        folder = item.folder
        viz.label_image(labels_np, colors).save(os.path.join(folder, "labels.png"))
        font = fonts.for_size(*size)
        fig = viz.segmentation_figure(image, labels_np, colors, legend_entries(stats), alpha=args.opacity, font=font)
        save_png(fig, os.path.join(folder, "overlay.png"), random_weights=state["random"], font=font)
        files = {"labels": "labels.png", "overlay": "overlay.png"}
        if args.grid:
            gsize = grid_size(size)
            gfont = fonts.for_size(*gsize)
            g = grid_picture(fit(image, gsize), segment(sims, gsize), colors, legend_entries(stats), args, gfont)
            save_png(g, os.path.join(folder, "grid.png"), random_weights=state["random"], font=gfont)
            files["grid"] = "grid.png"
        if args.save_raw:
            files["scores"] = save_scores(folder, seg)
        found = sorted((s for s in stats[1:] if s["pixels"]), key=lambda s: -s["pixels"])
        return {"output_width": size[0], "output_height": size[1], "classes": stats,
                "found": [s["name"] for s in found], "background": bg.to_dict(), "reduction": args.reduction,
                "templates": templates, "files": files, **({"refine": args.refine} if args.refine else {})}

    def finish(layout: Layout) -> None:
        run_files(layout, names, colors, font=args.font, exports=exports, report=report)

    return Task("segment", settings, setup, infer, write, finish)


def run_files(layout: Layout, names: list[str], colors, *, font: str | None, exports: tuple[str, ...],
              report: Reporter) -> None:
    """The run-level files: ``legend.png`` of every label, and the ``--export`` formats."""
    from .. import viz

    entries = [(f"{k}  {n}", c) for k, (n, c) in enumerate(zip(names, colors))]
    viz.legend(entries, font=viz.get_font(16, font)).save(os.path.join(layout.root, "legend.png"))
    if exports:
        from .export import export_run

        for path in export_run(layout, exports, names[1:], colors):
            report.info(f"export: {path}")


def _export_formats(text: str | None) -> tuple[str, ...]:
    """--export's formats, checked (and pycocotools' presence for coco) before the model is built."""
    if not text:
        return ()
    from ..export import coco_rle, parse_formats

    formats = parse_formats(text)
    if "coco" in formats:
        import numpy as np

        coco_rle(np.zeros((1, 1), dtype=bool))  # ImportError with the pip command when it is missing
    return formats


def save_scores(folder: str, seg) -> str:
    """``scores.npy``: the class scores [1 + C, H, W] float32 of the image; returns the file name."""
    import numpy as np

    np.save(os.path.join(folder, "scores.npy"), seg.scores[0].numpy().astype(np.float32))
    return "scores.npy"


def grid_picture(image, seg, colors, legend: list, args: argparse.Namespace, font):
    """The grid of one image at its grid size: the image, each class's score map, the segmentation."""
    import numpy as np

    from .. import viz

    scores = seg.scores[0]  # (1 + C, H, W)
    labels = seg.labels[0].numpy().astype(np.uint8)
    panels = [("image", image)]
    panels += [(name, viz.heatmap_figure(image, scores[k].numpy(), cmap=args.cmap, alpha=args.opacity, font=font))
               for k, name in enumerate(seg.names) if k > 0]
    panels.append(("segmentation", viz.segmentation_figure(image, labels, colors, legend, alpha=args.opacity,
                                                           font=font)))
    return viz.grid(panels, height=image.size[1], font=font)


def main(args: argparse.Namespace) -> int:
    return execute(args, make_task)
