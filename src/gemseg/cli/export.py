"""``gemseg segment --export``: the run's label maps in the formats labeling tools import
(:mod:`gemseg.export`), written into ``DIR/export/`` from the finished images on disk, so that a resumed
or data-parallel run exports every image, in the same order."""
from __future__ import annotations

import json
import os

from .output import RECORD_FILE, Layout

EXPORT_DIR = "export"


def finished_records(layout: Layout) -> list[tuple[str, dict]]:
    """``(folder, record)`` of every image of ``layout``'s settings, sorted by key."""
    found = []
    for folder, dirs, files in os.walk(layout.root):
        dirs[:] = sorted(d for d in dirs if d != EXPORT_DIR or folder != layout.root)
        if RECORD_FILE not in files:
            continue
        try:
            with open(os.path.join(folder, RECORD_FILE), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if record.get("settings_id") == layout.id:
            found.append((folder, record))
    return sorted(found, key=lambda fr: fr[1].get("key", ""))


def _stems(keys: list[str]) -> list[str]:
    """Unique file-name stems: the key without its extension, folders joined by '__'."""
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        stem = os.path.splitext(key)[0].replace("/", "__") or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def export_run(layout: Layout, formats: tuple[str, ...], classes: list[str], colors) -> list[str]:
    """Write ``formats`` of every finished image into ``DIR/export/``; returns the paths written.
    Label maps are scaled back to each image's own size (nearest neighbour), so that the annotations
    fit the image files they name."""
    import numpy as np
    from PIL import Image

    from ..export import ExportItem, write_coco, write_cvat, write_labelstudio, write_masks

    records = finished_records(layout)
    items = []
    for (folder, record), stem in zip(records, _stems([r.get("key", "") for _, r in records])):
        with Image.open(os.path.join(folder, record["files"]["labels"])) as im:
            labels = im.resize((record["width"], record["height"]), Image.NEAREST) \
                if im.size != (record["width"], record["height"]) else im.copy()
        items.append(ExportItem(record["image"], stem, np.asarray(labels, dtype=np.uint8)))
    root = os.path.join(layout.root, EXPORT_DIR)
    written = []
    for name in formats:
        if name == "coco":
            path = os.path.join(root, "coco.json")
            write_coco(path, items, classes)
        elif name == "cvat":
            path = os.path.join(root, "cvat")
            write_cvat(path, items, classes, colors)
        elif name == "labelstudio":
            path = os.path.join(root, "labelstudio")
            write_labelstudio(path, items, classes, colors)
        else:
            path = os.path.join(root, "masks")
            write_masks(path, items, classes)
        written.append(path)
    return written
