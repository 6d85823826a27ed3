"""``gemseg heatmap``: one heatmap per prompt per image."""
from __future__ import annotations

import argparse
import os
import re
import unicodedata

from .common import add_model_args
from ..prompts import clean_prompts
from .options import add_image_args, model_settings, read_templates
from ..viz import fit, output_size
from .output import Fonts, grid_size, save_png
from .report import Reporter
from .run import Item, Task, execute, similarity_maps

EXAMPLES = """\
examples:
  gemseg heatmap photo.jpg -p cat -p "remote control"
  gemseg heatmap photos/ -r -p cat --grid --save-raw -o heatmaps
  gemseg heatmap 'shots/*.png' -p "a red car" --model ViT-L-14 --pretrained laion2b_s32b_b82k
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "heatmap", help="one heatmap per prompt per image",
        description="Write one heatmap per prompt per image: the image with the prompt's similarity "
                    "map in colour and a colour bar in cosine similarity. Layout of DIR: docs/cli.md.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--prompt", action="append", dest="prompts", required=True, metavar="TEXT",
                   help="a text prompt; repeat for several (-p cat -p 'remote control')")
    add_image_args(p)
    add_model_args(p)
    p.set_defaults(func=main)


def slug(text: str, max_len: int = 40) -> str:
    """ASCII file-name part for ``text``: 'Remote Control!' -> 'remote-control'; '' when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_len].strip("-")


def heatmap_names(prompts: list[str]) -> list[str]:
    """File stems ``heatmap-01-cat``, numbered in prompt order (numbers keep them unique)."""
    width = max(2, len(str(len(prompts))))
    return [f"heatmap-{i:0{width}d}" + (f"-{s}" if (s := slug(p)) else "") for i, p in enumerate(prompts, 1)]


def make_task(args: argparse.Namespace, report: Reporter) -> Task:
    prompts = clean_prompts(args.prompts, "prompt")  # a duplicate warns through the report
    templates = read_templates(args)
    names = heatmap_names(prompts)
    fonts = Fonts(args.font)
    settings = {**model_settings(args, templates), "prompts": prompts, "cmap": args.cmap}
    state: dict = {}

    def setup(model) -> None:
        state["model"] = model
        state["random"] = model.backbone.pretrained is None
        state["text"] = model.encode_text(prompts, templates=templates)  # (P, D), once per run

    def infer(items: list[Item]) -> list:
        return similarity_maps(state["model"], items, state["text"], args.size)

    def write(item: Item, sims) -> dict:
        import numpy as np

        from .. import viz
        from ..segment import resize_maps  # torch, as the maps are

        size = output_size(*item.loaded.image.size, args.max_side)
        image = fit(item.loaded.image, size)
        maps = resize_maps(sims, size[::-1]).numpy()  # (P, H, W); size is (width, height)
        font = fonts.for_size(*size)
        entries = []
        for i, (prompt, name, scores) in enumerate(zip(prompts, names, maps), 1):
            fig = viz.heatmap_figure(image, scores, title=prompt, cmap=args.cmap, alpha=args.opacity, font=font)
            save_png(fig, os.path.join(item.folder, name + ".png"), random_weights=state["random"], font=font)
            files = {"heatmap": name + ".png"}
            if args.save_raw:
                np.save(os.path.join(item.folder, name + ".npy"), scores.astype(np.float32))
                files["raw"] = name + ".npy"
            entries.append({"index": i, "prompt": prompt, "min": float(scores.min()),
                            "max": float(scores.max()), "mean": float(scores.mean()), "files": files})
        files = {}
        if args.grid:
            gsize = grid_size(size)
            gimage, gmaps, gfont = fit(image, gsize), resize_maps(sims, gsize[::-1]).numpy(), fonts.for_size(*gsize)
            panels = [("image", gimage)] + [
                (prompt, viz.heatmap_figure(gimage, m, cmap=args.cmap, alpha=args.opacity, font=gfont))
                for prompt, m in zip(prompts, gmaps)]
            g = viz.grid(panels, height=gsize[1], font=gfont)
            save_png(g, os.path.join(item.folder, "grid.png"), random_weights=state["random"], font=gfont)
            files["grid"] = "grid.png"
        return {"output_width": size[0], "output_height": size[1], "prompts": entries,
                "templates": templates, "files": files}

    return Task("heatmap", settings, setup, infer, write)


def main(args: argparse.Namespace) -> int:
    return execute(args, make_task)

