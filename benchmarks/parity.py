"""Numerical parity of gemseg with the GEM reference implementation (gem-torch 1.0.1).

One command runs everything::

    bash scripts/reference_env.sh          # once: builds .venv-ref (gem-torch + open_clip 2.23)
    .venv/bin/python benchmarks/parity.py  # exit status 0 only if every comparison passes

Three stages run as subprocesses, all on CPU in float32:

1. ``reference`` (in ``.venv-ref``, open_clip 2.23): builds a ViT-B/16 with seeded random weights,
   perturbs the parameters open_clip initializes to constants (LayerNorm scales and shifts, attention
   biases) so that every code path matters, saves the plain state dict, a seeded 3-image 448x448 input
   and the reference heatmaps for every configuration.
2. ``gemseg`` in ``.venv-ref`` (open_clip 2.23, sequence-first blocks) and
3. ``gemseg`` in ``.venv`` (open_clip 3.x, batch-first blocks): load the same weights with
   ``gemseg.create_model("ViT-B-16", checkpoint=...)`` and compute the same heatmaps.

What is compared (max |delta| over every pixel, prompt and image; tolerance 1e-4):

- batch 1: the reference's ``model(image, prompts, normalize=...)`` against
  ``GEMModel.heatmaps(image, prompts, normalize=...)``.
- batch 3: the reference's ``batched_forward(images, per_image_prompts, normalize=...)`` against
  ``GEMModel.heatmaps(images, per_image_prompts, normalize=...)``. The reference's batched path
  multiplies the raw similarities by 100 (its ``forward`` does not), so its raw maps are divided by 100
  and compared on the cosine scale; the min-max normalized maps are scale-free and compared as they are.
- raw (``normalize=False``, cosine similarities) and min-max normalized (``normalize=True``) maps.
- one extra row checks the original path (``return_ori=True``).

The reference model is the one ``gem.create_gem_model`` builds: ``GEMWrapper`` around an open_clip model,
here constructed directly around a model holding the saved weights.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

from common import (DEV_PYTHON, MODEL, PROMPTS, REF_PYTHON, SEED, check_interpreters, make_images,
                    random_open_clip, run_stage)

IMAGE_SIZE = 448
TOL = 1e-4
# A fixed inverse temperature well away from the adaptive one (about 3.5 for these weights), so a path
# that ignored the fixed value would show up.
FIXED_INV_TEMP = 2.0
# batch 3: one prompt list per image (equal lengths, different order and content)
BATCH_PROMPTS = [PROMPTS, ["remote control", "cat", "dog"], ["sofa", "cat", "television"]]


def configs() -> list[dict]:
    """Every compared configuration."""
    out = []
    for batch in (1, 3):
        for depth in (7, 4):
            for iterations in (1, 2):
                for temperature in (None, FIXED_INV_TEMP):
                    out.append(dict(batch=batch, depth=depth, iterations=iterations, temperature=temperature,
                                    return_ori=False))
    out.append(dict(batch=1, depth=7, iterations=1, temperature=None, return_ori=True))
    return out


def config_name(c: dict) -> str:
    temp = "adaptive" if c["temperature"] is None else f"t={c['temperature']:g}"
    ori = " ori" if c["return_ori"] else ""
    return f"b{c['batch']} depth={c['depth']} iter={c['iterations']} {temp}{ori}"


# --------------------------------------------------------------------------------------------------
# stage 1: the reference (runs in .venv-ref)
# --------------------------------------------------------------------------------------------------
def run_reference(out: Path) -> None:
    import open_clip
    import torch
    from gem.gem_wrapper import GEMWrapper  # what gem.create_gem_model wraps an open_clip model in

    base = random_open_clip(SEED)
    torch.save(base.state_dict(), out / "weights.pt")
    tokenizer = open_clip.get_tokenizer(MODEL)
    images = make_images(3, IMAGE_SIZE, SEED + 2)

    results = {}
    for c in configs():
        t0 = time.perf_counter()
        model = GEMWrapper(model=copy.deepcopy(base), tokenizer=tokenizer, depth=c["depth"],
                           ss_attn_iter=c["iterations"], ss_attn_temp=c["temperature"]).eval()
        maps = {}
        with torch.no_grad():
            for normalize in (False, True):
                if c["batch"] == 1:
                    m = model(images[:1], PROMPTS, normalize=normalize, return_ori=c["return_ori"])
                else:
                    per_image = model.batched_forward(images, BATCH_PROMPTS, normalize=normalize,
                                                      return_ori=c["return_ori"])
                    m = torch.stack(per_image)  # (B, P, H, W)
                    if not normalize:
                        m = m / 100  # batched_forward scales raw similarities by 100
                maps["norm" if normalize else "raw"] = m.float().contiguous()
        results[config_name(c)] = maps
        print(f"  reference {config_name(c):40s} {time.perf_counter() - t0:6.1f} s", flush=True)
    torch.save({"images": images, "prompts": PROMPTS, "batch_prompts": BATCH_PROMPTS, "maps": results},
               out / "reference.pt")
    # how far apart the reference maps of different settings are: the tolerance must be far below this
    nearest = {}
    for a, ma in results.items():
        others = [float((ma["raw"] - mb["raw"]).abs().max()) for b, mb in results.items()
                  if b != a and mb["raw"].shape == ma["raw"].shape]
        nearest[a] = min(others)
    (out / "nearest.json").write_text(json.dumps(nearest, indent=1))


# --------------------------------------------------------------------------------------------------
# stage 2: gemseg (runs in either environment)
# --------------------------------------------------------------------------------------------------
def run_gemseg(out: Path, label: str) -> None:
    import logging
    import warnings
    from importlib.metadata import version

    import torch

    import gemseg

    logging.getLogger().setLevel(logging.ERROR)  # open_clip logs that it starts from random weights
    ref = torch.load(out / "reference.pt", weights_only=True)
    images = ref["images"]
    rows = []
    key = model = None
    for c in configs():
        t0 = time.perf_counter()
        if key != (c["depth"], c["iterations"], c["temperature"]):
            key = (c["depth"], c["iterations"], c["temperature"])
            model = None  # free the previous model first
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecation notices from timm imports
                model = gemseg.create_model(MODEL, checkpoint=str(out / "weights.pt"), depth=c["depth"],
                                            iterations=c["iterations"], temperature=c["temperature"])
        x = images[: c["batch"]]
        prompts = ref["prompts"] if c["batch"] == 1 else ref["batch_prompts"]
        row = {"config": config_name(c)}
        for kind, normalize in (("raw", False), ("norm", True)):
            ours = model.heatmaps(x, prompts, normalize=normalize, return_ori=c["return_ori"])
            theirs = ref["maps"][config_name(c)][kind]
            if ours.shape != theirs.shape:
                raise AssertionError(f"{config_name(c)} {kind}: shape {tuple(ours.shape)} vs reference "
                                     f"{tuple(theirs.shape)}")
            row[kind] = float((ours - theirs).abs().max())
            row[f"{kind}_ref_std"] = float(theirs.std())
        rows.append(row)
        print(f"  gemseg[{label}] {row['config']:40s} raw {row['raw']:.2e} norm {row['norm']:.2e} "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)
    info = {"label": label, "python": sys.version.split()[0], "torch": torch.__version__,
            "open_clip": version("open_clip_torch"), "rows": rows}
    (out / f"gemseg-{label}.json").write_text(json.dumps(info, indent=1))


# --------------------------------------------------------------------------------------------------
# orchestration (any interpreter)
# --------------------------------------------------------------------------------------------------
def report(out: Path, labels: list[str], tol: float) -> bool:
    runs = [json.loads((out / f"gemseg-{label}.json").read_text()) for label in labels]
    nearest = json.loads((out / "nearest.json").read_text())
    header = "| config | ref std | nearest other config | " + " | ".join(
        f"{r['label']} raw | {r['label']} norm" for r in runs) + " | result |"
    print()
    for r in runs:
        print(f"{r['label']}: python {r['python']}, torch {r['torch']}, open_clip {r['open_clip']}")
    print(f"max |delta| against gem-torch 1.0.1, tolerance {tol:g}\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    ok_all = True
    for i, row in enumerate(runs[0]["rows"]):
        cells, ok = [], True
        for r in runs:
            rr = r["rows"][i]
            assert rr["config"] == row["config"]
            cells += [f"{rr['raw']:.2e}", f"{rr['norm']:.2e}"]
            ok &= rr["raw"] <= tol and rr["norm"] <= tol
        ok_all &= ok
        print(f"| {row['config']} | {row['raw_ref_std']:.3f} | {nearest[row['config']]:.2e} | "
              + " | ".join(cells) + f" | {'PASS' if ok else 'FAIL'} |")
    print("\nref std: standard deviation of the reference's raw map; nearest other config: smallest max |delta|"
          "\nbetween this configuration's raw reference map and another configuration's (same batch).")
    print(f"\n{'PASS' if ok_all else 'FAIL'}: {len(runs[0]['rows'])} configurations x "
          f"{len(runs)} environments x (raw, normalized)")
    return ok_all


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref-python", default=str(REF_PYTHON),
                   help="interpreter with gem-torch 1.0.1 and open_clip 2.23 (scripts/reference_env.sh)")
    p.add_argument("--dev-python", default=str(DEV_PYTHON),
                   help="interpreter with gemseg and open_clip 3.x")
    p.add_argument("--workdir", help="where weights, inputs and outputs go (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the reference weights and maps already in --workdir (skip stage 1)")
    p.add_argument("--tol", type=float, default=TOL, help="largest allowed max |delta|")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each stage")
    p.add_argument("--stage", choices=("reference", "gemseg"), help=argparse.SUPPRESS)
    p.add_argument("--label", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.stage:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        out = Path(args.workdir)
        if args.stage == "reference":
            run_reference(out)
        else:
            run_gemseg(out, args.label)
        return 0

    check_interpreters(args.ref_python, args.dev_python)
    with tempfile.TemporaryDirectory(prefix="gemseg-parity-") as tmp:
        out = Path(args.workdir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        extra = [f"--workdir={out}"] + ([f"--threads={args.threads}"] if args.threads else [])
        if not (args.reuse and all((out / f).is_file() for f in ("weights.pt", "reference.pt", "nearest.json"))):
            run_stage(args.ref_python, __file__, "--stage=reference", *extra)
        run_stage(args.ref_python, __file__, "--stage=gemseg", "--label=open_clip-2.23", *extra)
        run_stage(args.dev_python, __file__, "--stage=gemseg", "--label=open_clip-3.x", *extra)
        ok = report(out, ["open_clip-2.23", "open_clip-3.x"], args.tol)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
