"""Label maps in the formats labeling and data tools import (numpy/PIL; COCO needs ``pycocotools``).

Every writer takes the same input: a list of :class:`ExportItem` (one label map [H, W] per image,
0 = background, k = ``classes[k - 1]``) and the class names.

- ``coco``: one COCO JSON (``images``, ``categories`` 1..C, ``annotations``) with one
  run-length-encoded mask per class present in an image (``pycocotools.mask.encode``). FiftyOne
  (``fo.types.COCODetectionDataset``), CVAT ("COCO 1.0") and Label Studio's COCO converter read it.
- ``cvat``: CVAT's "Segmentation mask 1.1" layout: ``labelmap.txt`` (``name:r,g,b::``),
  ``SegmentationClass/<stem>.png`` in those colours, ``ImageSets/Segmentation/default.txt``; zip
  the folder to import it.
- ``masks``: an indexed PNG per image (pixel value = label) in ``labels/`` and ``classes.json``
  (``{"0": "background", "1": ...}``): FiftyOne's ``ImageSegmentationDirectory`` with those mask
  targets, and any tool that reads PASCAL VOC style label maps.
- ``labelstudio``: Label Studio tasks (``tasks.json``: one task per image, ``data.image`` the image's
  path, one ``brushlabels`` prediction per class present, its mask in Label Studio's brush RLE) and
  the labeling config they match (``labelstudio-config.xml``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

FORMATS = ("coco", "cvat", "masks", "labelstudio")
LS_BRUSH = "tag"  # our choice: the <BrushLabels name=...> of the config and each result's from_name
LS_IMAGE = "image"  # our choice: the <Image name=...> (to_name) and the task's data key ($image)
_LS_RUN_BITS = (3, 4, 8, 16)  # bits of (run length - 1) selectable by a 2-bit index; label-studio-converter's defaults


@dataclass(frozen=True)
class ExportItem:
    """One image's result: ``labels`` uint8 [H, W] at the image's own size (H, W)."""

    image_path: str  # the image file the annotations belong to
    stem: str  # unique file-name stem for per-image files (no extension, no folders)
    labels: np.ndarray


def coco_rle(mask: np.ndarray) -> dict:
    """Boolean mask [H, W] -> COCO RLE ``{"size": [H, W], "counts": str}`` (pycocotools' compressed form)."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise ImportError("COCO exports need pycocotools: pip install 'gemseg[export]' "
                          "(or pip install pycocotools)") from e
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def coco_dataset(items: Sequence[ExportItem], classes: Sequence[str]) -> dict:
    """The COCO JSON of ``items``: category k is ``classes[k - 1]`` (label k of the maps); background
    (label 0) is no category. One annotation per (image, class present), ``iscrowd`` 0."""
    images, annotations = [], []
    for image_id, item in enumerate(items, 1):
        h, w = item.labels.shape
        images.append({"id": image_id, "file_name": item.image_path, "width": int(w), "height": int(h)})
        for k in np.unique(item.labels).tolist():
            if k == 0 or k > len(classes):
                continue
            mask = item.labels == k
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(k),
                                "segmentation": coco_rle(mask), "area": int(mask.sum()), "bbox": _bbox(mask),
                                "iscrowd": 0})
    categories = [{"id": k, "name": name, "supercategory": "gemseg"} for k, name in enumerate(classes, 1)]
    return {"info": {"description": "gemseg segment", "version": "1.0"}, "images": images,
            "annotations": annotations, "categories": categories}


def write_coco(path: str, items: Sequence[ExportItem], classes: Sequence[str]) -> None:
    data = coco_dataset(items, classes)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def write_cvat(folder: str, items: Sequence[ExportItem], classes: Sequence[str], colors: np.ndarray) -> None:
    """CVAT "Segmentation mask 1.1": ``colors`` [1 + C, 3] are the RGB of background and each class."""
    os.makedirs(os.path.join(folder, "SegmentationClass"), exist_ok=True)
    os.makedirs(os.path.join(folder, "ImageSets", "Segmentation"), exist_ok=True)
    names = ["background", *classes]
    colors = np.asarray(colors, dtype=np.uint8).copy()
    colors[0] = 0  # CVAT: (0, 0, 0) is background
    with open(os.path.join(folder, "labelmap.txt"), "w", encoding="utf-8") as f:
        f.write("# label:color_rgb:parts:actions\n")
        for name, c in zip(names, colors):
            f.write(f"{name.replace(':', ' ')}:{int(c[0])},{int(c[1])},{int(c[2])}::\n")
    for item in items:
        Image.fromarray(colors[item.labels]).save(os.path.join(folder, "SegmentationClass", item.stem + ".png"))
    with open(os.path.join(folder, "ImageSets", "Segmentation", "default.txt"), "w", encoding="utf-8") as f:
        f.write("".join(item.stem + "\n" for item in items))


