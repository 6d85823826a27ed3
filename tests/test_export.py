"""Exports for labeling tools: COCO RLE per class (read back with pycocotools), CVAT's Segmentation mask
1.1 layout, indexed masks with their classes; `gemseg segment --export`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cli_util import model_args, record, run_cli, write_image
from gemseg.export import ExportItem, coco_dataset, coco_rle, parse_formats, write_cvat, write_masks



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


def test_unknown_export_format_is_one_clear_error():
    assert parse_formats("coco, masks,coco") == ("coco", "masks")
    with pytest.raises(ValueError, match="choose from coco, cvat, masks"):
        parse_formats("yolo")


def test_segment_export_reads_back_as_the_label_maps(tmp_path, capsys, tiny_model_files, mask_utils):
    from pycocotools.coco import COCO

    a = write_image(tmp_path / "in" / "a.png", (40, 30), seed=1)
    b = write_image(tmp_path / "in" / "b.png", (36, 44), seed=2)
    out = tmp_path / "out"
    r = run_cli(capsys, "segment", tmp_path / "in", "-c", "cat,dog", "--background", "none", "--max-side", "24",
                "--export", "coco,cvat,masks", "-o", out, *model_args(tiny_model_files))
    assert r.code == 0, r.err
    coco = COCO(str(out / "export" / "coco.json"))
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
    assert (out / "export" / "cvat" / "ImageSets" / "Segmentation" / "default.txt").read_text() == "a\nb\n"
    r = run_cli(capsys, "segment", a, "-c", "cat", "--export", "yolo", "-o", tmp_path / "o2",
                *model_args(tiny_model_files))
    assert r.code == 2 and r.err.strip() == "gemseg: error: --export 'yolo': choose from coco, cvat, masks (comma-separated)"
