"""Metrics against hand-computed answers: dataset-level confusion matrices, ignore index, p-mIoU."""
import numpy as np
import pytest
import torch

from gemseg.eval import confusion_matrix, point_counts, pointwise_metrics, score_points, segmentation_metrics
from gemseg.eval.pointwise import PointLabels

GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 1, 0]])


def test_confusion_matrix_counts_pairs_and_skips_ignored_pixels():
    cm = confusion_matrix(PRED, GT, 3, ignore_index=255)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert cm.dtype == torch.long


def test_metrics_by_hand():
    m = segmentation_metrics(confusion_matrix(PRED, GT, 3), ["a", "b", "c"])
    # IoU: a 1/(2+1-1), b 2/(2+4-2), c 0/(1+0-0); Acc: a 1/2, b 2/2, c 0/1; aAcc 3/5
    assert [c["iou"] for c in m["per_class"]] == pytest.approx([50.0, 50.0, 0.0])
    assert [c["acc"] for c in m["per_class"]] == pytest.approx([50.0, 100.0, 0.0])
    assert m["mIoU"] == pytest.approx(100 / 3)
    assert m["mAcc"] == pytest.approx(50.0)
    assert m["aAcc"] == pytest.approx(60.0)
    assert m["scored_pixels"] == 5
    assert [c["gt_pixels"] for c in m["per_class"]] == [2, 2, 1]
    assert [c["pred_pixels"] for c in m["per_class"]] == [1, 4, 0]


def test_absent_class_has_no_iou_and_is_left_out_but_false_positives_count():
    m = segmentation_metrics(confusion_matrix(PRED, GT, 4))
    assert m["per_class"][3]["iou"] is None and m["per_class"][3]["acc"] is None
    assert m["mIoU"] == pytest.approx(100 / 3) and m["classes_scored"] == 3
    # class 2 predicted where it is absent from the ground truth: IoU 0, and it counts
    m = segmentation_metrics(confusion_matrix(np.array([2, 0]), np.array([0, 0]), 3))
    assert m["per_class"][2]["iou"] == 0.0 and m["per_class"][1]["iou"] is None
    assert m["mIoU"] == pytest.approx((50.0 + 0.0) / 2)


def test_dataset_level_accumulation_is_not_a_mean_of_per_image_ious():
    # image 1: class 1 tiny and missed; image 2: class 1 large and found
    gt1, pred1 = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])
    gt2, pred2 = np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1])
    total = confusion_matrix(pred1, gt1, 2) + confusion_matrix(pred2, gt2, 2)
    assert total.tolist() == [[3, 0], [1, 4]]
    iou1 = segmentation_metrics(total)["per_class"][1]["iou"]
    assert iou1 == pytest.approx(100 * 4 / 5)  # not (0 + 100) / 2
    per_image = [segmentation_metrics(confusion_matrix(p, g, 2))["per_class"][1]["iou"] for p, g in
                 ((pred1, gt1), (pred2, gt2))]
    assert np.mean(per_image) == pytest.approx(50.0)


def test_ignored_pixels_may_hold_any_prediction_but_scored_ones_may_not():
    gt = np.array([255, 0])
    assert confusion_matrix(np.array([254, 0]), gt, 2).tolist() == [[1, 0], [0, 0]]
    with pytest.raises(ValueError, match="prediction values"):
        confusion_matrix(np.array([0, 7]), gt, 2)
    with pytest.raises(ValueError, match="ground truth values"):
        confusion_matrix(np.array([0, 0]), np.array([3, 0]), 2)
    with pytest.raises(ValueError, match="shapes"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)


def test_empty_dataset_gives_no_numbers():
    m = segmentation_metrics(torch.zeros(3, 3, dtype=torch.long))
    assert m["mIoU"] is None and m["aAcc"] is None and m["classes_scored"] == 0


def test_point_counts_and_p_miou_by_hand():
    classes = torch.tensor([0, 0, 0, 1, 1, 2])
    positive = torch.tensor([True, True, False, True, False, False])
    predicted = torch.tensor([True, False, True, False, False, False])
    counts = point_counts(predicted, positive, classes, 3)
    assert counts["tp"].tolist() == [1, 0, 0]
    assert counts["fn"].tolist() == [1, 1, 0]
    assert counts["fp"].tolist() == [1, 0, 0]
    assert counts["tn"].tolist() == [0, 1, 1]
    m = pointwise_metrics(counts, ["a", "b", "c"])
    # a: 1 / (1 + 1 + 1); b: 0 / (0 + 0 + 1); c has only a correctly rejected "no" point: no IoU
    assert [c["iou"] for c in m["per_class"]] == pytest.approx([100 / 3, 0.0, None])
    assert m["p-mIoU"] == pytest.approx(100 / 6)
    assert m["classes_scored"] == 2 and m["scored_points"] == 6


