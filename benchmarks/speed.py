"""Speed and memory of gemseg against the GEM reference (gem-torch 1.0.1), ViT-B/16 at 448x448.

    bash scripts/reference_env.sh                      # once: builds .venv-ref
    .venv/bin/python benchmarks/speed.py [--rounds 5] [--json results.json] [--device cuda]

What is measured (fp32 unless said otherwise; the same seeded random weights and images for both):

- images/s of a full heatmap call with the prompts ["cat", "dog", "remote control"], min-max
  normalized: the reference's ``model(image, prompts)`` (batch 1) or ``batched_forward(images,
  [prompts] * 8)`` (batch 8) in ``.venv-ref`` against ``GEMModel.heatmaps`` with the same prompts (one
  list per image at batch 8, so both encode the same 24 texts) in ``.venv``. Both compute the text
  embeddings inside the call. The two outputs are checked to agree. One more row times gemseg at
  batch 8 with a single prompt list for all images (the same maps; only 3 texts are encoded).
- the cost of GEM: ``GEMModel.encode_image`` with depth 7 against the same model with depth 0 (the
  plain forward of the same backbone through gemseg's block loop), batch 1 and 8; this ratio has the
  target. For context, also against open_clip's own ``encode_image`` on the same weights (the model
  built at 448x448 by open_clip, which resamples the positional embeddings itself).
- bf16: ``precision="bf16"`` (autocast) heatmaps, images/s and max |delta| from the fp32 heatmaps.
- the extra peak memory of one heatmap call at 896x896 (batch 1), each in a fresh process: on CPU the
  resident-set high-water mark is reset (``/proc/self/clear_refs``) after the model, the input and one
  small warm-up call (224x224, which loads kernels and thread pools) exist, and the extra is the
  high-water mark after the call minus the resident set before it. These processes run with
  ``MALLOC_MMAP_THRESHOLD_=65536``, so that glibc serves every large block with its own mapping and
  returns it when freed: the resident set then follows the live tensors, and repeated runs agree to
  within a MiB (with glibc's adaptive threshold, freed blocks may stay resident and the figure varies
  by a hundred MiB from run to run). On CUDA it is ``max_memory_allocated`` minus
  ``memory_allocated`` before the call.

The two implementations run in two long-lived worker processes, one per interpreter, and every
round times each measurement once, alternating between them, so that load from other programs on the
machine falls on both alike; the first round is a warm-up. Reported times are medians over rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (DEV_PYTHON, MODEL, PROMPTS, REF_PYTHON, SEED, check_interpreters, make_images,
                    random_open_clip, run_stage, stage_command, stage_env)

IMAGE_SIZE = 448
MEMORY_SIZE = 896
BATCHES = (1, 8)
REPLY = "@@"  # workers prefix their replies so that stray library output cannot be mistaken for one
TARGETS = {"speedup_b1": 1.3, "speedup_b8": 1.8, "gem_over_plain": 1.45, "memory_ratio": 0.25}


# --------------------------------------------------------------------------------------------------
# workers (run in the reference or the development interpreter)
# --------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class ReferenceRunner:
    """gem-torch 1.0.1 on open_clip 2.23: depth 7, one iteration, adaptive temperature."""

    def __init__(self, weights: Path, device: str):
        import open_clip
        import torch
        from gem.gem_wrapper import GEMWrapper  # what gem.create_gem_model builds around an open_clip model

        base = open_clip.create_model(MODEL, pretrained=None, device="cpu").eval()
        base.load_state_dict(torch.load(weights, weights_only=True))
        self.model = GEMWrapper(model=base, tokenizer=open_clip.get_tokenizer(MODEL)).eval().to(device)

    def heatmaps(self, images, variant: str = "gem"):
        import torch

        assert variant == "gem", variant
        with torch.no_grad():
            if images.shape[0] == 1:
                return self.model(images, PROMPTS, normalize=True)
            return torch.stack(self.model.batched_forward(images, [PROMPTS] * images.shape[0], normalize=True))


class GemsegRunner:
    """gemseg with depth 7 (GEM), depth 0 (plain forward) and bf16 autocast, sharing one backbone."""

    def __init__(self, weights: Path, device: str):
        import gemseg

        gem = gemseg.create_model(MODEL, checkpoint=str(weights), device=device)
        self.models = {"gem": gem, "plain": gem.variant(depth=0),
                       "bf16": gemseg.GEMModel(gem.backbone, config=gem.config, precision="bf16")}
        self.weights, self.device, self.library = weights, device, None

    def heatmaps(self, images, variant: str = "gem"):
        if variant == "shared":  # one prompt list for every image: the 3 texts are encoded once
            return self.models["gem"].heatmaps(images, PROMPTS, normalize=True)
        prompts = PROMPTS if images.shape[0] == 1 else [PROMPTS] * images.shape[0]
        return self.models[variant].heatmaps(images, prompts, normalize=True)

    def encode(self, images, variant: str = "gem"):
        if variant == "library":  # the backbone library's own plain forward, built on first use
            import open_clip
            import torch

            if self.library is None:  # open_clip resamples the positional embeddings to the image size
                self.library = open_clip.create_model(MODEL, pretrained=str(self.weights), device=self.device,
                                                      force_image_size=IMAGE_SIZE).eval()
            with torch.no_grad():
                return self.library.encode_image(images)
        return self.models[variant].encode_image(images)


def worker(kind: str, weights: Path, device: str) -> None:
    """Answer one JSON command per stdin line with one ``@@``-prefixed JSON line on stdout."""
    import torch

    runner = (ReferenceRunner if kind == "reference" else GemsegRunner)(weights, device)
    images = make_images(max(BATCHES), IMAGE_SIZE, SEED + 2).to(device)

    def reply(obj):
        sys.stdout.write(REPLY + json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op, batch, variant = cmd["op"], cmd.get("batch", 1), cmd.get("variant", "gem")
        x = images[:batch]
        if op == "quit":
            break
        if op in ("heatmaps", "encode"):
            fn = getattr(runner, op)
            _sync(device)
            t0 = time.perf_counter()
            fn(x, variant)
            _sync(device)
            reply({"seconds": time.perf_counter() - t0})
        elif op == "save":
            torch.save(runner.heatmaps(x).float().cpu(), cmd["path"])
            reply({"saved": cmd["path"]})
        elif op == "compare":  # max |delta| of our normalized heatmaps from a saved tensor
            theirs = torch.load(cmd["path"], weights_only=True)
            reply({"max_abs": float((runner.heatmaps(x).float().cpu() - theirs).abs().max())})
        elif op == "bf16_dev":
            out = {}
            for normalize in (False, True):
                a = runner.models["gem"].heatmaps(x, PROMPTS, normalize=normalize)
                b = runner.models["bf16"].heatmaps(x, PROMPTS, normalize=normalize)
                out["norm" if normalize else "raw"] = float((a.float() - b.float()).abs().max())
            reply(out)
        else:
            raise ValueError(f"unknown op {op!r}")


def _rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def memory(kind: str, weights: Path, device: str, size: int) -> None:
    """Print the extra peak memory (MiB) of one batch-1 heatmap call at ``size`` x ``size``."""
    import gc

    import torch

    variant = "plain" if kind == "gemseg-plain" else "gem"
    runner = (ReferenceRunner if kind == "reference" else GemsegRunner)(weights, device)
    images = make_images(1, size, SEED + 2).to(device)
    runner.heatmaps(images[..., :224, :224], variant)  # warm-up: kernels, thread pools, allocator
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        runner.heatmaps(images, variant)
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - before) / 2**20
        method = "cuda max_memory_allocated"
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the high-water mark to the current resident set
            method = "VmHWM after reset"
        except OSError:
            method = "ru_maxrss (peak so far; may hide a smaller peak)"
        before, _ = _rss_kib()
        runner.heatmaps(images, variant)
        _, peak = _rss_kib()
        extra = (peak - before) / 1024
    print(REPLY + json.dumps({"kind": kind, "extra_mib": extra, "method": method}), flush=True)


# --------------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------------
class Worker:
    def __init__(self, python: str, kind: str, weights: Path, device: str, threads: int):
        cmd = stage_command(python, __file__, f"--worker={kind}", f"--weights={weights}", f"--device={device}",
                            f"--threads={threads}")
        self.kind = kind
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=stage_env())
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
            sys.stderr.write(line)
        sys.exit(f"speed.py: the {self.kind} worker stopped (exit status {self.proc.wait()})")

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait()


def one_shot(python: str, *args: str, env: dict | None = None) -> dict:
    """Run a fresh process and return its ``@@`` reply."""
    out = subprocess.run(stage_command(python, __file__, *args), env=dict(stage_env(), **(env or {})), text=True,
                         stdout=subprocess.PIPE)
    replies = [line for line in out.stdout.splitlines() if line.startswith(REPLY)]
    if out.returncode != 0 or not replies:
        sys.exit(f"speed.py: {' '.join(args)} failed (exit status {out.returncode})")
    return json.loads(replies[-1][len(REPLY):])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args) -> dict:
    work = Path(args.workdir)
    weights = work / "weights.pt"
    if not weights.is_file():
        run_stage(args.ref_python, __file__, f"--make-weights={weights}")
    load_start = os.getloadavg()
    ref = Worker(args.ref_python, "reference", weights, args.device, args.threads)
    ours = Worker(args.dev_python, "gemseg", weights, args.device, args.threads)
    workers = {"reference": ref, "gemseg": ours}
    plan = []  # (name, worker, op, batch, variant)
    for b in BATCHES:
        plan += [(f"reference heatmaps b{b}", "reference", "heatmaps", b, "gem"),
                 (f"gemseg heatmaps b{b}", "gemseg", "heatmaps", b, "gem"),
                 (f"gemseg plain encode b{b}", "gemseg", "encode", b, "plain"),
                 (f"gemseg GEM encode b{b}", "gemseg", "encode", b, "gem"),
                 (f"open_clip encode_image b{b}", "gemseg", "encode", b, "library"),
                 (f"gemseg bf16 heatmaps b{b}", "gemseg", "heatmaps", b, "bf16")]
    plan.append((f"gemseg shared-prompts heatmaps b{max(BATCHES)}", "gemseg", "heatmaps", max(BATCHES), "shared"))
    times = {name: [] for name, *_ in plan}
    try:
        agree = {}
        for b in BATCHES:
            path = work / f"reference_b{b}.pt"
            ref.ask(op="save", batch=b, path=str(path))
            agree[b] = ours.ask(op="compare", batch=b, path=str(path))["max_abs"]
        bf16 = ours.ask(op="bf16_dev", batch=max(BATCHES))
        for r in range(args.rounds + 1):  # round 0 is the warm-up
            t0 = time.perf_counter()
            for name, who, op, b, variant in plan:
                seconds = workers[who].ask(op=op, batch=b, variant=variant)["seconds"]
                if r:
                    times[name].append(seconds)
            print(f"  round {r}{' (warm-up)' if not r else ''}: {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        for w in workers.values():
            w.close()
    load_end = os.getloadavg()
    mem = {k: one_shot(args.ref_python if k == "reference" else args.dev_python, f"--memory={k}",
                       f"--weights={weights}", f"--device={args.device}", f"--threads={args.threads}",
                       f"--size={MEMORY_SIZE}", env={"MALLOC_MMAP_THRESHOLD_": "65536"})
           for k in ("reference", "gemseg", "gemseg-plain")}
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "threads": args.threads, "device": args.device,
                    "python": platform.python_version(), "reference_torch": ref.info["torch"],
                    "gemseg_torch": ours.info["torch"], "loadavg_start": load_start, "loadavg_end": load_end},
        "image_size": IMAGE_SIZE, "rounds": args.rounds, "median_seconds": med, "all_seconds": times,
        "images_per_s": {name: int(name.rsplit("b", 1)[1]) / s for name, s in med.items()},
        "outputs_agree_max_abs": {f"b{b}": v for b, v in agree.items()},
        "bf16_max_abs_dev": bf16, "memory_size": MEMORY_SIZE, "memory": mem,
    }


def paired_ratio(res: dict, num: str, den: str) -> float:
    """Median over rounds of time(num) / time(den): both ran in the same round, so load that changes
    between rounds cancels."""
    return statistics.median(a / b for a, b in zip(res["all_seconds"][num], res["all_seconds"][den]))


def _ips_cell(res: dict, name: str) -> str:
    """Median images/s, and the range over rounds."""
    batch = int(name.rsplit("b", 1)[1])
    lo, hi = batch / max(res["all_seconds"][name]), batch / min(res["all_seconds"][name])
    return f"{res['images_per_s'][name]:.3f} ({lo:.3f}-{hi:.3f})"


def report(res: dict) -> bool:
    m, ips, med = res["machine"], res["images_per_s"], res["median_seconds"]
    print(f"\n{m['cpu']}, {m['cpus']} CPUs, {m['threads']} torch threads, device {m['device']}; "
          f"torch {m['gemseg_torch']} (gemseg) / {m['reference_torch']} (reference)")
    print(f"load average at start {m['loadavg_start'][0]:.1f}, at end {m['loadavg_end'][0]:.1f}; "
          f"medians over {res['rounds']} rounds; ViT-B/16, {res['image_size']}x{res['image_size']}\n")
    rows, ok_all = [], True

    def row(what, value, target=None, better="higher"):
        nonlocal ok_all
        verdict = ""
        if target is not None:
            ok = value >= target if better == "higher" else value <= target
            ok_all &= ok
            verdict = f"{'PASS' if ok else 'FAIL'} ({'>=' if better == 'higher' else '<='} {target:g})"
        rows.append((what, value, verdict))

    print("images/s: median (slowest-fastest round)\n")
    print("| measurement | batch 1 | batch 8 |")
    print("|---|---|---|")
    for label, key in (("reference (gem-torch) images/s, fp32", "reference heatmaps"),
                       ("gemseg images/s, fp32", "gemseg heatmaps"),
                       ("gemseg images/s, bf16 autocast", "gemseg bf16 heatmaps"),
                       ("gemseg plain forward (depth 0) images/s", "gemseg plain encode"),
                       ("gemseg GEM forward (depth 7) images/s", "gemseg GEM encode"),
                       ("open_clip's own encode_image (plain) images/s", "open_clip encode_image")):
        print(f"| {label} | {_ips_cell(res, key + ' b1')} | {_ips_cell(res, key + ' b8')} |")
    b = max(BATCHES)
    print(f"| gemseg images/s, fp32, one prompt list for all images (3 texts, not {3 * b}) | | "
          f"{_ips_cell(res, f'gemseg shared-prompts heatmaps b{b}')} |")
    print(f"| reference s/call | {med['reference heatmaps b1']:.2f} | {med['reference heatmaps b8']:.2f} |")
    print(f"| gemseg s/call | {med['gemseg heatmaps b1']:.2f} | {med['gemseg heatmaps b8']:.2f} |")
    print()
    for b in BATCHES:
        row(f"gemseg / reference images/s, batch {b}",
            paired_ratio(res, f"reference heatmaps b{b}", f"gemseg heatmaps b{b}"), TARGETS[f"speedup_b{b}"])
    for b in BATCHES:
        row(f"GEM forward / plain forward time, batch {b}",
            paired_ratio(res, f"gemseg GEM encode b{b}", f"gemseg plain encode b{b}"), TARGETS["gem_over_plain"],
            "lower")
    for b in BATCHES:  # context only: the target is on gemseg's own (faster) plain forward above
        row(f"GEM forward / open_clip's own encode_image time, batch {b}",
            paired_ratio(res, f"gemseg GEM encode b{b}", f"open_clip encode_image b{b}"))
    for b in BATCHES:
        row(f"bf16 / fp32 images/s, batch {b}",
            paired_ratio(res, f"gemseg heatmaps b{b}", f"gemseg bf16 heatmaps b{b}"))
    mem = res["memory"]
    ratio = mem["gemseg"]["extra_mib"] / mem["reference"]["extra_mib"]
    for k in ("reference", "gemseg", "gemseg-plain"):
        row(f"extra peak memory of one call at {res['memory_size']}x{res['memory_size']}, {k} (MiB)",
            mem[k]["extra_mib"])
    row("extra peak memory, gemseg / reference", ratio, TARGETS["memory_ratio"], "lower")
    dev = res["bf16_max_abs_dev"]
    row("bf16 max |delta| from fp32, raw cosine maps (batch 8)", dev["raw"])
    row("bf16 max |delta| from fp32, min-max normalized maps (batch 8)", dev["norm"])
    for b, v in res["outputs_agree_max_abs"].items():
        row(f"gemseg vs reference normalized heatmaps max |delta|, {b}", v, 1e-4, "lower")
    print("ratios: median over rounds of the ratio within each round\n")
    print("| quantity | value | target |")
    print("|---|---|---|")
    for what, value, verdict in rows:
        print(f"| {what} | {value:.4g} | {verdict} |")
    print(f"\nmemory method: {mem['gemseg']['method']}")
    print(f"\n{'PASS: every target met' if ok_all else 'FAIL: some targets not met'}")
    return ok_all


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref-python", default=str(REF_PYTHON), help="interpreter of scripts/reference_env.sh")
    p.add_argument("--dev-python", default=str(DEV_PYTHON), help="interpreter with gemseg and open_clip 3.x")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads per process")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up round")
    p.add_argument("--workdir", help="folder for weights and outputs (default: a temporary folder)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--worker", choices=("reference", "gemseg"), help=argparse.SUPPRESS)
    p.add_argument("--memory", choices=("reference", "gemseg", "gemseg-plain"), help=argparse.SUPPRESS)
    p.add_argument("--make-weights", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=MEMORY_SIZE, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker or args.memory or args.make_weights:
        import torch

        torch.set_num_threads(args.threads)
        if args.make_weights:
            torch.save(random_open_clip(SEED).state_dict(), args.make_weights)
        elif args.worker:
            worker(args.worker, Path(args.weights), args.device)
        else:
            memory(args.memory, Path(args.weights), args.device, args.size)
        return 0

    check_interpreters(args.ref_python, args.dev_python)
    with tempfile.TemporaryDirectory(prefix="gemseg-speed-") as tmp:
        args.workdir = args.workdir or tmp
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        res = run(args)
    ok = report(res)
    res["targets_met"] = ok
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
