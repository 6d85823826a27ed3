"""``gemseg segment``: a label map per image from a list of class names, with a background rule."""
from __future__ import annotations

import argparse
import os
import textwrap
from dataclasses import dataclass

from .common import add_model_args
from .options import add_image_args, clean_prompts, fraction, model_settings, read_templates
from .output import Fonts, Layout, fit, grid_size, output_size, save_png
from .report import CLIError, Reporter
from .run import Item, Task, execute, resize_maps, similarity_maps

# Generic scene "stuff" that competes with the classes as background under --background auto; a class
# the user names is taken out of it. Chosen by hand, not tuned on any benchmark.
AUTO_BACKGROUND = ("sky", "wall", "floor", "ceiling", "ground", "road", "grass", "tree", "building", "water")
DEFAULT_THRESHOLD = 0.5  # a pixel keeps its class only if the class holds at least half the probability
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained logit scale: softmax(100 * cosine)
MAX_CLASSES = 255  # label 0 is background; an indexed PNG holds 256 values

_AUTO_LIST = textwrap.fill(", ".join(AUTO_BACKGROUND), width=62, initial_indent=" " * 18,
                           subsequent_indent=" " * 18)

EXAMPLES = f"""\
examples:
  gemseg segment photo.jpg -c "cat,dog,sofa"
  gemseg segment photos/ -r -c "person,bicycle,car" --background "sky,road,building,tree" --grid
  gemseg segment photo.jpg -c "cat,sofa" --background none      # every pixel gets a class
  gemseg segment photo.jpg -c "cat" --threshold 0.7             # stricter background

background rules (label 0 is background, classes are 1..C in the order given):
  auto (default)  these prompts compete as background (minus any class you name):
{_AUTO_LIST}
                  and a pixel whose top probability, softmax(logit_scale * cosine), is
                  below --threshold (default {DEFAULT_THRESHOLD:g}) becomes background too
  "a,b,c"         your own background prompts instead, with the same threshold
  none            no background prompts and no threshold: every pixel gets a class
                  (unless you pass --threshold)
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
    b.add_argument("--threshold", type=fraction, default=None, metavar="P",
                   help=f"pixels whose top class probability is below P become background (default: "
                        f"{DEFAULT_THRESHOLD:g} with auto or a prompt list, off with none; 0 turns it off)")
    b.add_argument("--logit-scale", type=float, default=DEFAULT_LOGIT_SCALE, metavar="S",
                   help="probabilities are softmax(S * cosine similarity) (default: %(default)g)")
    add_image_args(p)
    add_model_args(p)
    p.set_defaults(func=main)


@dataclass(frozen=True)
class Background:
    """How pixels become background (label 0)."""

    rule: str  # "auto", "prompts" or "none"
    prompts: tuple[str, ...]  # background queries, all mapped to label 0
    threshold: float | None  # probability threshold, None: off
    logit_scale: float

    def to_dict(self) -> dict:
        return {"rule": self.rule, "prompts": list(self.prompts), "threshold": self.threshold,
                "logit_scale": self.logit_scale}


def read_classes(args: argparse.Namespace, report: Reporter) -> list[str]:
    names = [c for group in args.classes for c in group.split(",")]
    if args.classes_file:
        try:
            with open(args.classes_file, encoding="utf-8") as f:
                names += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            raise CLIError(f"cannot read classes file {args.classes_file}: {e}") from e
    if not names:
        raise CLIError("no classes given: use -c 'cat,dog' or --classes-file FILE")
    classes = clean_prompts(names, "class", report)
    if len(classes) > MAX_CLASSES:
        raise CLIError(f"{len(classes)} classes given; at most {MAX_CLASSES} fit in an indexed PNG label map")
    return classes


def background_rule(spec: str, threshold: float | None, logit_scale: float, classes: list[str],
                    report: Reporter) -> Background:
    """Resolve --background/--threshold into a :class:`Background`."""
    if not logit_scale > 0:
        raise CLIError(f"--logit-scale must be > 0, got {logit_scale:g}")
    taken = {c.lower() for c in classes}
    key = spec.strip().lower()
    if key == "none":
        return Background("none", (), threshold or None, logit_scale)
    thr = DEFAULT_THRESHOLD if threshold is None else (threshold or None)
    if key == "auto":
        return Background("auto", tuple(p for p in AUTO_BACKGROUND if p not in taken), thr, logit_scale)
    prompts = clean_prompts(spec.split(","), "background prompt", report)
    clash = [p for p in prompts if p.lower() in taken]
    if clash:
        report.warn(f"background prompt(s) {', '.join(clash)} are also classes; they stay classes")
        prompts = [p for p in prompts if p.lower() not in taken]
    if not prompts:
        raise CLIError("no background prompts left; use --background none for no background")
    return Background("prompts", tuple(prompts), thr, logit_scale)


def class_scores(sims, num_classes: int, bg: Background):
    """Queries' similarities [C + len(bg.prompts), h, w] (classes first) -> class scores [C + 1, h, w]:
    row 0 is the best background prompt (NaN without background prompts), row k the k-th class."""
    import torch

    from ..postprocess import reduce_queries

    C = num_classes
    if bg.prompts:
        q2c = list(range(1, C + 1)) + [0] * len(bg.prompts)
        return reduce_queries(sims[None], q2c, C + 1)[0]  # (C+1, h, w)
    return torch.cat([torch.full_like(sims[:1], float("nan")), sims[:C]])


def label_map(scores, bg: Background):
    """Class scores [C + 1, H, W] -> (labels [H, W] long, 0 = background; probability of each pixel's
    label [H, W], NaN where the threshold made a pixel background without background prompts)."""
    import torch

    from ..postprocess import predict_labels

    if bg.prompts:
        labels, _ = predict_labels(scores[None], logit_scale=bg.logit_scale, prob_threshold=bg.threshold,
                                   background_index=0)
        labels = labels[0]
        logits = bg.logit_scale * scores
        return labels, torch.exp(logits.gather(0, labels[None])[0] - torch.logsumexp(logits, dim=0))
    labels, _ = predict_labels(scores[None, 1:], logit_scale=bg.logit_scale, prob_threshold=bg.threshold,
                               background_index=-1)
    labels = labels[0] + 1  # (H, W), thresholded pixels -1 -> 0
    logits = bg.logit_scale * scores[1:]
    picked = logits.gather(0, (labels - 1).clamp_min(0)[None])[0]
    prob = torch.where(labels > 0, torch.exp(picked - torch.logsumexp(logits, dim=0)),
                       torch.full_like(picked, float("nan")))
    return labels, prob


def class_stats(labels, scores, prob, names: list[str], colors) -> list[dict]:
    """Per label: pixels, fraction, mean score and mean probability over its pixels."""
    total = labels.numel()
    out = []
    for k, name in enumerate(names):
        mask = labels == k
        n = int(mask.sum())
        mean_score = float(scores[k][mask].mean()) if n else None
        mean_prob = float(prob[mask].mean()) if n else None
        out.append({"index": k, "name": name, "color": [int(c) for c in colors[k]], "pixels": n,
                    "fraction": round(n / total, 6),
                    "mean_score": None if mean_score is None or mean_score != mean_score else round(mean_score, 6),
                    "mean_probability": None if mean_prob is None or mean_prob != mean_prob else round(mean_prob, 6)})
    return out


def make_task(args: argparse.Namespace, report: Reporter) -> Task:
    from .. import viz

    classes = read_classes(args, report)
    bg = background_rule(args.background, args.threshold, args.logit_scale, classes, report)
    templates = read_templates(args)
    names = ["background"] + classes
    colors = viz.palette(len(names))
    fonts = Fonts(args.font)
    settings = {**model_settings(args, templates), "classes": classes, "background": bg.to_dict(),
                "cmap": args.cmap}
    state: dict = {}

    def setup(model) -> None:
        state["model"] = model
        state["random"] = model.backbone.pretrained is None
        state["text"] = model.encode_text(classes + list(bg.prompts), templates=templates)  # once per run

    def infer(items: list[Item]) -> list:
        return similarity_maps(state["model"], items, state["text"], args.size)

    def write(item: Item, sims) -> dict:
        import numpy as np

        size = output_size(*item.loaded.image.size, args.max_side)
        image = fit(item.loaded.image, size)
        small = class_scores(sims, len(classes), bg)  # (C+1, h, w) at the model's size
        scores = resize_maps(small, size)  # (C+1, H, W)
        labels, prob = label_map(scores, bg)
        stats = class_stats(labels, scores, prob, names, colors)
        labels_np = labels.numpy().astype(np.uint8)
        folder = item.folder
        viz.label_image(labels_np, colors).save(os.path.join(folder, "labels.png"))
        font = fonts.for_size(*size)
        fig = viz.segmentation_figure(image, labels_np, colors, legend_entries(stats), alpha=args.opacity, font=font)
        save_png(fig, os.path.join(folder, "overlay.png"), random_weights=state["random"], font=font)
        files = {"labels": "labels.png", "overlay": "overlay.png"}
        if args.grid:
            gsize = grid_size(size)
            gfont = fonts.for_size(*gsize)
            gimage = fit(image, gsize)
            gscores = resize_maps(small, gsize)
            glabels, _ = label_map(gscores, bg)
            glabels = glabels.numpy().astype(np.uint8)
            panels = [("image", gimage)]
            panels += [(name, viz.heatmap_figure(gimage, gscores[k].numpy(), cmap=args.cmap, alpha=args.opacity,
                                                 font=gfont)) for k, name in enumerate(names) if k > 0]
            panels.append(("segmentation", viz.segmentation_figure(gimage, glabels, colors, legend_entries(stats),
                                                                   alpha=args.opacity, font=gfont)))
            g = viz.grid(panels, height=gsize[1], font=gfont)
            save_png(g, os.path.join(folder, "grid.png"), random_weights=state["random"], font=gfont)
            files["grid"] = "grid.png"
        if args.save_raw:
            np.save(os.path.join(folder, "scores.npy"), scores.numpy().astype(np.float32))
            files["scores"] = "scores.npy"
        found = sorted((s for s in stats[1:] if s["pixels"]), key=lambda s: -s["pixels"])
        return {"output_width": size[0], "output_height": size[1], "classes": stats,
                "found": [s["name"] for s in found], "background": bg.to_dict(), "templates": templates,
                "files": files}

    def finish(layout: Layout) -> None:
        entries = [(f"{k}  {n}", c) for k, (n, c) in enumerate(zip(names, colors))]
        viz.legend(entries, font=viz.get_font(16, args.font)).save(os.path.join(layout.root, "legend.png"))

    return Task("segment", settings, setup, infer, write, finish)


def legend_entries(stats: list[dict]) -> list[tuple[str, list[int]]]:
    """Legend rows for the labels present: background first, then classes by area."""
    present = [s for s in stats if s["pixels"]]
    present.sort(key=lambda s: (s["index"] != 0, -s["pixels"]))
    def percent(f: float) -> str:
        return "<0.1%" if f < 0.001 else f"{100 * f:.1f}%"

    return [(("background (uncoloured)" if s["index"] == 0 else s["name"]) + "  " + percent(s["fraction"]),
             s["color"]) for s in present]


def main(args: argparse.Namespace) -> int:
    return execute(args, make_task)
