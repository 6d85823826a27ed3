"""Datasets read from their exact on-disk layouts, with each dataset's label quirks, and user metadata."""
import json

import numpy as np
import pytest
from PIL import Image

import eval_data
from gemseg.eval import DenseDataset, PointsDataset, list_datasets, load_dataset_spec, read_templates
from gemseg.eval import convert
from gemseg.eval.datasets import read_class_file

pytestmark = pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")

BUILTIN = {"voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_stuff": 171, "coco_object": 81,
           "cityscapes": 19, "ade20k": 150}


def test_builtin_datasets_and_their_class_files():
    assert set(list_datasets()) == set(BUILTIN) | {"openimages_v7"}
    for name, n in BUILTIN.items():
        spec = load_dataset_spec(name)
        assert spec.num_classes == n and len(spec.synonyms) == n and len(spec.palette) >= n
        assert all(names and all(names) for names in spec.classes + spec.synonyms)
    voc = load_dataset_spec("voc21")
    assert voc.background == 0 and voc.class_names[0] == "background"
    assert len(voc.synonyms[0]) == 26 and voc.synonyms[0][0] == "sky"  # SCLIP's background words
    assert voc.synonyms[15][:2] == ("person", "person in shirt")
    assert load_dataset_spec("coco_object").synonyms[1][-1] == "body"
    assert load_dataset_spec("ade20k").class_names[7] == "bed"  # mmseg's 'bed ' without the space
    assert load_dataset_spec("voc20").background is None


def test_voc21_reads_palette_pngs_as_indices_keeps_255_borders_and_follows_the_split(tmp_path):
    root = eval_data.write_voc(tmp_path / "VOC2012", n=4)
    ds = DenseDataset(load_dataset_spec("voc21"), root)
    assert ds.ids == [f"2007_{i:06d}" for i in range(4)]  # the 5th image is not in val.txt
    raw = np.asarray(Image.open(root / "SegmentationClass" / "2007_000000.png"))
    assert Image.open(root / "SegmentationClass" / "2007_000000.png").mode == "P"
    image, label = ds.load("2007_000000")
    assert image.shape == (*label.shape, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, raw)  # VOC21: values as they are, 255 borders stay ignored
    assert 255 in label


def test_voc20_and_context59_ignore_background_and_shift_classes(tmp_path):
    voc = eval_data.write_voc(tmp_path / "VOC2012")
    raw = np.asarray(Image.open(voc / "SegmentationClass" / "2007_000000.png")).astype(np.int64)
    _, label = DenseDataset(load_dataset_spec("voc20"), voc).load("2007_000000")
    np.testing.assert_array_equal(label, np.where((raw == 0) | (raw == 255), 255, raw - 1))
    ctx = eval_data.write_context(tmp_path / "VOC2010")
    raw = np.asarray(Image.open(ctx / "SegmentationClassContext" / "2008_000000.png")).astype(np.int64)
    _, l60 = DenseDataset(load_dataset_spec("context60"), ctx).load("2008_000000")
    _, l59 = DenseDataset(load_dataset_spec("context59"), ctx).load("2008_000000")
    np.testing.assert_array_equal(l60, raw)
    np.testing.assert_array_equal(l59, np.where(raw == 0, 255, raw - 1))


def test_ade20k_zero_is_ignored_and_classes_shift_down(tmp_path):
    root = eval_data.write_ade(tmp_path / "ADEChallengeData2016")
    ds = DenseDataset(load_dataset_spec("ade20k"), root)
    assert ds.ids == ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]  # no split file: globbed
    raws, labels = [], []
    for i in ds.ids:
        raws.append(np.asarray(Image.open(ds.label_path(i))).astype(np.int64))
        labels.append(ds.load(i)[1])
    raw, label = np.concatenate([r.ravel() for r in raws]), np.concatenate([lab.ravel() for lab in labels])
    assert {0, 150} <= set(raw.tolist())
    np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw - 1))
    assert label.max() == 255 and label[label != 255].max() == 149


