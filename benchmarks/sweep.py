"""Cost of a one-pass post-processing sweep against one plain ``gemseg eval`` run on the same images.

    PYTHONPATH=src .venv/bin/python benchmarks/sweep.py [--images 8] [--rounds 3] [--device cpu] [--json out.json]

What is measured: a ViT-B/16 open_clip model with random weights (``create_model("ViT-B-16",
pretrained=None)``; the numbers do not depend on the weights) under the ``gem`` protocol (whole image
resized to 448x448, one template, the 21 VOC classes), on synthetic VOC-layout images of VOC's usual
size (500x375, label maps with blocks of 5 classes and 255 borders) written to a temporary folder.

- ``eval``: :func:`gemseg.eval.evaluate` with ``prob_threshold=0.5`` (one setting);
- ``sweep20``: :func:`gemseg.eval.sweep.run_sweep` with ``prob_threshold=0:0.95:0.05`` (20 values);
- ``grid120``: ``prob_threshold=0:0.95:0.05 logit_scale=40,50,65 area_threshold=none,0.1`` (120).

Each is a fresh run (new output folder, state and reports written as in real runs), timed end to end
from the call to its return, with the model and text embeddings built once beforehand. Every round runs
the three once, the order rotated from round to round, so that load from other programs falls on all
alike; the first round is a warm-up. Reported: median seconds per run and the ratio to ``eval``
(target for ``sweep20``: <= 1.3).

Then the post-processing alone, which is all a sweep adds: each run's per-image counting on the query
scores of one image computed once beforehand (the segmenter's model pass replaced by those scores),
median over rounds. This part does not depend on the load of the machine the way the forward pass does.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

TARGET = 1.3
RUNS = {"eval": None, "sweep20": ["prob_threshold=0:0.95:0.05"],
        "grid120": ["prob_threshold=0:0.95:0.05", "logit_scale=40,50,65", "area_threshold=none,0.1"]}


def write_images(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` VOC-layout images (500x375 JPEG, palette-free label PNGs with 255 borders) under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    ids = [f"2007_{i:06d}" for i in range(n)]
    h, w = 375, 500
    for image_id in ids:
        coarse = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC)).astype(np.int16)
        image = np.clip(image + rng.integers(-30, 30, size=image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        label = np.zeros((h, w), dtype=np.uint8)
        for _ in range(5):
            y, x = rng.integers(0, h - 60), rng.integers(0, w - 60)
            label[y: y + rng.integers(40, 200), x: x + rng.integers(40, 250)] = rng.integers(1, 21)
        edge = np.zeros_like(label, dtype=bool)  # VOC-style 255 borders between regions
        edge[:-1] |= label[:-1] != label[1:]
        edge[:, :-1] |= label[:, :-1] != label[:, 1:]
        label[edge] = 255
        Image.fromarray(label).save(root / "SegmentationClass" / f"{image_id}.png")
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True)
    (split / "val.txt").write_text("\n".join(ids) + "\n")
    return root


def post_processing(model, spec, protocol, root: Path, text_cache: dict, rounds: int) -> dict[str, float]:
    """Median seconds per image of each run's counting on fixed query scores (no model pass)."""
    from gemseg.eval import open_dataset
    from gemseg.eval.counting import DenseCounter
    from gemseg.eval.sweep import SweepCounter, combinations, parse_sweep

    dataset = open_dataset(spec, root)
    image_id = dataset.ids[0]
    image, target = dataset.load(image_id)
    counters = {name: DenseCounter(model, spec, protocol, text_cache=text_cache) if grid is None else
                SweepCounter(model, spec, protocol, combinations(parse_sweep(grid)), text_cache=text_cache)
                for name, grid in RUNS.items()}
    scores = counters["eval"].seg.scores(image, out_size=target.shape)
    for counter in counters.values():
        counter.seg.scores = lambda *_, **__: scores  # our own object: the model pass is left out
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    for r in range(rounds + 1):
        for name, counter in counters.items():
            start = time.perf_counter()
            counter.count(image_id, image, target)
            if r > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="synthetic images per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    import torch

    from gemseg import create_model
    from gemseg.eval import evaluate, load_dataset_spec, resolve_protocol
    from gemseg.eval.sweep import combinations, parse_sweep, run_sweep

    warnings.simplefilter("ignore")  # random weights, the synthetic split's size
    torch.manual_seed(0)
    model = create_model("ViT-B-16", pretrained=None, device=args.device)
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("gem", spec, prob_threshold=0.5)
    text_cache: dict = {}
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_images(Path(tmp) / "VOC2012", args.images)
        names = list(RUNS)
        for r in range(args.rounds + 1):
            for name in names[r % 3:] + names[:r % 3]:
                grid = RUNS[name]
                out = Path(tmp) / f"{name}-{r}"
                start = time.perf_counter()
                if grid is None:
                    evaluate(model, spec, root, protocol, out_dir=out, progress=False, text_cache=text_cache)
                else:
                    run_sweep(model, spec, root, protocol, parse_sweep(grid), out_dir=out, progress=False,
                              text_cache=text_cache)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if r > 0:
                    times[name].append(time.perf_counter() - start)
            print(f"round {r}{' (warm-up)' if r == 0 else ''} done", file=sys.stderr, flush=True)
        post = post_processing(model, spec, protocol, root, text_cache, args.rounds)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"model": "ViT-B-16 (random weights)", "device": args.device, "threads": torch.get_num_threads(),
              "images": args.images, "rounds": args.rounds, "seconds": median,
              "ratio": {name: median[name] / median["eval"] for name in RUNS}, "target_sweep20": TARGET}
    print(f"ViT-B/16 (random weights), gem protocol (448x448 whole image), {args.images} images of 500x375, "
          f"{args.device}, {result['threads']} threads, median of {args.rounds} rounds")
    print("| run | combinations | s / run | s / image | vs eval |")
    print("|---|---|---|---|---|")
    for name, grid in RUNS.items():
        k = 1 if grid is None else len(combinations(parse_sweep(grid)))
        print(f"| {name} | {k} | {median[name]:.2f} | {median[name] / args.images:.3f} | "
              f"{result['ratio'][name]:.3f}x |")
    result["post_processing_s_per_image"] = post
    print("post-processing alone (s / image): " + ", ".join(f"{k} {v:.3f}" for k, v in post.items()))
    ok = result["ratio"]["sweep20"] <= TARGET
    print(f"sweep20 / eval = {result['ratio']['sweep20']:.3f} (target <= {TARGET}): {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
