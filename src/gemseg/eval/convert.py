"""Label conversions into the layouts gemseg reads (each a lookup table from raw to class values).

    python -m gemseg.eval.convert coco-stuff  coco_stuff164k
    python -m gemseg.eval.convert coco-object coco_stuff164k coco_object
    python -m gemseg.eval.convert cityscapes  cityscapes

- ``coco-stuff``: COCO-Stuff's ``stuffthingmaps`` PNGs (``annotations/<split>/<id>.png``, values 0-181 and
  255 unlabeled) -> ``<id>_labelTrainIds.png`` beside them: the 171 used ids numbered 0-170, 255 ignored.
- ``coco-object``: the same maps (or the ``_labelTrainIds.png`` ones) -> ``<dst>/annotations/<split>/
  <id>_instanceTrainIds.png``: the 80 thing classes numbered 1-80, every stuff and unlabeled pixel 0
  (background), the convention of GroupViT/TCL/SCLIP's COCO-Object. ``<dst>/images`` links to the source
  images.
- ``cityscapes``: ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png`` (the 19
  evaluated classes numbered 0-18, everything else 255), as cityscapesScripts' ``createTrainIdLabelImgs``.
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

# stuffthingmaps values (COCO category id - 1) of the 80 thing classes, in train-id order
COCO_THING_IDS = (*range(0, 11), *range(12, 25), 26, 27, *range(30, 44), *range(45, 65), 66, 69,
                  *range(71, 82), *range(83, 90))
COCO_STUFF_IDS = tuple(range(91, 182))  # the 91 stuff classes, train ids 80-170
# Cityscapes labelIds of the 19 evaluated classes, in train-id order
CITYSCAPES_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def coco_stuff_lut() -> np.ndarray:
    lut = np.full(256, 255, dtype=np.uint8)
    for train_id, raw in enumerate(COCO_THING_IDS + COCO_STUFF_IDS):
        lut[raw] = train_id
    return lut


def coco_object_lut(source: str = "raw") -> np.ndarray:
    """Raw stuffthingmaps values (``source="raw"``) or COCO-Stuff train ids (``"trainids"``) -> COCO-Object."""
    lut = np.zeros(256, dtype=np.uint8)  # stuff and unlabeled become background 0
    things = COCO_THING_IDS if source == "raw" else range(80)
    for i, raw in enumerate(things):
        lut[raw] = i + 1
    return lut


def cityscapes_lut() -> np.ndarray:
    lut = np.full(256, 255, dtype=np.uint8)
    for train_id, raw in enumerate(CITYSCAPES_IDS):
        lut[raw] = train_id
    return lut


def convert_file(src: Path, dst: Path, lut: np.ndarray) -> None:
    with Image.open(src) as im:
        raw = np.asarray(im)
    if raw.ndim != 2:
        raise ValueError(f"{src}: expected a single-channel label PNG, got shape {raw.shape}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp.png")
    Image.fromarray(lut[raw]).save(tmp)
    os.replace(tmp, dst)


def convert_files(pairs: list[tuple[Path, Path]], lut: np.ndarray, *, workers: int = 1) -> int:
    if not pairs:
        raise FileNotFoundError("no label files found to convert")
    job = partial(_convert_pair, lut=lut)
    if workers > 1:
        with Pool(workers) as pool:
            pool.map(job, pairs, chunksize=64)
    else:
        for pair in pairs:
            job(pair)
    return len(pairs)


def _convert_pair(pair, lut):
    convert_file(pair[0], pair[1], lut)


def _raw_coco_maps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if "TrainIds" not in p.name)


def coco_stuff(root: Path, split: str = "val2017", workers: int = 1) -> int:
    folder = root / "annotations" / split
    pairs = [(p, p.with_name(p.stem + "_labelTrainIds.png")) for p in _raw_coco_maps(folder)]
    return convert_files(pairs, coco_stuff_lut(), workers=workers)


def coco_object(src_root: Path, dst_root: Path, split: str = "val2017", workers: int = 1) -> int:
    folder, out = src_root / "annotations" / split, dst_root / "annotations" / split
    raw = _raw_coco_maps(folder)
    if raw:
        pairs, lut = [(p, out / f"{p.stem}_instanceTrainIds.png") for p in raw], coco_object_lut("raw")
    else:
        pairs = [(p, out / p.name.replace("_labelTrainIds.png", "_instanceTrainIds.png"))
                 for p in sorted(folder.glob("*_labelTrainIds.png"))]
        lut = coco_object_lut("trainids")
    n = convert_files(pairs, lut, workers=workers)
    images = dst_root / "images"
    if not images.exists() and (src_root / "images").exists() and src_root.resolve() != dst_root.resolve():
        images.symlink_to((src_root / "images").resolve(), target_is_directory=True)
    return n


def cityscapes(root: Path, split: str = "val", workers: int = 1) -> int:
    files = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
    pairs = [(p, p.with_name(p.name.replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"))) for p in files]
    return convert_files(pairs, cityscapes_lut(), workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemseg.eval.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("coco-stuff", "coco-object", "cityscapes"))
    parser.add_argument("root", help="dataset root (coco_stuff164k or cityscapes folder)")
    parser.add_argument("dst", nargs="?", help="coco-object: output root (default: <root>/../coco_object)")
    parser.add_argument("--split", default=None, help="split folder (default: val2017 for COCO, val for Cityscapes)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.kind == "coco-stuff":
        n = coco_stuff(root, args.split or "val2017", args.workers)
    elif args.kind == "coco-object":
        n = coco_object(root, Path(args.dst) if args.dst else root.parent / "coco_object", args.split or "val2017",
                        args.workers)
    else:
        n = cityscapes(root, args.split or "val", args.workers)
    print(f"converted {n} label maps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
