"""Speed and peak memory of the mask-based method ``corrclip`` against ``gem`` and ``proxyclip`` (CLIP
ViT-B/16 at 448x448, DINO ViT-B/8 proxy), with mask generation by SAM ViT-B and SAM 2 Hiera-T, with seeded
random weights (no download; the cost does not depend on the weights' values).

    .venv/bin/python benchmarks/masks_speed.py [--rounds 3] [--json out.json]

What is measured (fp32, ``torch.no_grad``, batch 1, CPU unless ``--device``):

- images/s of ``GEMModel.heatmaps`` with 3 precomputed text embeddings: ``gem``, ``proxyclip``, and
  ``corrclip`` with its masks already at hand (a warm cache: ``masks=`` label maps) and with a cold cache
  (masks generated in the call by a :class:`gemseg.masks.MaskGenerator`). Every round times each call
  once, alternating; round 0 is a warm-up; the figure is the median over the others.
- the mask generators alone on the 448x448 image: SAM ViT-B (``SamConfig()``'s defaults are ViT-B) and
  SAM 2 Hiera-T (``Sam2Config()``'s are Hiera-T), with CorrCLIP's settings (8 x 8 points, one mask per
  point) and with the official defaults' 32 x 32 points. Thresholds are 0 so that random weights keep
  their masks: filtering costs nothing next to the decoder.
- a warm :class:`gemseg.masks.CachedMasks` read of one image's masks.
- with ``--memory``: the extra peak memory of one call, in a fresh process per configuration (resident-set
  high-water mark reset after a warm-up, as proxyclip_speed.py; ``common.extra_peak_mib``), and the
  resident set before that call (the models and the runtime; ``common.rss_kib``). ``--memory-only`` skips
  the timing. The configurations are those of ``--only``, else gem, proxyclip, corrclip (warm cache) and
  both generators at 8 x 8 points.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import SEED, extra_peak_mib, make_images, random_open_clip, rss_kib, finish, machine_info, memory_stages  # noqa: E402

SIZE = 448
CORRCLIP_POINTS = 8  # CorrCLIPv1/corrclip_segmentor.py set_mask_generator: points_per_side=8


def mask_source(kind: str, points: int, device: str):
    import torch
    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

    from gemseg.masks import AMGConfig, MaskGenerator, SamPrompter

    torch.manual_seed(SEED + 2)
    model = SamModel(SamConfig()) if kind == "sam-vit-b" else Sam2Model(Sam2Config())
    prompter = SamPrompter(model.eval().to(device), name=kind, source="random")
    cfg = AMGConfig(points_per_side=points, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                    multimask_output=points != CORRCLIP_POINTS)
    return MaskGenerator(prompter, cfg)


def build(method: str, device: str, masks=None):
    import open_clip
    import torch

    from gemseg import GEMModel
    from gemseg.backbones.open_clip import OpenCLIPBackbone
    from gemseg.backbones.vfm import create_vfm
    from gemseg.methods import CorrCLIPProxy, ProxyAttention

    backbone = OpenCLIPBackbone(random_open_clip(SEED), open_clip.get_tokenizer("ViT-B-16"), name="ViT-B-16",
                                pretrained="random").to(device)
    proxy = None
    if method in ("proxyclip", "corrclip"):
        torch.manual_seed(SEED + 1)
        vfm = create_vfm("dino-b8", weights="random", device=device)
        proxy = ProxyAttention(vfm) if method == "proxyclip" else CorrCLIPProxy(vfm)
    return GEMModel(backbone, method=method, proxy=proxy, masks=masks)


def calls(device: str, only: str | None = None) -> dict:
    """``{name: call}``: every configuration (or ``only`` that one), its models built once."""
    import functools

    import torch

    from gemseg.masks import CachedMasks, label_maps
    from gemseg.transforms import denormalize

    x = make_images(1, SIZE, SEED).to(device)
    pixels = denormalize(x)[0]  # (448, 448, 3) uint8
    text = torch.nn.functional.normalize(torch.randn(3, 512), dim=-1).to(device)
    gen = functools.lru_cache(None)(lambda kind, points: mask_source(kind, points, device))
    model = functools.lru_cache(None)(lambda m: build(m, device, masks=gen("sam-vit-b", CORRCLIP_POINTS)
                                                      if m == "corrclip" else None))
    labels = functools.lru_cache(None)(lambda: label_maps(gen("sam-vit-b", CORRCLIP_POINTS), [pixels]))

    def cached():
        c = CachedMasks(gen("sam-vit-b", CORRCLIP_POINTS), tempfile.mkdtemp(prefix="gemseg-masks-"))
        c(pixels)  # fill it
        return lambda: c(pixels)

    builders = {
        "gem": lambda: (lambda: model("gem").heatmaps(x, text)),
        "proxyclip": lambda: (lambda: model("proxyclip").heatmaps(x, text)),
        "corrclip (warm cache)": lambda: (lambda l=labels(): model("corrclip").heatmaps(x, text, masks=l)),
        "corrclip + sam-vit-b 8x8 (cold cache)": lambda: (lambda: model("corrclip").heatmaps(x, text)),
        **{f"masks {k} {p}x{p}": (lambda k=k, p=p: (lambda g=gen(k, p): g(pixels)))
           for k in ("sam-vit-b", "sam2-hiera-t") for p in (CORRCLIP_POINTS, 32)},
        "masks from a warm cache": cached,
    }
    return {k: b() for k, b in builders.items() if only in (None, k)}


def timing(rounds: int, device: str, only: list[str] | None = None) -> dict:
    import torch

    todo = {k: c for k, c in calls(device).items() if not only or k in only}
    times: dict[str, list[float]] = {k: [] for k in todo}
    with torch.no_grad():
        for r in range(rounds):
            for key, call in todo.items():
                t = time.perf_counter()
                call()
                if r:
                    times[key].append(time.perf_counter() - t)
                    print(f"round {r}: {key:<40} {times[key][-1]:8.3f} s", flush=True)  # partial results
    return {k: {"median_s": statistics.median(ts), "images_per_s": 1 / statistics.median(ts), "rounds": len(ts)}
            for k, ts in times.items()}



def memory_stage(name: str, device: str) -> dict:
    """In a fresh process: extra peak memory (MiB) of one call of configuration ``name``."""
    import torch

    call = calls(device, only=name)[name]
    with torch.no_grad():
        call()  # warm-up
        resident = rss_kib("VmRSS") / 1024
        return {"extra_peak_mib": extra_peak_mib(call), "resident_mib": resident}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the first a warm-up (default: 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (a fresh process each)")
    ap.add_argument("--memory-only", action="store_true", help="measure peak memory only, no timing")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="only these configurations (timing and memory)")
    ap.add_argument("--memory-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_stage:
        print(json.dumps(memory_stage(args.memory_stage, args.device)))
        return
    result = {"machine": machine_info(device=args.device),
              "size": SIZE, "weights": "random (seeded)", "memory": {},
              "timing": {} if args.memory_only else timing(args.rounds, args.device, args.only)}
    if args.memory or args.memory_only:
        result["memory"] = memory_stages(__file__, args.only or ("gem", "proxyclip", "corrclip (warm cache)",
                                                                 "masks sam-vit-b 8x8", "masks sam2-hiera-t 8x8"),
                                         "--device", args.device)
    for key, t in result["timing"].items():
        print(f"{key:<40} {t['images_per_s']:8.3f} images/s  (median {t['median_s']:.3f} s over {t['rounds']})")
    for name, m in result["memory"].items():
        print(f"{name:<40} extra peak memory {m['extra_peak_mib']:.0f} MiB (resident before {m['resident_mib']:.0f} MiB)")
    finish(result, args.json)


if __name__ == "__main__":
    main()