def test_coco_stuff_conversion_to_train_ids(tmp_path):
    root = eval_data.write_coco_stuff_raw(tmp_path / "coco_stuff164k")
    assert convert.main(["coco-stuff", str(root), "--workers", "1"]) == 0
    ds = DenseDataset(load_dataset_spec("coco_stuff"), root)
    assert len(ds) == 3  # the raw <id>.png maps beside the converted ones are not mistaken for ids
    for i in ds.ids:
        raw = np.asarray(Image.open(root / "annotations" / "val2017" / f"{i}.png"))
        _, label = ds.load(i)
        expected = {0: 0, 2: 2, 89: 79, 91: 80, 181: 170, 255: 255}
        for r, t in expected.items():
            assert (label[raw == r] == t).all()


def test_coco_object_conversion_from_raw_maps_or_train_ids(tmp_path):
    stuff = eval_data.write_coco_stuff_raw(tmp_path / "coco_stuff164k")
    convert.main(["coco-object", str(stuff), str(tmp_path / "coco_object"), "--workers", "1"])
    ds = DenseDataset(load_dataset_spec("coco_object"), tmp_path / "coco_object")
    assert (tmp_path / "coco_object" / "images").is_symlink()
    from_raw = {}
    for i in ds.ids:
        raw = np.asarray(Image.open(stuff / "annotations" / "val2017" / f"{i}.png"))
        image, label = ds.load(i)
        # things -> 1..80, stuff and unlabeled -> background 0 (GroupViT/TCL convention: no ignored pixels)
        for r, t in {0: 1, 2: 3, 89: 80, 91: 0, 181: 0, 255: 0}.items():
            assert (label[raw == r] == t).all()
        from_raw[i] = label
    # the same maps from COCO-Stuff's train ids
    convert.main(["coco-stuff", str(stuff), "--workers", "1"])
    for p in (stuff / "annotations" / "val2017").glob("*.png"):
        if "TrainIds" not in p.name:
            p.unlink()
    convert.main(["coco-object", str(stuff), str(tmp_path / "coco_object2"), "--workers", "1"])
    ds2 = DenseDataset(load_dataset_spec("coco_object"), tmp_path / "coco_object2")
    for i in ds2.ids:
        np.testing.assert_array_equal(ds2.load(i)[1], from_raw[i])


def test_cityscapes_train_ids_in_city_folders(tmp_path):
    root = eval_data.write_cityscapes_raw(tmp_path / "cityscapes")
    with pytest.raises(FileNotFoundError):  # labelTrainIds not made yet
        DenseDataset(load_dataset_spec("cityscapes"), root)
    convert.main(["cityscapes", str(root), "--workers", "1"])
    ds = DenseDataset(load_dataset_spec("cityscapes"), root)
    assert ds.ids == ["frankfurt/frankfurt_000000_000294", "frankfurt/frankfurt_000000_000576",
                      "lindau/lindau_000000_000019"]
    for i in ds.ids:
        raw = np.asarray(Image.open(root / "gtFine" / "val" / f"{i}_gtFine_labelIds.png"))
        image, label = ds.load(i)
        for r, t in {0: 255, 4: 255, 7: 0, 26: 13, 33: 18}.items():
            assert (label[raw == r] == t).all()