def write_masks(folder: str, items: Sequence[ExportItem], classes: Sequence[str]) -> None:
    """``labels/<stem>.png`` (values = labels) and ``classes.json`` mapping each value to its name."""
    os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    for item in items:
        Image.fromarray(item.labels.astype(np.uint8)).save(os.path.join(folder, "labels", item.stem + ".png"))
    with open(os.path.join(folder, "classes.json"), "w", encoding="utf-8") as f:
        json.dump({str(k): name for k, name in enumerate(["background", *classes])}, f, ensure_ascii=False, indent=2)


def brush_rle(mask: np.ndarray) -> list[int]:
    """Boolean mask [H, W] -> Label Studio's brush RLE: the bytes (ints 0..255) of a bit stream over
    the mask's RGBA pixels, row-major, 255 in all four channels inside the mask, 0 outside.

    Bit stream (most significant bit first): 32 bits value count (H * W * 4), 5 bits word size - 1
    (8 bits), 4 x 4 bits the run-length widths - 1 (3, 4, 8, 16); then per run: 1 (a repeat), 2 bits
    index of the width, that many bits run length - 1, one 8-bit value; zero bits pad the last byte.
    """
    values = np.repeat(np.asarray(mask, dtype=bool).reshape(-1), 4)  # (H * W * 4,) RGBA
    n = int(values.size)
    bits = [f"{n:032b}", f"{8 - 1:05b}", *(f"{w - 1:04b}" for w in _LS_RUN_BITS)]
    starts = np.flatnonzero(np.diff(values.view(np.uint8), prepend=2))  # first index of each run
    lengths = np.diff(np.append(starts, n))
    for start, length in zip(starts.tolist(), lengths.tolist()):
        word = "11111111" if values[start] else "00000000"
        while length > 0:
            chunk = min(length, 1 << _LS_RUN_BITS[-1])
            index = next(i for i, w in enumerate(_LS_RUN_BITS) if chunk <= 1 << w)
            bits.append(f"1{index:02b}{chunk - 1:0{_LS_RUN_BITS[index]}b}{word}")
            length -= chunk
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return list(int(stream, 2).to_bytes(len(stream) // 8, "big"))


def labelstudio_tasks(items: Sequence[ExportItem], classes: Sequence[str]) -> list[dict]:
    """Label Studio tasks: one per image, ``data.image`` its path, one prediction whose results are a
    ``brushlabels`` mask (:func:`brush_rle`) per class present (background, label 0, is none)."""
    tasks = []
    for item in items:
        h, w = item.labels.shape
        results = []
        for k in np.unique(item.labels).tolist():
            if k == 0 or k > len(classes):
                continue
            results.append({"id": f"{item.stem}-{k}", "from_name": LS_BRUSH, "to_name": LS_IMAGE,
                            "type": "brushlabels", "original_width": int(w), "original_height": int(h),
                            "image_rotation": 0,
                            "value": {"format": "rle", "rle": brush_rle(item.labels == k),
                                      "brushlabels": [classes[k - 1]]}})
        tasks.append({"data": {LS_IMAGE: item.image_path},
                      "predictions": [{"model_version": "gemseg", "result": results}]})
    return tasks


def labelstudio_config(classes: Sequence[str], colors: np.ndarray) -> str:
    """The labeling config the tasks match: an Image and BrushLabels with one Label per class, coloured
    like the overlays (``colors`` [1 + C, 3] RGB, row 0 background)."""
    from xml.sax.saxutils import quoteattr

    colors = np.asarray(colors, dtype=np.uint8)
    labels = "".join(f"\n    <Label value={quoteattr(name)} background=\"#{bytes(c.tolist()).hex()}\"/>"
                     for name, c in zip(classes, colors[1:]))
    return (f'<View>\n  <Image name="{LS_IMAGE}" value="${LS_IMAGE}" zoom="true"/>\n'
            f'  <BrushLabels name="{LS_BRUSH}" toName="{LS_IMAGE}">{labels}\n  </BrushLabels>\n</View>\n')


def write_labelstudio(folder: str, items: Sequence[ExportItem], classes: Sequence[str], colors: np.ndarray) -> None:
    """``tasks.json`` (:func:`labelstudio_tasks`) and ``labelstudio-config.xml`` in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tasks.json"), "w", encoding="utf-8") as f:
        json.dump(labelstudio_tasks(items, classes), f, ensure_ascii=False)
    with open(os.path.join(folder, "labelstudio-config.xml"), "w", encoding="utf-8") as f:
        f.write(labelstudio_config(classes, colors))


def parse_formats(text: str) -> tuple[str, ...]:
    """``"coco,masks"`` -> ("coco", "masks"); unknown names are a ValueError naming the choices."""
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"--export {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return names


__all__ = ["FORMATS", "ExportItem", "coco_rle", "coco_dataset", "write_coco", "write_cvat", "write_masks",
           "brush_rle", "labelstudio_tasks", "labelstudio_config", "write_labelstudio", "parse_formats"]
