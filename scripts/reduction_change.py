"""How much `gemseg segment` outputs change with the reduction order (gemseg 0.1.0 -> now), on the tiny
random models of the test suite (no downloads). Run from the repository root:

    PYTHONPATH=src python scripts/reduction_change.py

Old pipeline (0.1.0): max of cosines per class at the model size, resize the class scores to the output
size, softmax over classes. New default: resize the query cosines, softmax over all queries, then max
per class ("softmax_then_max"). Prints, per model and background rule, the largest change of any class
probability, the largest change of the probability of each pixel's label, the fraction of pixels
whose label changes, and the fraction of background pixels before and after.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from conftest import tiny_hf_backbone, tiny_open_clip_backbone  # noqa: E402
from gemseg import GEMConfig, GEMModel, Segmenter  # noqa: E402
from gemseg.segment import background_rule  # noqa: E402
from gemseg.postprocess import reduce_queries  # noqa: E402
from gemseg.segment import resize_maps  # noqa: E402

CLASSES = ["cat", "dog", "sofa"]
MODEL_SIZE = 32  # the CLI tests' --size
OUT = (30, 40)  # output (H, W) of a 40x30 picture


def old_pipeline(sims: torch.Tensor, bg) -> tuple[torch.Tensor, torch.Tensor]:
    """gemseg 0.1.0 `segment`: sims [Q, h, w] -> (labels [H, W], class probabilities [1 + C, H, W])."""
    C, scale = len(CLASSES), bg.logit_scale
    if bg.prompts:
        scores = reduce_queries(sims[None], list(range(1, C + 1)) + [0] * len(bg.prompts), C + 1)[0]
        probs = torch.softmax(scale * resize_maps(scores, OUT), dim=0)
        conf, labels = probs.max(0)
    else:
        pc = torch.softmax(scale * resize_maps(sims, OUT), dim=0)
        probs = torch.cat([torch.zeros_like(pc[:1]), pc])
        conf, labels = pc.max(0)
        labels = labels + 1
    if bg.threshold is not None:
        labels = torch.where(conf < bg.threshold, torch.zeros_like(labels), labels)
    return labels, probs


def main() -> None:
    import tempfile

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (OUT[0], OUT[1], 3), dtype=np.uint8)) for _ in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, backbone in (("open_clip tiny", tiny_open_clip_backbone()), ("hf tiny", tiny_hf_backbone(tmp))):
            model = GEMModel(backbone, config=GEMConfig(depth=3))
            for rule, thr in (("auto", None), ("none", None), ("none", 0.5)):
                bg = background_rule(rule, CLASSES, threshold=thr)
                seg = Segmenter.from_classes(model, CLASSES, background=bg, size=MODEL_SIZE)
                sims = seg.query_maps(seg.prepare(pictures))  # (B, Q, h, w)
                dp = dc = changed = bg_old = bg_new = 0.0
                for s in sims:
                    old_labels, old_probs = old_pipeline(s, bg)
                    new = seg.segmentation(resize_maps(s, OUT)[None])
                    dp = max(dp, float((new.probabilities[0] - old_probs).abs().max()))
                    old_conf = old_probs.gather(0, old_labels[None])[0]
                    new_conf = new.probabilities[0].gather(0, new.labels[0][None])[0]
                    dc = max(dc, float((new_conf - old_conf).abs().max()))
                    changed += float((new.labels[0] != old_labels).double().mean()) / len(sims)
                    bg_old += float((old_labels == 0).double().mean()) / len(sims)
                    bg_new += float((new.labels[0] == 0).double().mean()) / len(sims)
                print(f"{name:15} background={rule:4} threshold={bg.threshold}: max |d class prob| {dp:.4f}, "
                      f"max |d label prob| {dc:.4f}, labels changed {100 * changed:.2f}%, "
                      f"background {100 * bg_old:.1f}% -> {100 * bg_new:.1f}%")


if __name__ == "__main__":
    main()
