"""What the steps read of a data store: a split's images and masks, the development set, the
ground truth training sees."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .splits import dev_positions


@dataclass
class SplitArrays:
    images: np.ndarray   # N x H x W x C uint8
    masks: np.ndarray    # N x H x W (or N x C x H x W) uint8
    index: np.ndarray    # positions in the data store


def label_shape(task: str, num_classes: int, size: tuple[int, int]) -> tuple[int, ...]:
    """The shape of one image's labels: H x W, or C x H x W for multi-label."""
    return (num_classes, *size) if task == "multilabel" else tuple(size)


def split_indices(store, split: str) -> np.ndarray:
    return np.flatnonzero(store["split"][:] == store.attrs["split_codes"][split])


def read_split(store, split: str, with_masks: bool = True) -> SplitArrays:
    idx = split_indices(store, split)
    images = store["images"].get_orthogonal_selection((idx,))
    masks = store["masks"].get_orthogonal_selection((idx,)) if with_masks else np.empty((0,), np.uint8)
    return SplitArrays(images, masks, idx)


def read_dev(store, dev_images: int | str | None, seed: int) -> SplitArrays:
    """The development set: the validation split, or part of it (dev_positions)."""
    val = read_split(store, "val")
    keep = dev_positions(len(val.index), dev_images, seed, val.masks, len(store.attrs["class_names"]))
    return SplitArrays(val.images[keep], val.masks[keep], val.index[keep])


def training_arrays(store, labels: str = "labeled") -> SplitArrays:
    """The ground truth training sees: the labeled split's, or with labels="all" (FDT, the
    upper-bound baseline) the unlabeled split's too, which must then have masks."""
    labeled = read_split(store, "labeled")
    if labels == "labeled":
        return labeled
    if labels != "all":
        raise ValueError(f"labels must be 'labeled' or 'all', got {labels!r}")
    unlabeled = read_split(store, "unlabeled")
    missing = int((~store["has_mask"].get_orthogonal_selection((unlabeled.index,))).sum())
    if missing:
        raise InputError(f"{store.store}: {missing} of {len(unlabeled.index)} unlabeled images have no mask, "
                         "so a model on all labels (stage0.labels: all, FDT) cannot be trained on this data set")
    return SplitArrays(np.concatenate([labeled.images, unlabeled.images]),
                       np.concatenate([labeled.masks, unlabeled.masks]),
                       np.concatenate([labeled.index, unlabeled.index]))
