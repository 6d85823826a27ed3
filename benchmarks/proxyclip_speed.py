"""Speed and peak memory of ``method="proxyclip"`` (CLIP ViT-B/16 + DINOv2 ViT-B/14) against ``method="gem"``
(CLIP ViT-B/16, depth 7) at 448x448, with seeded random weights (no download; the cost does not depend on
the weights' values).

    .venv/bin/python benchmarks/proxyclip_speed.py [--rounds 4] [--batch 1 4] [--json out.json]

What is measured (fp32, ``torch.no_grad``):

- images/s of ``GEMModel.heatmaps`` with 3 precomputed text embeddings (the image side only), batch 1 and
  4 (a batch of crops, as the sliding-window evaluation sends them); every round times each method once,
  alternating, so that load from other programs falls on both alike; the first round is a warm-up and the
  reported figure is the median over the others. The VFM's own forward (DINOv2-B at 448: a 32x32 grid)
  is timed too, to show where ProxyCLIP's extra time goes.
- the extra peak memory of one heatmap call at batch 1, in a fresh process per method: the resident-set
  high-water mark is reset (``/proc/self/clear_refs``) after the model, the input and a warm-up call
  exist; the extra is the high-water mark after the call minus the resident set before it (with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed blocks leave the resident set; see speed.py). On CUDA it
  is ``max_memory_allocated`` minus ``memory_allocated`` before the call.
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
PROXY = "dinov2-b14"


def build(method: str, device: str):
    """A GEMModel on random ViT-B/16 weights; for proxyclip with a random DINOv2-B/14 proxy."""
    import open_clip
    import torch

    from gemseg import GEMModel
    from gemseg.backbones.open_clip import OpenCLIPBackbone
    from gemseg.backbones.vfm import create_vfm
    from gemseg.methods import ProxyAttention

    backbone = OpenCLIPBackbone(random_open_clip(SEED), open_clip.get_tokenizer("ViT-B-16"), name="ViT-B-16",
                                pretrained="random").to(device)
    proxy = None
    if method == "proxyclip":
        torch.manual_seed(SEED + 1)
        proxy = ProxyAttention(create_vfm(PROXY, weights="random", device=device))
    return GEMModel(backbone, method=method, proxy=proxy)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timing(rounds: int, batches: list[int], device: str) -> dict:
    import torch

    models = {m: build(m, device) for m in ("gem", "proxyclip")}
    text = torch.nn.functional.normalize(torch.randn(3, models["gem"].backbone.embed_dim), dim=-1).to(device)
    inputs = {b: make_images(b, SIZE, SEED).to(device) for b in batches}
    calls = {f"{m} b{b}": (lambda m=m, b=b: models[m].heatmaps(inputs[b], text)) for m in models for b in batches}
    vfm = models["proxyclip"].proxy.vfm
    pre = models["proxyclip"].backbone.preprocess
    calls["dinov2 forward b1"] = lambda: vfm(inputs[batches[0]][:1], pre)
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for r in range(rounds):
            for key, call in calls.items():
                _sync(device)
                t = time.perf_counter()
                call()
                _sync(device)
                if r:  # round 0 is the warm-up
                    times[key].append(time.perf_counter() - t)
    out = {}
    for key, ts in times.items():
        b = int(key.rsplit("b", 1)[1])
        med = statistics.median(ts)
        out[key] = {"median_s": med, "images_per_s": b / med, "rounds": len(ts)}
    return out



def memory_stage(method: str, device: str) -> dict:
    """Runs in a fresh process: extra peak memory of one heatmap call at batch 1, in MiB."""
    import torch

    model = build(method, device)
    text = torch.nn.functional.normalize(torch.randn(3, model.backbone.embed_dim), dim=-1).to(device)
    x = make_images(1, SIZE, SEED).to(device)
    with torch.no_grad():
        model.heatmaps(make_images(1, 224, SEED).to(device), text)  # warm-up: kernels, thread pools
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            model.heatmaps(x, text)
            torch.cuda.synchronize()
            return {"extra_peak_mib": (torch.cuda.max_memory_allocated() - before) / 2 ** 20}
        return {"extra_peak_mib": extra_peak_mib(lambda: model.heatmaps(x, text))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds, the first a warm-up (default: 4)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes (default: 1 4)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--memory-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_stage:
        print(json.dumps(memory_stage(args.memory_stage, args.device)))
        return
    result = {"machine": machine_info(device=args.device),
              "size": SIZE, "proxy": PROXY, "weights": "random (seeded)", "timing": timing(args.rounds, args.batch,
                                                                                          args.device)}
    result["memory"] = memory_stages(__file__, ("gem", "proxyclip"), "--device", args.device)
    for key, t in result["timing"].items():
        print(f"{key:<20} {t['images_per_s']:8.3f} images/s  (median {t['median_s']:.3f} s over {t['rounds']})")
    for method, m in result["memory"].items():
        print(f"{method:<20} extra peak memory {m['extra_peak_mib']:.0f} MiB (batch 1)")
    finish(result, args.json)


if __name__ == "__main__":
    main()
