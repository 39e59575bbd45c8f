"""The training set of one job: the labeled images (or all, FDT), ALDT's augmented copies, and a
pseudo-label store's (masked) images and labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..builders import builder
from ..errors import InputError
from ..io import open_store
from ..settings import PseudoSettings, TrainSettings
from .augment import augmented_copies
from .read import training_arrays


@dataclass
class TrainingSet:
    images: np.ndarray    # N x H x W x C uint8
    labels: np.ndarray    # N x H x W (N x C x H x W) uint8
    blocked: np.ndarray   # N x H x W bool: input pixels blacked out inside an IM
    extra_class: bool     # the labels use an extra IM class
    n_labeled: int        # images with ground truth
    n_pseudo: int = 0     # pseudo-labeled pairs, the last ones
    weights: np.ndarray | None = None  # like labels, uint8: loss weight x 255 (a soft mask; ground truth 255)

    @property
    def pseudo(self) -> np.ndarray:
        """N bool: the pseudo-labeled pairs (after the ground truth and its ALDT copies)."""
        return np.arange(len(self.images)) >= len(self.images) - self.n_pseudo


def training_set(store, pseudo_path: str | None, settings: TrainSettings | None = None) -> TrainingSet:
    """Images with ground truth (labeled split, or all for FDT), their augmented copies (ALDT),
    plus the pseudo store's (masked) images and labels; the blocked-input mask (the IM pixels
    blacked out in the pseudo store's images, where its builder masks the input); whether the
    labels use an extra IM class; and how many images carry ground truth. Without `settings`:
    the labeled split alone."""
    labeled = training_arrays(store, settings.labels if settings else "labeled")
    images, labels, extra_class = [labeled.images], [labeled.masks], False
    if settings and settings.labeled_copies:
        copies = augmented_copies(labeled.images, labeled.masks, settings.labeled_copies, settings.augment,
                                  settings.copies_seed)
        images.append(copies[0])
        labels.append(copies[1])
    blocked = [np.zeros((sum(map(len, images)),) + labeled.images.shape[1:3], bool)]
    weights = None
    if pseudo_path:
        pseudo = open_store(pseudo_path)
        keep = (np.flatnonzero(pseudo["keep"][:]),)
        images.append(pseudo["images"].get_orthogonal_selection(keep))
        labels.append(pseudo["labels"].get_orthogonal_selection(keep))
        built = PseudoSettings.from_params(pseudo.attrs["settings"], f"{pseudo_path}: settings")
        block_input = builder(built.builder).masks_input(built)
        im = pseudo["im"].get_orthogonal_selection(keep)
        blocked.append(im if block_input else np.zeros_like(im))
        if "weight" in pseudo:  # a soft mask: the ground truth weighs 1 (255)
            weights = [np.full((sum(map(len, labels[:-1])),) + labels[-1].shape[1:], 255, np.uint8),
                       pseudo["weight"].get_orthogonal_selection(keep)]
        if settings and settings.bootstrap:
            draw = bootstrap_draw(len(images[-1]), settings.seed)
            images[-1], labels[-1], blocked[-1] = images[-1][draw], labels[-1][draw], blocked[-1][draw]
            if weights:
                weights[-1] = weights[-1][draw]
        extra_class = pseudo.attrs["label_mode"] == "im_class" and pseudo.attrs["task"] == "multiclass"
    n_pseudo = len(images[-1]) if pseudo_path else 0
    return TrainingSet(np.concatenate(images), np.concatenate(labels), np.concatenate(blocked), extra_class,
                       len(labeled.index), n_pseudo, np.concatenate(weights) if weights else None)


def bootstrap_draw(n: int, seed: int) -> np.ndarray:
    """n positions drawn with replacement from 0..n-1, from `seed` alone (a student's own resample)."""
    return np.sort(np.random.default_rng([seed, 0xB007]).integers(0, n, n))


def left_out_pixels(pseudo_path: str | None, unlabeled_index: np.ndarray, what: str) -> np.ndarray:
    """The pixels of the unlabeled images that the pseudo-label store left out of its labels
    (`im`: with builder `im`, where the teachers disagree), in the order of the unlabeled split
    (continuous.im_online)."""
    if not pseudo_path:
        raise InputError(f"{what}: continuous.im_online ignores the unlabeled loss where the generation's "
                         "pseudo-labels leave pixels out, but this job has no pseudo-label store (gen0 has no "
                         "teachers)")
    pseudo = open_store(pseudo_path)
    if not np.array_equal(pseudo["index"][:], unlabeled_index):
        raise InputError(f"{pseudo_path}: its images are not this data store's unlabeled split")
    return pseudo["im"][:]
