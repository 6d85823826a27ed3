"""Speed and peak memory of ``method="trident"`` (CLIP ViT-B/16 + DINO ViT-B/16 + SAM ViT-B) against
``method="gem"`` (CLIP ViT-B/16, depth 7) at 448x448, with seeded random weights (no download; the cost does
not depend on the weights' values).

    .venv/bin/python benchmarks/trident_speed.py [--rounds 3] [--json out.json] [--only NAME ...] [--no-memory]

What is measured (fp32, ``torch.no_grad``, batch 1):

- images/s of ``GEMModel.heatmaps`` with 3 precomputed text embeddings (the image side only); every round
  times each call once, alternating, so that load from other programs falls on all alike; the first round
  is a warm-up and the figure is the median over the others. SAM's image encoder alone (1024x1024, the
  last block's attention kept) is timed too: it is most of Trident's cost. ``trident + sam-prompts`` is the
  heatmaps followed by Trident's SAM-prompt refinement (the ``"sam-prompts"`` refiner on the scores at the
  input size, with the model's own SAM), ``sam-prompts alone`` the refiner on scores computed beforehand;
  with random weights the number of prompted regions is whatever the random scores give (it is printed).
- the extra peak memory of one call, in a fresh process per configuration, as benchmarks/proxyclip_speed.py
  measures it (resident-set high-water mark reset after a warm-up; ``MALLOC_MMAP_THRESHOLD_=65536``), and
  the resident set before that call (the models); ``--no-memory`` skips it.

``--only NAME ...`` keeps only those configurations (of :data:`CONFIGS`), for timing and memory alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import SEED, extra_peak_mib, make_images, random_open_clip, rss_kib, finish, machine_info, memory_stages  # noqa: E402

SIZE = 448
METHODS = ("gem", "trident")
CONFIGS = ("gem", "trident", "trident + sam-prompts", "SAM-B encoder alone", "sam-prompts alone")
MEMORY = ("gem", "trident", "trident + sam-prompts")  # the configurations whose peak memory is measured


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
        proxy = TridentProxy(create_vfm("dino-b16", weights="random"), create_sam("sam-vit-b", weights="random"))
    return GEMModel(backbone, method=method, proxy=proxy)


def calls(only=None) -> dict:
    """``{name: call}`` of :data:`CONFIGS` (or ``only`` those), the models built once."""
    import torch
    import torch.nn.functional as F

    from gemseg.sam_refine import sam_prompt_refiner

    only = set(only or CONFIGS)
    models = {m: build(m) for m in METHODS if m in only or (m == "trident" and only - {"gem"})}
    model = models.get("trident") or models["gem"]
    text = torch.nn.functional.normalize(torch.randn(3, model.backbone.embed_dim), dim=-1)
    x = make_images(1, SIZE, SEED)

    def refined(scores):
        scores = F.interpolate(scores, size=(SIZE, SIZE), mode="bilinear", align_corners=False)  # (1, 3, S, S)
        return sam_prompt_refiner(scores, image=x, model=models["trident"])

    out = {m: (lambda m=m: models[m].heatmaps(x, text)) for m in models if m in only}
    if "trident + sam-prompts" in only:
        out["trident + sam-prompts"] = lambda: refined(models["trident"].heatmaps(x, text))
    if "SAM-B encoder alone" in only:
        sam = models["trident"].proxy.sam
        pixels = sam.prepare(torch.rand(1, 3, SIZE, SIZE))
        out["SAM-B encoder alone"] = lambda: sam.encode(pixels)
    if "sam-prompts alone" in only:
        with torch.no_grad():
            scores = models["trident"].heatmaps(x, text)
        out["sam-prompts alone"] = lambda: refined(scores)
        up = F.interpolate(scores, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        print(f"sam-prompts: {regions(up)} prompted regions on the random scores", flush=True)
    return out


def regions(scores) -> int:
    """Connected regions that ``scores`` [1, Q, S, S] give the refinement (its SAM prompts), found as
    ``gemseg.sam_refine.sam_refine_labels`` finds them (half size, coarse threshold 0.2, area 225)."""
    import torch.nn.functional as F

    from gemseg.sam_refine import region_prompts

    probs = (40.0 * scores[0]).softmax(0)  # (Q, S, S), logit scale 40
    half = (SIZE // 2, SIZE // 2)
    lab = F.interpolate(probs.argmax(0)[None, None].float(), size=half, mode="nearest")[0, 0].long()
    pr = F.interpolate(probs[None], size=half, mode="bilinear", align_corners=False)[0]
    lab[pr.max(0).values < 0.2] = probs.shape[0]
    return sum(len(r[0]) for r in region_prompts(lab, pr, coarse_thresh=0.2, minimal_area=225).values())


def timing(rounds: int, only=None) -> dict:
    import torch

    todo = calls(only)
    times: dict[str, list[float]] = {k: [] for k in todo}
    with torch.no_grad():
        for r in range(rounds):
            for key, call in todo.items():
                t = time.perf_counter()
                call()
                if r:  # round 0 is the warm-up
                    times[key].append(time.perf_counter() - t)
                    print(f"round {r}: {key:<24} {times[key][-1]:8.2f} s", flush=True)  # partial results
    return {k: {"median_s": statistics.median(ts), "images_per_s": 1 / statistics.median(ts), "rounds": len(ts)}
            for k, ts in times.items()}


def memory_stage(name: str) -> dict:
    """Runs in a fresh process: extra peak memory of one call of configuration ``name``, in MiB, and the
    resident set before it."""
    import torch

    call = calls([name])[name]
    with torch.no_grad():
        call()  # warm-up: kernels, thread pools
        resident = rss_kib("VmRSS") / 1024
        return {"extra_peak_mib": extra_peak_mib(call), "resident_mib": resident}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the first a warm-up (default: 3)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--only", nargs="+", default=None, choices=CONFIGS, metavar="NAME",
                    help=f"only these configurations (of: {', '.join(CONFIGS)})")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory stages")
    ap.add_argument("--memory-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_stage:
        print(json.dumps(memory_stage(args.memory_stage)))
        return
    result = {"machine": machine_info(), "size": SIZE, "weights": "random (seeded)",
              "timing": timing(args.rounds, args.only)}
    result["memory"] = memory_stages(__file__, () if args.no_memory else
                                     [m for m in MEMORY if not args.only or m in args.only])
    for key, t in result["timing"].items():
        print(f"{key:<24} {t['images_per_s']:8.4f} images/s  (median {t['median_s']:.2f} s over {t['rounds']})")
    for method, m in result["memory"].items():
        print(f"{method:<22} extra peak memory {m['extra_peak_mib']:.0f} MiB (resident before {m['resident_mib']:.0f} MiB)")
    finish(result, args.json)


if __name__ == "__main__":
    main()
