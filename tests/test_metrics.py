import numpy as np
import pytest

from im_core.metrics import confusion_matrix, iou_from_confusion, per_image_miou, pseudo_label_quality, score

IGN = 255
NAMES = ["bg", "a", "b"]


def test_confusion_matrix_rows_are_truth_and_ignore_is_skipped():
    target = np.array([[0, 0, 1, 1, IGN]])
    pred = np.array([[0, 1, 1, 2, 2]])
    cm = confusion_matrix(pred, target, 3, IGN)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_dataset_level_miou_by_hand():
    # image 1: truth 0 0 1 1, pred 0 1 1 1 ; image 2: truth 2 2 0 255, pred 2 0 0 1
    target = np.array([[[0, 0, 1, 1]], [[2, 2, 0, IGN]]])
    pred = np.array([[[0, 1, 1, 1]], [[2, 0, 0, 1]]])
    s = score(pred, target, NAMES, IGN)
    # class 0: tp 2 (pixels 1 and 7), fn 1 (pixel 2 -> 1), fp 1 (pixel 6 truth 2 -> 0): 2/4
    # class 1: tp 2, fp 1 (pixel 2), fn 0: 2/3 ; class 2: tp 1, fn 1: 1/2
    assert s["iou_bg"] == pytest.approx(0.5)
    assert s["iou_a"] == pytest.approx(2 / 3)
    assert s["iou_b"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)  # the ignored pixel is not counted


def test_per_image_miou_uses_only_classes_present_in_each_ground_truth():
    target = np.array([[[0, 0, 1, 1]], [[2, 2, 0, IGN]]])
    pred = np.array([[[0, 1, 1, 1]], [[2, 0, 0, 1]]])
    # image 1: classes {0,1}: IoU0 = 1/2, IoU1 = 2/3 -> 7/12
    # image 2: classes {0,2}: IoU0 = 1/2 (tp 1, fp 1), IoU2 = 1/2 -> 1/2 (the ignored pixel's pred of 1 is not an FP)
    assert per_image_miou(pred, target, 3, IGN) == pytest.approx((7 / 12 + 0.5) / 2)


def test_class_absent_everywhere_is_nan_and_left_out_of_the_mean():
    target = np.array([[[0, 1]]])
    pred = np.array([[[0, 1]]])
    s = score(pred, target, NAMES, IGN)
    assert np.isnan(s["iou_b"]) and s["miou"] == 1.0


def test_images_without_valid_pixels_are_skipped_in_per_image_miou():
    target = np.array([[[IGN, IGN]], [[1, 1]]])
    pred = np.array([[[0, 0]], [[1, 0]]])
    assert per_image_miou(pred, target, 3, IGN) == pytest.approx(0.5)


def test_multilabel_scores_each_channel_as_its_foreground():
    target = np.array([[[[1, 1, 0, 0]], [[0, 1, 1, IGN]]]])  # 1 image, 2 channels
    pred = np.array([[[[1, 0, 0, 0]], [[0, 1, 1, 1]]]])
    s = score(pred, target, ["alive", "dead"], IGN, multilabel=True)
    assert s["iou_alive"] == pytest.approx(0.5) and s["iou_dead"] == pytest.approx(1.0)
    assert s["miou"] == pytest.approx(0.75) and s["miou_per_image"] == pytest.approx(0.75)


def test_iou_from_confusion_handles_empty_union():
    assert np.isnan(iou_from_confusion(np.zeros((2, 2)))).all()


def test_pseudo_label_quality_counts_ignored_and_im_class_as_uncovered():
    target = np.array([[[0, 1, 1, 2, IGN]]])
    pseudo = np.array([[[0, 1, IGN, 3, 1]]])  # 3 = extra IM class with 3 real classes
    q = pseudo_label_quality(pseudo, target, IGN, 3)
    assert q["pseudo_coverage"] == pytest.approx(2 / 4) and q["pseudo_accuracy"] == 1.0


def test_multilabel_pseudo_label_quality_per_label():
    from im_core.metrics import pseudo_label_quality
    target = np.zeros((1, 2, 2, 4), np.uint8)
    target[0, 0, 0, :2] = 1                        # label a present at 2 pixels
    pseudo = target.copy()
    pseudo[0, 0, 0, 1] = 255                       # one of them inside the IM
    pseudo[0, 1, 1, 3] = 1                         # label b: a wrong present
    out = pseudo_label_quality(pseudo, target, 255, 2, ["a", "b"])
    assert out["pseudo_coverage_a"] == 0.5 and out["pseudo_recall_a"] == 0.5 and out["pseudo_accuracy_a"] == 1.0
    assert out["pseudo_accuracy_b"] == 0.0 and np.isnan(out["pseudo_recall_b"])