def test_openimages_points_drop_unsure_and_keep_the_full_vocabulary(tmp_path):
    root = eval_data.write_openimages(tmp_path / "oi")
    spec = load_dataset_spec("openimages_v7")
    ds = PointsDataset(spec, root)
    rows = list(__import__("csv").DictReader(open(root / spec.points_csv)))
    kept = [r for r in rows if r["EstimatedYesNo"] in ("yes", "no")]
    assert ds.unsure_points == len(rows) - len(kept) > 0
    assert ds.class_names == ["Person", "Tree", "Car"]  # MID order; Wheel only ever got "unsure"
    assert ds.mids == ["/m/01g317", "/m/07j7r", "/m/0k4j"]
    assert sum(len(ds.points(i).classes) for i in ds.ids) == len(kept)
    first = ds.ids[0]
    pts = ds.points(first)
    mine = [r for r in kept if r["ImageId"] == first]
    assert pts.positive.tolist() == [r["EstimatedYesNo"] == "yes" for r in mine]
    assert pts.x.tolist() == pytest.approx([float(r["X"]) for r in mine])
    assert [ds.mids[c] for c in pts.classes] == [r["Label"] for r in mine]
    image, points = ds.load(first)
    assert image.ndim == 3 and len(points.classes) == len(mine)
    limited = PointsDataset(spec, root, limit=1)
    assert limited.ids == ds.ids[:1] and limited.class_names == ds.class_names
    assert limited.classes_in(limited.ids) == sorted(set(pts.classes.tolist()))


def test_wrong_layouts_and_label_values_fail_loudly(tmp_path):
    spec = load_dataset_spec("voc21")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DenseDataset(spec, tmp_path / "nowhere")
    root = eval_data.write_voc(tmp_path / "VOC2012", n=2)
    Image.fromarray(np.full((40, 56), 30, dtype=np.uint8)).save(root / "SegmentationClass" / "2007_000000.png")
    with pytest.raises(ValueError, match=r"label values \[30\]"):
        DenseDataset(spec, root).load("2007_000000")
    Image.fromarray(np.zeros((40, 56, 3), dtype=np.uint8)).save(root / "SegmentationClass" / "2007_000000.png")
    with pytest.raises(ValueError, match="colour image"):
        DenseDataset(spec, root).load("2007_000000")
    with pytest.warns(UserWarning, match="the standard split has 1449"):
        DenseDataset(spec, root)


def test_a_user_dataset_is_a_metadata_file(tmp_path):
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(2):
        Image.fromarray(np.full((4, 4, 3), 40 * k, dtype=np.uint8)).save(root / "imgs" / f"s{k}.jpg")
        Image.fromarray(np.array([[10, 20, 99, 0]] * 4, dtype=np.uint8)).save(root / "masks" / f"s{k}_mask.png")
    (tmp_path / "names.txt").write_text("# my classes\nroad, street\ncar\n")
    meta = {"name": "mine", "classes": "names.txt", "image_pattern": "imgs/{id}.jpg",
            "label_pattern": "masks/{id}_mask.png", "label_map": {"10": 0, "20": 1}, "ignore_index": 99,
            "palette": [[1, 2, 3], [4, 5, 6]], "presets": {"sclip": {"logit_scale": 55}}}
    (tmp_path / "mine.json").write_text(json.dumps(meta))
    spec = load_dataset_spec(tmp_path / "mine.json")
    assert spec.class_names == ["road", "car"] and spec.synonyms[0] == ("road", "street")
    ds = DenseDataset(spec, root)
    assert ds.ids == ["s0", "s1"]
    assert ds.load("s0")[1][0].tolist() == [0, 1, 99, 99]  # unmapped raw values are ignored
    (tmp_path / "bad.json").write_text(json.dumps({**meta, "clases": "names.txt"}))
    with pytest.raises(ValueError, match="unknown keys"):
        load_dataset_spec(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset_spec("nonexistent")


def test_class_and_template_files(tmp_path):
    (tmp_path / "c.txt").write_text("# comment\n\nsky, clouds ,\n car\n")
    assert read_class_file(tmp_path / "c.txt") == [("sky", "clouds"), ("car",)]
    assert read_templates("single") == ["a photo of a {}."]
    t80 = read_templates("imagenet80")
    assert len(t80) == len(set(t80)) == 80 and t80[0] == "a bad photo of a {}." and t80[-1] == "a tattoo of the {}."
    (tmp_path / "t.txt").write_text("no placeholder\n")
    with pytest.raises(ValueError, match="placeholder|where the class name goes"):
        read_templates(str(tmp_path / "t.txt"))
