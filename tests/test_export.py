"""Exports for labeling tools: COCO RLE per class (read back with pycocotools), CVAT's Segmentation mask
1.1 layout, indexed masks with their classes, Label Studio brush tasks (decoded by a reader written
here from the format description); `gemseg segment --export`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cli_util import model_args, record, run_cli, write_image
from gemseg.export import (ExportItem, brush_rle, coco_dataset, coco_rle, parse_formats, write_cvat,
                           write_labelstudio, write_masks)



@pytest.fixture
def mask_utils():
    """pycocotools.mask: a skip that says why without it, a failure under GEMSEG_REQUIRE_BACKENDS=1 (CI)."""
    from demo_helpers import require

    return require("pycocotools.mask")


def _labels():
    labels = np.zeros((30, 40), dtype=np.uint8)
    labels[2:10, 5:20] = 1
    labels[15:28, 22:39] = 3  # class 2 is absent
    return labels


def test_coco_rle_round_trips_through_pycocotools(mask_utils):
    mask = _labels() == 3
    rle = coco_rle(mask)
    assert rle["size"] == [30, 40] and isinstance(rle["counts"], str)
    back = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(back.astype(bool), mask)


def test_coco_dataset_has_one_annotation_per_class_present(mask_utils):
    data = coco_dataset([ExportItem("/data/a.jpg", "a", _labels())], ["cat", "dog", "sofa"])
    assert [c["name"] for c in data["categories"]] == ["cat", "dog", "sofa"]
    assert data["images"] == [{"id": 1, "file_name": "/data/a.jpg", "width": 40, "height": 30}]
    by_class = {a["category_id"]: a for a in data["annotations"]}
    assert sorted(by_class) == [1, 3]  # no annotation for the absent class, none for background
    assert by_class[1]["area"] == 8 * 15 and by_class[1]["bbox"] == [5.0, 2.0, 15.0, 8.0]
    assert by_class[3]["area"] == 13 * 17 and by_class[3]["iscrowd"] == 0


def test_cvat_and_masks_layouts(tmp_path):
    labels = _labels()
    items = [ExportItem("/data/a.jpg", "a", labels)]
    colors = np.array([[9, 9, 9], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    write_cvat(str(tmp_path / "cvat"), items, ["cat", "dog", "sofa"], colors)
    lines = (tmp_path / "cvat" / "labelmap.txt").read_text().splitlines()[1:]
    assert lines == ["background:0,0,0::", "cat:255,0,0::", "dog:0,255,0::", "sofa:0,0,255::"]
    rgb = np.asarray(Image.open(tmp_path / "cvat" / "SegmentationClass" / "a.png").convert("RGB"))
    assert (rgb[labels == 3] == [0, 0, 255]).all() and (rgb[labels == 0] == 0).all()
    assert (tmp_path / "cvat" / "ImageSets" / "Segmentation" / "default.txt").read_text() == "a\n"
    write_masks(str(tmp_path / "masks"), items, ["cat", "dog", "sofa"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "labels" / "a.png")), labels)
    assert json.loads((tmp_path / "masks" / "classes.json").read_text()) == {
        "0": "background", "1": "cat", "2": "dog", "3": "sofa"}


def _decode_brush(rle: list[int], height: int, width: int) -> np.ndarray:
    """Label Studio's brush RLE -> alpha channel uint8 [H, W], from the format: MSB-first bits; 32 bits
    value count, 5 bits word size - 1, four 4-bit run widths - 1; per chunk a flag bit (1: one word
    repeated, 0: that many words), a 2-bit width index, the run length - 1, then the word(s)."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    pos = 0

    def take(n):
        nonlocal pos
        value = int("".join(map(str, bits[pos:pos + n])) or "0", 2)
        pos += n
        return value

    count, word = take(32), take(5) + 1
    widths = [take(4) + 1 for _ in range(4)]
    out = []
    while len(out) < count:
        repeat = take(1)
        length = take(widths[take(2)]) + 1
        out += [take(word)] * length if repeat else [take(word) for _ in range(length)]
    assert len(out) == count and len(bits) - pos < 8  # nothing but padding after the last chunk
    return np.asarray(out, dtype=np.uint8).reshape(height, width, 4)[..., 3]


