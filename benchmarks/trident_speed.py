"""Speed and peak memory of ``method="trident"`` (CLIP ViT-B/16 + DINO ViT-B/16 + SAM ViT-B) against
``method="gem"`` (CLIP ViT-B/16, depth 7) at 448x448, with seeded random weights (no download; the cost does
not depend on the weights' values).

    .venv/bin/python benchmarks/trident_speed.py [--rounds 3] [--json out.json]

What is measured (fp32, ``torch.no_grad``, batch 1):

- images/s of ``GEMModel.heatmaps`` with 3 precomputed text embeddings (the image side only); every round
  times each call once, alternating, so that load from other programs falls on all alike; the first round
  is a warm-up and the figure is the median over the others. SAM's image encoder alone (1024x1024, the
  last block's attention kept) is timed too: it is most of Trident's cost.
- the extra peak memory of one heatmap call, in a fresh process per method, as benchmarks/proxyclip_speed.py
  measures it (resident-set high-water mark reset after a warm-up; ``MALLOC_MMAP_THRESHOLD_=65536``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import SEED, extra_peak_mib, make_images, random_open_clip, stage_env  # noqa: E402

SIZE = 448
METHODS = ("gem", "trident")


def build(method: str):
    """A GEMModel on random ViT-B/16 weights; trident with a random DINO ViT-B/16 and a random SAM ViT-B."""
    import open_clip
    import torch

    from gemseg import GEMModel
    from gemseg.backbones.open_clip import OpenCLIPBackbone
    from gemseg.backbones.sam import create_sam
    from gemseg.backbones.vfm import create_vfm
    from gemseg.methods.trident import TridentProxy

    backbone = OpenCLIPBackbone(random_open_clip(SEED), open_clip.get_tokenizer("ViT-B-16"), name="ViT-B-16",
                                pretrained="random")
    proxy = None
    if method == "trident":
        torch.manual_seed(SEED + 1)
        proxy = TridentProxy(create_vfm("dino-b16", weights="random"), create_sam("sam-b", weights="random"))
    return GEMModel(backbone, method=method, proxy=proxy)


def timing(rounds: int) -> dict:
    import torch

    models = {m: build(m) for m in METHODS}
    text = torch.nn.functional.normalize(torch.randn(3, models["gem"].backbone.embed_dim), dim=-1)
    x = make_images(1, SIZE, SEED)
    sam = models["trident"].proxy.sam
    pixels = sam.prepare(torch.rand(1, 3, SIZE, SIZE))
    calls = {**{m: (lambda m=m: models[m].heatmaps(x, text)) for m in METHODS},
             "SAM-B encoder alone": lambda: sam.encode(pixels)}
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for r in range(rounds):
            for key, call in calls.items():
                t = time.perf_counter()
                call()
                if r:  # round 0 is the warm-up
                    times[key].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(ts), "images_per_s": 1 / statistics.median(ts), "rounds": len(ts)}
            for k, ts in times.items()}



def memory_stage(method: str) -> dict:
    """Runs in a fresh process: extra peak memory of one heatmap call, in MiB."""
    import torch

    model = build(method)
    text = torch.nn.functional.normalize(torch.randn(3, model.backbone.embed_dim), dim=-1)
    x = make_images(1, SIZE, SEED)
    with torch.no_grad():
        model.heatmaps(x, text)  # warm-up: kernels, thread pools
        return {"extra_peak_mib": extra_peak_mib(lambda: model.heatmaps(x, text))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the first a warm-up (default: 3)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--memory-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_stage:
        print(json.dumps(memory_stage(args.memory_stage)))
        return
    import torch

    load_before = os.getloadavg()
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "loadavg_before": load_before},
              "size": SIZE, "weights": "random (seeded)", "timing": timing(args.rounds), "memory": {}}
    env = dict(stage_env(), MALLOC_MMAP_THRESHOLD_="65536")
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--memory-stage", method], env=env, capture_output=True,
                             text=True, check=True)
        result["memory"][method] = json.loads(out.stdout.strip().splitlines()[-1])
    result["machine"]["loadavg_after"] = os.getloadavg()
    for key, t in result["timing"].items():
        print(f"{key:<22} {t['images_per_s']:8.4f} images/s  (median {t['median_s']:.2f} s over {t['rounds']})")
    for method, m in result["memory"].items():
        print(f"{method:<22} extra peak memory {m['extra_peak_mib']:.0f} MiB")
    print(f"load average before/after: {load_before} / {result['machine']['loadavg_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
