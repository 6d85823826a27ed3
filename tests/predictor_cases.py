"""Outputs of every caller of the predictor on the tiny models, through public entry points only:
``GEMModel.segment``, ``gemseg segment``, the demo's request function, ``gemseg eval`` (``evaluate``) and the
sweep (``run_sweep``).

``tests/data/predictor_reference.npz`` holds these outputs as the code BEFORE the one-predictor redesign
(commit 51dbb1c, ``main`` before issue 17) computed them, under one thread:

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/predictor_cases.py tests/data/predictor_reference.npz

``tests/test_predictor_regression.py`` computes them again with the current code and compares.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import eval_data  # noqa: E402
from conftest import write_tiny_hf, write_tiny_open_clip  # noqa: E402

CHELSEA = os.path.join(os.path.dirname(HERE), "examples", "chelsea.png")


def _images(n=2):
    rng = np.random.default_rng(7)
    sizes = [(30, 40), (36, 28)]  # (H, W)
    return [Image.fromarray(rng.integers(0, 256, (*sizes[i], 3), dtype=np.uint8)) for i in range(n)]


def _seg_arrays(prefix, seg, out):
    out[f"{prefix}/labels"] = seg.labels.cpu().numpy()
    out[f"{prefix}/probabilities"] = seg.probabilities.cpu().numpy()
    out[f"{prefix}/scores"] = seg.scores.cpu().numpy()
    out[f"{prefix}/confidence"] = seg.confidence.cpu().numpy()


LIBRARY_CASES = {  # GEMModel.segment keyword arguments
    "auto": dict(),
    "none": dict(background="none"),
    "prompts": dict(background="sky,road", threshold=0.3, reduction="max_then_softmax"),
    "none_thr": dict(background="none", threshold=0.6, logit_scale=40.0),
    "out_size": dict(out_size=(24, 20), templates=["a photo of a {}.", "a {} in the wild."]),
}


def library_outputs(models: dict, out: dict) -> None:
    images = _images()
    for backend, model in models.items():
        for name, kw in LIBRARY_CASES.items():
            seg = model.segment(images, ["cat", "dog", "grass"], size=32, **kw)
            _seg_arrays(f"library/{backend}/{name}", seg, out)


CLI_CASES = {
    "auto": ["-c", "cat,dog", "--grid", "--save-raw"],
    "none": ["-c", "cat,dog,sofa", "--background", "none", "--save-raw", "--batch-size", "2"],
    "prompts": ["-c", "cat", "--background", "sky,wall", "--threshold", "0.2", "--reduction", "max_then_softmax",
                "--save-raw", "--logit-scale", "50"],
}


def cli_outputs(files: dict, tmp: str, out: dict) -> None:
    import json

    from gemseg.cli import main

    cfg, ckpt = files["open_clip"]
    paths = []
    for i, im in enumerate(_images()):
        paths.append(os.path.join(tmp, "cli-in", f"im{i}.png"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        im.save(paths[-1])
    for name, extra in CLI_CASES.items():
        dest = os.path.join(tmp, f"cli-{name}")
        code = main(["segment", *paths, "--model", cfg, "--checkpoint", ckpt, "--depth", "3", "--size", "32",
                     "--device", "cpu", "-q", "-o", dest, *extra])
        assert code == 0, name
        for i in range(len(paths)):
            folder = os.path.join(dest, f"im{i}.png")
            out[f"cli/{name}/im{i}/labels"] = np.asarray(Image.open(os.path.join(folder, "labels.png")))
            out[f"cli/{name}/im{i}/scores"] = np.load(os.path.join(folder, "scores.npy"))
            with open(os.path.join(folder, "record.json"), encoding="utf-8") as f:
                rec = json.load(f)
            out[f"cli/{name}/im{i}/stats"] = np.array(
                [[c["pixels"], c["fraction"], np.nan if c["mean_score"] is None else c["mean_score"],
                  np.nan if c["mean_probability"] is None else c["mean_probability"]] for c in rec["classes"]])


DEMO_CASES = {  # demo.logic.run keyword arguments (segmentation mode)
    "auto": dict(),
    "none": dict(background="none"),
    "prompts": dict(background="sky, water", threshold=0.3),
    "view": dict(method="clearclip"),
    "gem": dict(depth=2, iterations=2),
}


def demo_outputs(demo_model, out: dict) -> None:
    from gemseg.demo import logic

    for name, kw in DEMO_CASES.items():
        r = logic.run(demo_model, CHELSEA, "cat, eye, nose", "segmentation", size=(32, 48), **kw)
        out[f"demo/{name}/rows"] = np.array([[row[1], row[2], np.nan if row[3] is None else row[3]]
                                             for row in r.rows()], dtype=np.float64).reshape(-1, 3)
        out[f"demo/{name}/names"] = np.array([row[0] for row in r.rows()], dtype=str)


SMALL = dict(size=48, crop=32, stride=16, templates="single")
EVAL_CASES = {  # (preset, overrides)
    "gem": ("gem", dict(size=48)),
    "sclip": ("sclip", SMALL),
    # mode pinned: the reference was recorded when the naclip preset slid windows on VOC21 (NACLIP's v2 configs,
    # read since, run it whole-image); the case checks the code paths, not the preset's values
    "naclip": ("naclip", dict(SMALL, mode="slide", pamr_steps=3, pamr_dilations=(1, 2))),
    "names_noarea": ("sclip", dict(SMALL, vocabulary="names", area_threshold=None, mode="whole", resize="fixed")),
}
SWEEP = ["prob_threshold=none,0.06,0.3", "logit_scale=40,100", "area_threshold=none,0.1"]


def eval_outputs(model, tmp: str, out: dict) -> None:
    from gemseg.eval import evaluate, load_dataset_spec, resolve_protocol
    from gemseg.eval.sweep import parse_sweep, run_sweep

    voc = eval_data.write_voc(os.path.join(tmp, "voc", "VOC2012"), n=5)
    spec = load_dataset_spec("voc21")
    for name, (preset, kw) in EVAL_CASES.items():
        protocol, _ = resolve_protocol(preset, spec, **kw)
        dest = os.path.join(tmp, f"eval-{name}")
        result = evaluate(model, spec, voc, protocol, out_dir=dest, progress=False, save_preds=5)
        out[f"eval/{name}/counts"] = np.array([[c["gt_pixels"], c["pred_pixels"]]
                                               for c in result["metrics"]["per_class"]], dtype=np.int64)
        for f in sorted(os.listdir(os.path.join(dest, "preds"))):
            out[f"eval/{name}/pred/{f}"] = np.asarray(Image.open(os.path.join(dest, "preds", f)))
    protocol, _ = resolve_protocol("sclip", spec, **SMALL)
    table = run_sweep(model, spec, voc, protocol, parse_sweep(SWEEP), out_dir=os.path.join(tmp, "sweep"),
                      progress=False, plot=False)
    out["sweep/miou"] = np.array([row["all"]["mIoU"] for row in table["rows"]], dtype=np.float64)
    oi = eval_data.write_openimages(os.path.join(tmp, "oi"))
    spec = load_dataset_spec("openimages_v7")
    protocol, _ = resolve_protocol("gem", spec, size=48)
    result = evaluate(model, spec, oi, protocol, out_dir=os.path.join(tmp, "eval-points"), progress=False)
    out["eval/points/counts"] = np.array([[c["tp"], c["fp"], c["fn"]] for c in result["metrics"]["per_class"]],
                                         dtype=np.int64)


def compute_all(tmp: str) -> dict[str, np.ndarray]:
    """Every recorded output, as ``{key: array}``."""
    from gemseg import create_model

    warnings.filterwarnings("ignore")
    files = {"open_clip": write_tiny_open_clip(tmp), "hf": write_tiny_hf(os.path.join(tmp, "hf"))}
    cfg, ckpt = files["open_clip"]
    models = {"open_clip": create_model(cfg, checkpoint=ckpt, depth=3), "hf": create_model(files["hf"], depth=3)}
    out: dict[str, np.ndarray] = {}
    library_outputs(models, out)
    cli_outputs(files, tmp, out)
    torch.manual_seed(0)
    demo_outputs(create_model(cfg, depth=3), out)  # random weights, as the demo tests' model
    eval_outputs(models["open_clip"], tmp, out)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        arrays = compute_all(tmp)
    np.savez_compressed(sys.argv[1], **arrays)
    print(f"{len(arrays)} arrays -> {sys.argv[1]}")
