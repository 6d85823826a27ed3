"""Speed and peak memory of ``method="cass"`` (CLIP ViT-B/16 + DINO ViT-B/8) and of the ``lposs`` / ``lposs+``
refiners (DINO ViT-B/16) after ``gem``, against plain ``method="gem"`` (ViT-B/16, depth 7), at 448x448 with
seeded random weights (no download; the cost does not depend on the weights' values).

    .venv/bin/python benchmarks/propagate_speed.py [--rounds 3] [--json out.json]

What is measured (fp32, ``torch.no_grad``, batch 1, 3 precomputed text embeddings):

- images/s of ``GEMModel.heatmaps`` for ``gem`` and ``cass``, and of ``gem`` heatmaps followed by the LPOSS and
  LPOSS+ propagation (:class:`gemseg.lposs.LPOSSRefiner`, official settings: 224 windows, stride 112, k=400,
  13x13 pixel windows); rounds alternate over the four, the first is a warm-up, the figure is the median
  of the others;
- the extra peak memory of one call, in a fresh process each: the resident-set high-water mark after the
  call minus the resident set before it (``/proc/self/clear_refs``; ``MALLOC_MMAP_THRESHOLD_=65536`` so that
  freed blocks leave the resident set), as benchmarks/proxyclip_speed.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import SEED, extra_peak_mib, make_images, random_open_clip, finish, machine_info, memory_stages  # noqa: E402

SIZE = 448
CASES = ("gem", "cass", "gem+lposs", "gem+lposs+")


def build(case: str):
    """``(model, refiner or None)`` for a case, on random weights."""
    import open_clip
    import torch

    from gemseg import GEMModel
    from gemseg.backbones.open_clip import OpenCLIPBackbone
    from gemseg.backbones.vfm import create_vfm
    from gemseg.lposs import LPOSSRefiner
    from gemseg.methods import CASSProxy

    backbone = OpenCLIPBackbone(random_open_clip(SEED), open_clip.get_tokenizer("ViT-B-16"), name="ViT-B-16",
                                pretrained="random")
    torch.manual_seed(SEED + 1)
    if case == "cass":
        return GEMModel(backbone, method="cass", proxy=CASSProxy(create_vfm("dino-b8", weights="random"))), None
    refiner = None
    if case.startswith("gem+"):
        refiner = LPOSSRefiner(pixel=case.endswith("+"), vfm=create_vfm("dino-b16", weights="random"))
    return GEMModel(backbone), refiner


def call(model, refiner, x, text):
    sims = model.heatmaps(x, text)
    return sims if refiner is None else refiner(sims, image=x, model=model)


def timing(rounds: int) -> dict:
    import torch

    built = {c: build(c) for c in CASES}
    text = torch.nn.functional.normalize(torch.randn(3, 512), dim=-1)
    x = make_images(1, SIZE, SEED)
    times: dict[str, list[float]] = {c: [] for c in CASES}
    with torch.no_grad():
        for r in range(rounds):
            for case, (model, refiner) in built.items():
                t = time.perf_counter()
                call(model, refiner, x, text)
                if r:  # round 0 is the warm-up
                    times[case].append(time.perf_counter() - t)
    return {c: {"median_s": statistics.median(ts), "images_per_s": 1 / statistics.median(ts), "rounds": len(ts)}
            for c, ts in times.items()}



def memory_stage(case: str) -> dict:
    """Runs in a fresh process: extra peak memory of one call at batch 1, in MiB."""
    import torch

    model, refiner = build(case)
    text = torch.nn.functional.normalize(torch.randn(3, 512), dim=-1)
    x = make_images(1, SIZE, SEED)
    with torch.no_grad():
        call(model, refiner, make_images(1, 224, SEED), text)  # warm-up: kernels, thread pools
        return {"extra_peak_mib": extra_peak_mib(lambda: call(model, refiner, x, text))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the first a warm-up (default: 3)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--memory-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_stage:
        print(json.dumps(memory_stage(args.memory_stage)))
        return
    result = {"machine": machine_info(), "size": SIZE, "weights": "random (seeded)", "timing": timing(args.rounds)}
    result["memory"] = memory_stages(__file__, CASES)
    for case, t in result["timing"].items():
        print(f"{case:<12} {t['images_per_s']:8.3f} images/s  (median {t['median_s']:.2f} s over {t['rounds']}),"
              f" extra peak memory {result['memory'][case]['extra_peak_mib']:.0f} MiB")
    finish(result, args.json)


if __name__ == "__main__":
    main()