@pytest.mark.parametrize("shape", [(30, 40), (1, 1), (260, 300)])  # 260 * 300 * 4 > 2**16: split runs
def test_brush_rle_decodes_to_the_mask(shape):
    rng = np.random.default_rng(0)
    for mask in (rng.random(shape) < 0.5, np.zeros(shape, bool), np.ones(shape, bool), _labels() == 1):
        mask = np.resize(mask, shape) if mask.shape != shape else mask
        alpha = _decode_brush(brush_rle(mask), *shape)
        assert set(np.unique(alpha).tolist()) <= {0, 255} and np.array_equal(alpha == 255, mask)


def test_labelstudio_tasks_and_config(tmp_path):
    import xml.etree.ElementTree as ET

    labels = _labels()
    colors = np.array([[9, 9, 9], [255, 0, 0], [0, 255, 0], [0, 16, 255]], dtype=np.uint8)
    classes = ["cat", 'a "dog" & co', "sofa"]
    write_labelstudio(str(tmp_path), [ExportItem("/data/a.jpg", "a", labels)], classes, colors)
    config = ET.parse(tmp_path / "labelstudio-config.xml").getroot()
    image, brush = config.find("Image"), config.find("BrushLabels")
    assert image.get("value") == "$" + image.get("name") and brush.get("toName") == image.get("name")
    assert [(e.get("value"), e.get("background")) for e in brush] == [
        ("cat", "#ff0000"), ('a "dog" & co', "#00ff00"), ("sofa", "#0010ff")]
    (task,) = json.loads((tmp_path / "tasks.json").read_text())
    assert task["data"] == {image.get("name"): "/data/a.jpg"}
    results = task["predictions"][0]["result"]
    assert [r["value"]["brushlabels"] for r in results] == [["cat"], ["sofa"]]  # absent class, background: none
    for r, k in zip(results, (1, 3)):
        assert (r["type"], r["from_name"], r["to_name"]) == ("brushlabels", brush.get("name"), image.get("name"))
        assert (r["original_width"], r["original_height"], r["value"]["format"]) == (40, 30, "rle")
        assert np.array_equal(_decode_brush(r["value"]["rle"], 30, 40) == 255, labels == k)


def test_unknown_export_format_is_one_clear_error():
    assert parse_formats("coco, masks,coco") == ("coco", "masks")
    with pytest.raises(ValueError, match="choose from coco, cvat, masks, labelstudio"):
        parse_formats("yolo")


def test_segment_export_reads_back_as_the_label_maps(tmp_path, capsys, tiny_model_files, mask_utils):
    from pycocotools.coco import COCO

    a = write_image(tmp_path / "in" / "a.png", (40, 30), seed=1)
    b = write_image(tmp_path / "in" / "b.png", (36, 44), seed=2)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", tmp_path / "in", "-c", "cat,dog", "--background", "none", "--max-side", "24",
                "--export", "coco,cvat,masks,labelstudio", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    coco = COCO(str(out / "export" / "coco.json"))
    tasks = json.loads((out / "export" / "labelstudio" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [a, b]
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [a, b]
    for image_id, key in ((1, "a.png"), (2, "b.png")):
        rec = record(out, key)
        with Image.open(out / key / "labels.png") as im:  # at most 24 px: scaled back to the image's size
            labels = np.asarray(im.resize((rec["width"], rec["height"]), Image.NEAREST))
        assert (coco.imgs[image_id]["width"], coco.imgs[image_id]["height"]) == (rec["width"], rec["height"])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            assert np.array_equal(coco.annToMask(ann).astype(bool), labels == ann["category_id"])
        present = {k for k in np.unique(labels).tolist() if k}
        assert {ann["category_id"] for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))} == present
        masks = np.asarray(Image.open(out / "export" / "masks" / "labels" / key))  # stem a + .png
        assert np.array_equal(masks, labels)
        brushes = {r["value"]["brushlabels"][0]: r for r in tasks[image_id - 1]["predictions"][0]["result"]}
        assert sorted(brushes) == sorted(["cat", "dog"][k - 1] for k in present)
        for k, name in enumerate(["cat", "dog"], 1):
            if name in brushes:
                decoded = _decode_brush(brushes[name]["value"]["rle"], rec["height"], rec["width"])
                assert np.array_equal(decoded == 255, labels == k)
    assert (out / "export" / "cvat" / "ImageSets" / "Segmentation" / "default.txt").read_text() == "a\nb\n"
    r = run_cli(capsys, "segment", a, "-c", "cat", "--export", "yolo", "-o", tmp_path / "o2",
                *model_args(tiny_model_files))
    assert r.code == 2 and r.err.strip() == "gemseg: error: --export 'yolo': choose from coco, cvat, masks, labelstudio (comma-separated)"
