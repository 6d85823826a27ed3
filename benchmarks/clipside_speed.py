"""Speed and peak memory of ``sc-clip``, ``sfp`` and the ResCLIP plug-in (``naclip+resclip``, ``gem+resclip``,
``vv+resclip``, with the bases ``naclip`` and ``vv``) against
``gem`` (depth 7) on CLIP ViT-B/16 at 448x448, with seeded random weights (no download; the cost does not
depend on the weights' values, except ResCLIP's path test, whose work does not depend on the labels).

    .venv/bin/python benchmarks/clipside_speed.py [--rounds 3] [--batch 1 2] [--json out.json]

As ``proxyclip_speed.py``: fp32, ``torch.no_grad``, ``GEMModel.heatmaps`` with 3 precomputed text
embeddings (ResCLIP's semantic feedback uses them; its first pass and PAMR are timed with it); every round
times each method once, alternating; round 0 is a warm-up, the figure is the median of the others. The
extra peak memory of one batch-1 call is measured in a fresh process per method (resident-set high-water
mark, see speed.py).
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
METHODS = ("gem", "sc-clip", "sfp", "naclip", "naclip+resclip", "gem+resclip", "vv", "vv+resclip")


def build(method: str, device: str):
    """A GEMModel on random ViT-B/16 weights running ``method`` with its official settings."""
    import open_clip

    from gemseg import GEMModel
    from gemseg.backbones.open_clip import OpenCLIPBackbone

    backbone = OpenCLIPBackbone(random_open_clip(SEED), open_clip.get_tokenizer("ViT-B-16"), name="ViT-B-16",
                                pretrained="random").to(device)
    return GEMModel(backbone, method=method)


def _text(model, device):
    import torch

    gen = torch.Generator().manual_seed(SEED)
    return torch.nn.functional.normalize(torch.randn(3, model.backbone.embed_dim, generator=gen), dim=-1).to(device)


def timing(rounds: int, batches: list[int], device: str) -> dict:
    import torch

    base = build("gem", device)
    models = {m: base.variant(method=m) for m in METHODS}  # one backbone, shared
    text = _text(base, device)
    inputs = {b: make_images(b, SIZE, SEED).to(device) for b in batches}
    calls = {f"{m} b{b}": (lambda m=m, b=b: models[m].heatmaps(inputs[b], text)) for m in models for b in batches}
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for r in range(rounds):
            for key, call in calls.items():
                t = time.perf_counter()
                call()
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
    text = _text(model, device)
    x = make_images(1, SIZE, SEED).to(device)
    with torch.no_grad():
        model.heatmaps(make_images(1, 224, SEED).to(device), text)  # warm-up: kernels, thread pools
        return {"extra_peak_mib": extra_peak_mib(lambda: model.heatmaps(x, text))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the first a warm-up (default: 3)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2], help="batch sizes (default: 1 2)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--memory-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_stage:
        print(json.dumps(memory_stage(args.memory_stage, "cpu")))
        return
    result = {"machine": machine_info(),
              "size": SIZE, "weights": "random (seeded)", "timing": timing(args.rounds, args.batch, "cpu")}
    result["memory"] = memory_stages(__file__, METHODS)
    for key, t in result["timing"].items():
        print(f"{key:<24} {t['images_per_s']:8.3f} images/s  (median {t['median_s']:.3f} s over {t['rounds']})")
    for method, m in result["memory"].items():
        print(f"{method:<24} extra peak memory {m['extra_peak_mib']:.0f} MiB (batch 1)")
    finish(result, args.json)


if __name__ == "__main__":
    main()
