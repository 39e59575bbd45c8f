import numpy as np
import pytest

from im_core.builders.im import build_pseudo_labels, class_presence_disagreement, inconsistency_mask, majority_vote, morph_mask

IGNORE = 255


def _images(n, h, w):
    return np.full((n, h, w, 3), 200, np.uint8)


def test_binary_im_is_where_vote_sum_is_neither_zero_nor_n():
    t1 = np.array([[[0, 1, 1], [0, 0, 1]]], np.uint8)
    t2 = np.array([[[0, 1, 0], [1, 0, 1]]], np.uint8)
    preds = np.stack([t1, t2])  # 2 teachers x 1 image x 2 x 3
    im = inconsistency_mask(preds)
    assert im.tolist() == [[[False, False, True], [True, False, False]]]
    pl = build_pseudo_labels(preds, _images(1, 2, 3), "binary", 2)
    assert pl.labels.tolist() == [[[0, 1, IGNORE], [IGNORE, 0, 1]]]
    assert pl.im_fraction.tolist() == pytest.approx([2 / 6])
    # block input: exactly the IM pixels are black, the others untouched
    assert (pl.images[0][im[0]] == 0).all() and (pl.images[0][~im[0]] == 200).all()


def test_multiclass_three_teachers_agreement_and_both_label_modes():
    t1 = np.array([[[0, 2], [3, 1]]], np.uint8)
    t2 = np.array([[[0, 2], [3, 2]]], np.uint8)
    t3 = np.array([[[0, 1], [3, 1]]], np.uint8)
    preds = np.stack([t1, t2, t3])
    ignore_mode = build_pseudo_labels(preds, _images(1, 2, 2), "multiclass", 4, label_mode="ignore")
    assert ignore_mode.labels.tolist() == [[[0, IGNORE], [3, IGNORE]]]
    im_class = build_pseudo_labels(preds, _images(1, 2, 2), "multiclass", 4, label_mode="im_class")
    assert im_class.labels.tolist() == [[[0, 4], [3, 4]]]  # the extra class is index num_classes
    assert im_class.im.tolist() == ignore_mode.im.tolist() == [[[False, True], [False, True]]]


def test_block_output_off_keeps_majority_vote_and_block_input_off_keeps_pixels():
    preds = np.stack([np.array([[[1, 2]]], np.uint8), np.array([[[1, 2]]], np.uint8), np.array([[[1, 0]]], np.uint8)])
    pl = build_pseudo_labels(preds, _images(1, 1, 2), "multiclass", 3, block_output=False, block_input=False)
    assert pl.labels.tolist() == [[[1, 2]]]
    assert pl.im.tolist() == [[[False, True]]]
    assert (pl.images == 200).all()


def test_multilabel_im_is_union_of_channel_masks():
    # 2 teachers x 1 image x 2 channels x 1 x 3
    t1 = np.array([[[[1, 0, 1]], [[0, 0, 1]]]], np.uint8)
    t2 = np.array([[[[1, 1, 1]], [[0, 0, 0]]]], np.uint8)
    preds = np.stack([t1, t2])
    im = inconsistency_mask(preds, multilabel=True)
    assert im.tolist() == [[[False, True, True]]]
    pl = build_pseudo_labels(preds, _images(1, 1, 3), "multilabel", 2)
    assert pl.labels.shape == (1, 2, 1, 3)
    assert pl.labels[0, :, 0].tolist() == [[1, IGNORE, IGNORE], [0, IGNORE, IGNORE]]
    pl0 = build_pseudo_labels(preds, _images(1, 1, 3), "multilabel", 2, label_mode="im_class")
    assert pl0.labels[0, :, 0].tolist() == [[1, 0, 0], [0, 0, 0]]  # sigmoid tasks: IM set to 0 as the authors do


def test_erosion_removes_thin_im_and_dilation_grows_it():
    im = np.zeros((1, 9, 9), bool)
    im[0, 2:7, 2:7] = True   # a 5x5 block
    im[0, 0, 8] = True       # an isolated pixel
    eroded = morph_mask(im, erode=3)
    assert not eroded[0, 0, 8] and eroded[0, 3:6, 3:6].all() and eroded.sum() == 9
    dilated = morph_mask(im, dilate=3)
    assert dilated[0, 1:8, 1:8].all() and dilated[0, 1, 7] and dilated.sum() > im.sum()
    assert (morph_mask(im, 0, 0) == im).all()


def test_morphology_applies_to_labels_and_inputs():
    t1 = np.zeros((1, 5, 5), np.uint8)
    t2 = t1.copy()
    t2[0, 2, 2] = 1  # one disagreeing pixel
    preds = np.stack([t1, t2])
    eroded = build_pseudo_labels(preds, _images(1, 5, 5), "binary", 2, erode=3)
    assert eroded.im.sum() == 0 and (eroded.labels != IGNORE).all()  # vote fills the pixel: tie -> 0
    dilated = build_pseudo_labels(preds, _images(1, 5, 5), "binary", 2, dilate=3)
    assert dilated.im.sum() == 9 and (dilated.labels == IGNORE).sum() == 9 and (dilated.images == 0).all(-1).sum() == 9


def test_majority_vote_ties_go_to_lower_class():
    preds = np.stack([np.array([[[2]]], np.uint8), np.array([[[1]]], np.uint8)])
    assert majority_vote(preds, "multiclass", 3).tolist() == [[[1]]]


def test_class_presence_filter_drops_images_whose_teachers_see_different_classes():
    same = np.array([[0, 1], [1, 0]], np.uint8)
    t1 = np.stack([same, np.array([[0, 2], [0, 0]], np.uint8)])
    t2 = np.stack([same[::-1], np.array([[0, 0], [0, 0]], np.uint8)])  # image 1: class 2 missing
    preds = np.stack([t1, t2])
    assert class_presence_disagreement(preds, "multiclass", 3).tolist() == [False, True]
    pl = build_pseudo_labels(preds, _images(2, 2, 2), "multiclass", 3, filter_class_disagreement=True)
    assert pl.keep.tolist() == [True, False]
    assert build_pseudo_labels(preds, _images(2, 2, 2), "multiclass", 3).keep.all()


def test_user_images_are_not_modified():
    images = _images(1, 2, 2)
    preds = np.stack([np.array([[[0, 1], [0, 0]]], np.uint8), np.array([[[0, 0], [0, 0]]], np.uint8)])
    build_pseudo_labels(preds, images, "binary", 2)
    assert (images == 200).all()


def test_unknown_label_mode_is_rejected():
    preds = np.zeros((2, 1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="label_mode"):
        build_pseudo_labels(preds, _images(1, 2, 2), "binary", 2, label_mode="zero")
