"""Helpers shared by the benchmark scripts: seeded weights and inputs, subprocess stages, the machine record,
peak memory in fresh processes.

Everything here imports torch lazily, so the orchestrating process can start in any interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"  # gem-torch 1.0.1 + open_clip 2.23 (scripts/reference_env.sh)
DEV_PYTHON = ROOT / ".venv" / "bin" / "python"  # gemseg + open_clip 3.x
MODEL = "ViT-B-16"
SEED = 0
PROMPTS = ["cat", "dog", "remote control"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# environment of every stage: no hub access, no plot windows, quiet deprecation notices
STAGE_ENV = {"MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}


def perturb_constants(model, seed: int) -> None:
    """Add seeded noise to the parameters open_clip initializes to constants (LayerNorm weight 1 and
    bias 0, attention in/out biases 0) so that a wrong norm or a dropped bias changes the output."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 0 or p.numel() < 2 or not bool((p == p.flatten()[0]).all()):
                continue  # logit_scale, and parameters that are already random
            scale = 0.1 if name.endswith(".weight") else 0.02
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def random_open_clip(seed: int = SEED):
    """A ViT-B/16 open_clip model with seeded random weights (constants perturbed), in eval mode."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL, pretrained=None, device="cpu").eval()
    perturb_constants(model, seed + 1)
    return model


def make_images(batch: int, size: int, seed: int):
    """A seeded image batch [B, 3, size, size] with structure at several scales, normalized with
    CLIP's statistics: coarse random blobs (upsampled 7x7 noise) plus fine pixel noise."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(batch, 3, 7, 7, generator=gen), size=(size, size), mode="bicubic",
                           align_corners=False)
    pixels = (0.8 * coarse + 0.2 * torch.rand(batch, 3, size, size, generator=gen)).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def check_interpreters(ref_python: str, dev_python: str) -> None:
    for python, what in ((ref_python, "reference"), (dev_python, "development")):
        if not os.access(python, os.X_OK):
            sys.exit(f"no {what} interpreter at {python}"
                     + ("; run `bash scripts/reference_env.sh` first" if what == "reference" else ""))


def stage_command(python: str, script: str, *args: str) -> list[str]:
    return [str(python), str(Path(script).resolve()), *args]


def stage_env() -> dict:
    return dict(os.environ, **STAGE_ENV)


def run_stage(python: str, script: str, *args: str) -> None:
    """Run ``script`` with ``python`` and ``args``; exit with a message if it fails."""
    cmd = stage_command(python, script, *args)
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, env=stage_env(), cwd=ROOT).returncode != 0:
        sys.exit(f"stage failed: {' '.join(cmd)}")


def rss_kib(field: str) -> int:
    """A field of /proc/self/status in KiB ("VmRSS": resident now, "VmHWM": its high-water mark). Linux."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def extra_peak_mib(call) -> float:
    """Extra resident memory at the peak of one ``call()``, in MiB: the high-water mark is reset to the
    resident set (``/proc/self/clear_refs``), then the mark after the call minus the resident set before it.
    Run it after a warm-up call, in a fresh process with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed
    blocks leave the resident set."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident set
    before = rss_kib("VmRSS")
    call()
    return (rss_kib("VmHWM") - before) / 1024


def machine_info(**extra) -> dict:
    """The machine a timing run is on (platform, cores, torch and its threads, then ``extra``), with the load
    average as the run starts (``loadavg_before``; :func:`finish` adds the one after)."""
    import platform

    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), **extra, "loadavg_before": os.getloadavg()}


def memory_stages(script: str, names, *args: str) -> dict:
    """``name -> result`` for each of ``names``, measured by ``script --memory-stage NAME ARGS`` in a fresh
    process each (``MALLOC_MMAP_THRESHOLD_=65536``, see :func:`extra_peak_mib`); the result is the JSON object
    the stage prints on its last line."""
    import json

    env = dict(stage_env(), MALLOC_MMAP_THRESHOLD_="65536")
    out = {}
    for name in names:
        done = subprocess.run([sys.executable, script, "--memory-stage", name, *args], env=env, capture_output=True,
                              text=True, check=True)
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def finish(result: dict, json_path: str | None) -> None:
    """Record the load average after the run in ``result["machine"]``, print it beside the one before, and
    write ``result`` to ``json_path`` (when given)."""
    import json

    machine = result["machine"]
    machine["loadavg_after"] = os.getloadavg()
    print(f"load average before/after: {machine['loadavg_before']} / {machine['loadavg_after']}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