def _points(classes, xs, ys, positive):
    return PointLabels(np.array(classes, dtype=np.int64), np.array(xs, dtype=np.float32),
                       np.array(ys, dtype=np.float32), np.array(positive))


def test_score_points_reads_the_pixel_under_each_point_and_the_threshold_is_a_setting():
    scores = torch.zeros(2, 4, 4)
    scores[0, :, :2] = 1.0  # class 7: left half
    scores[0, 0, 3] = 0.6  # a weaker spot top-right
    scores[1] = torch.linspace(0, 1, 4)[None, :]  # class 9: ramp left -> right
    points = _points([7, 7, 7, 9, 9], [0.1, 0.9, 1.0, 0.99, 0.0], [0.5, 0.5, 0.0, 0.5, 0.5],
                     [True, False, True, True, True])
    counts = score_points(scores, [7, 9], points, 10, threshold=0.5)
    # class 7: (0.1, .5) in mask: TP; (0.9, .5) outside and "no": TN; (1.0, 0) reads pixel (0, 3) = 0.6: TP
    assert (counts["tp"][7], counts["fp"][7], counts["fn"][7], counts["tn"][7]) == (2, 0, 0, 1)
    # class 9: x=0.99 -> column 3 (1.0): TP; x=0 -> column 0 (0.0): FN
    assert (counts["tp"][9], counts["fn"][9]) == (1, 1)
    strict = score_points(scores, [7, 9], points, 10, threshold=0.7)
    assert strict["tp"][7] == 1 and strict["fn"][7] == 1  # the 0.6 spot no longer counts


def test_score_points_minmax_normalizes_each_map():
    scores = torch.full((1, 2, 2), 0.2)
    scores[0, 0, 0] = 0.3  # raw cosines: all below 0.5, but the top pixel is the max of its map
    points = _points([0, 0], [0.0, 0.9], [0.0, 0.9], [True, True])
    assert score_points(scores, [0], points, 1)["tp"][0] == 1
    assert score_points(scores, [0], points, 1, normalize="none")["tp"][0] == 0
    flat = score_points(torch.full((1, 2, 2), 0.4), [0], points, 1)  # a constant map predicts nothing
    assert flat["fn"][0] == 2 and flat["tp"][0] == 0


@pytest.mark.parametrize("rule", ["present", "annotated"])
def test_point_class_rules_by_hand(rule):
    from gemseg.eval.pointwise import scored_classes

    maps = torch.zeros(3, 4, 4)
    maps[0, :, :2] = 1.0  # class 0: left half
    maps[1] = 1.0  # class 1: everywhere
    # class 2: nowhere
    points = _points([0, 0, 1, 1, 2], [0.1, 0.9, 0.1, 0.9, 0.9], [0.1, 0.9, 0.1, 0.9, 0.9],
                     [True, False, False, False, True])
    classes = scored_classes(points, rule)
    # class 1 has only "no" points: not present in the image, but annotated
    assert classes == ([0, 2] if rule == "present" else [0, 1, 2])
    counts = score_points(maps[classes], classes, points, 3, threshold=0.5, normalize="none")
    m = pointwise_metrics(counts)
    # class 0: yes (0,0) inside -> TP, no (3,3) outside -> TN; class 2: yes (3,3), empty map -> FN
    # class 1 (annotated only): both "no" points inside its mask -> FP 2
    expected = {"present": ([1, 0, 0], [0, 0, 0], [0, 0, 1]), "annotated": ([1, 0, 0], [0, 2, 0], [0, 0, 1])}[rule]
    assert (counts["tp"].tolist(), counts["fp"].tolist(), counts["fn"].tolist()) == expected
    # IoU: class 0 1/1 = 100, class 2 0/1 = 0, class 1 0/2 = 0 (annotated) or undefined (present)
    assert [c["iou"] for c in m["per_class"]] == ([100.0, None, 0.0] if rule == "present" else [100.0, 0.0, 0.0])
    assert m["p-mIoU"] == pytest.approx(50.0 if rule == "present" else 100 / 3)
    assert m["scored_points"] == (3 if rule == "present" else 5)


def test_point_classes_is_a_checked_protocol_setting():
    from gemseg.eval import Protocol

    assert Protocol().point_classes == "present"
    with pytest.raises(ValueError, match="point_classes must be one of present, annotated"):
        Protocol(point_classes="all")
