"""Tiny synthetic datasets in the exact on-disk layouts `gemseg eval` reads (nothing is downloaded).

Each writer makes a few small images with blocky label maps that carry the dataset's label quirks:
VOC's 255 object borders and palette PNGs, PASCAL-Context's 0 background, ADE20K's 0 "other",
COCO-Stuff's raw stuffthingmaps ids, Cityscapes' labelIds in city folders, Open Images' point CSVs.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(40, 56), (48, 40), (36, 36), (44, 60), (40, 40), (52, 44)]  # (H, W), deliberately varied


def _image(rng, h, w):
    base = rng.integers(0, 256, size=(1, 1, 3))
    noise = rng.integers(-60, 60, size=(h, w, 3))
    return np.clip(base + noise + np.linspace(0, 80, w)[None, :, None], 0, 255).astype(np.uint8)


def _blocks(rng, h, w, values, border=None):
    """A label map of 2x2 blocks with values drawn from ``values``; ``border`` marks block edges."""
    lab = np.empty((h, w), dtype=np.uint8)
    vals = rng.choice(values, size=4)
    lab[: h // 2, : w // 2], lab[: h // 2, w // 2:] = vals[0], vals[1]
    lab[h // 2:, : w // 2], lab[h // 2:, w // 2:] = vals[2], vals[3]
    if border is not None:
        lab[h // 2 - 1: h // 2 + 1, :] = border
        lab[:, w // 2 - 1: w // 2 + 1] = border
    return lab


def _save(path: Path, array, palette=None):
    """A label PNG: grayscale, or indexed with ``palette`` (putpalette turns an L image into P, values kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if palette is not None:
        im.putpalette(palette)
    im.save(path)


def _voc_palette():
    from gemseg.eval.datasets import default_palette

    return [v for c in default_palette(256) for v in c]


def write_voc(root, n: int = 4, seed: int = 0) -> Path:
    """VOCdevkit/VOC2012 layout: JPEGImages, SegmentationClass (palette PNGs, 255 borders), val.txt."""
    root, rng = Path(root), np.random.default_rng(seed)
    ids = [f"2007_{i:06d}" for i in range(n + 1)]
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(ids):
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(_image(rng, h, w)).save(root / "JPEGImages" / f"{image_id}.jpg")
        _save(root / "SegmentationClass" / f"{image_id}.png", _blocks(rng, h, w, [0, 0, 1, 7, 12, 15], border=255),
              palette=_voc_palette())
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True, exist_ok=True)
    (split / "val.txt").write_text("\n".join(ids[:n]) + "\n")  # the last image is "train" only
    return root


def write_context(root, n: int = 3, seed: int = 1) -> Path:
    """VOCdevkit/VOC2010 layout with SegmentationClassContext (0 = background, 1..59)."""
    root, rng = Path(root), np.random.default_rng(seed)
    ids = [f"2008_{i:06d}" for i in range(n)]
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(ids):
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(_image(rng, h, w)).save(root / "JPEGImages" / f"{image_id}.jpg")
        _save(root / "SegmentationClassContext" / f"{image_id}.png", _blocks(rng, h, w, [0, 1, 15, 59]))
    split = root / "ImageSets" / "SegmentationContext"
    split.mkdir(parents=True, exist_ok=True)
    (split / "val.txt").write_text("\n".join(ids) + "\n")
    return root


def write_ade(root, n: int = 3, seed: int = 2) -> Path:
    """ADEChallengeData2016 layout: 0 is "other" (ignored), 1..150 are the classes."""
    root, rng = Path(root), np.random.default_rng(seed)
    (root / "images" / "validation").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image_id = f"ADE_val_{i + 1:08d}"
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(_image(rng, h, w)).save(root / "images" / "validation" / f"{image_id}.jpg")
        _save(root / "annotations" / "validation" / f"{image_id}.png", _blocks(rng, h, w, [0, 1, 3, 150]))
    return root


def write_coco_stuff_raw(root, n: int = 3, seed: int = 3) -> Path:
    """coco_stuff164k layout with the raw stuffthingmaps (<id>.png: 0-181 ids, 255 unlabeled);
    run gemseg.eval.convert to add the _labelTrainIds.png maps."""
    root, rng = Path(root), np.random.default_rng(seed)
    (root / "images" / "val2017").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image_id = f"{i + 139:012d}"
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(_image(rng, h, w)).save(root / "images" / "val2017" / f"{image_id}.jpg")
        # 0 person, 2 car, 89 toothbrush (thing 80), 91 banner (stuff), 181 wood (last stuff), 255 unlabeled
        _save(root / "annotations" / "val2017" / f"{image_id}.png", _blocks(rng, h, w, [0, 2, 89, 91, 181, 255]))
    return root


def write_cityscapes_raw(root, seed: int = 4) -> Path:
    """cityscapes layout with gtFine labelIds in city folders; run the converter for labelTrainIds."""
    root, rng = Path(root), np.random.default_rng(seed)
    for i, (city, k) in enumerate([("frankfurt", 294), ("frankfurt", 576), ("lindau", 19)]):
        stem = f"{city}_000000_{k:06d}"
        h, w = SIZES[i % len(SIZES)]
        img = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(rng, h, w)).save(img)
        # 0 unlabeled, 7 road, 26 car, 33 bicycle, 4 static (not evaluated)
        _save(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", _blocks(rng, h, w, [0, 7, 26, 33, 4]))
    return root


OI_CLASSES = [("/m/01g317", "Person"), ("/m/0k4j", "Car"), ("/m/07j7r", "Tree"), ("/m/083wq", "Wheel")]


def write_openimages(root, n: int = 3, seed: int = 5) -> Path:
    """Open Images V7 layout: validation/<id>.jpg, the point-label CSV (all its columns) and the class
    descriptions CSV. Includes unsure points and a class that only ever gets unsure answers."""
    root, rng = Path(root), np.random.default_rng(seed)
    (root / "validation").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image_id = f"{rng.integers(0, 16 ** 15):016x}"
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(_image(rng, h, w)).save(root / "validation" / f"{image_id}.jpg")
        for mid, _ in OI_CLASSES[:3]:
            for _ in range(4):
                answer = rng.choice(["yes", "no", "unsure"], p=[0.45, 0.45, 0.1])
                rows.append([image_id, f"{rng.random():.4f}", f"{rng.random():.4f}", mid, answer, "ih",
                             "2", "1", "0", ""])
        rows.append([image_id, "0.5", "0.5", OI_CLASSES[3][0], "unsure", "cs", "1", "1", "1", ""])
    with open(root / "oidv7-val-annotations-point-labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "X", "Y", "Label", "EstimatedYesNo", "Source", "YesVotes", "NoVotes",
                         "UnsureVotes", "TextLabel"])
        writer.writerows(rows)
    with open(root / "oidv7-class-descriptions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["LabelName", "DisplayName"])
        writer.writerows(OI_CLASSES)
    return root
