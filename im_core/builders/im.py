"""Inconsistency Masks (Vorndran and Roeck, "Inconsistency Masks: Removing the Uncertainty from
Input-Pseudo-Label Pairs", arXiv:2401.14387): where the top-n teachers' hard predictions do not
all agree (for multi-label, the union of the per-label disagreements) is the inconsistency mask
(IM). Outside it the agreed value is the pseudo-label; inside it the label is ignored (or an
extra IM class, as the authors do) and, with `block_input`, the input pixels are blacked out.
Optionally the IM is eroded then dilated, and images whose teachers disagree on which classes
appear are dropped. The levers of issue 31 (docs/methods.md): k of n teachers (`agree`), a mask
per label (`per_label`), teachers from several generations (`teacher_generations`), and a soft
mask (`soft`: every pixel keeps the majority label, weighted by the teachers' mean confidence).
"""
from __future__ import annotations

import numpy as np

from ..settings import PseudoSettings
from .base import Builder, PseudoLabels

LABEL_MODES = ("ignore", "im_class")


def inconsistency_mask(preds: np.ndarray, multilabel: bool = False, agree: int | None = None,
                       per_label: bool = False) -> np.ndarray:
    """True where the teachers' discretized predictions (n x N x H x W, multi-label
    n x N x L x H x W) are not consistent: not all equal, or with `agree` = k, fewer than k
    teachers vote for the majority value. Multi-label: the union over the labels (N x H x W), or
    with `per_label` each label's own (N x L x H x W)."""
    if agree is None or agree >= len(preds):
        disagree = np.any(preds != preds[:1], axis=0)
    else:
        disagree = majority_votes(preds) < agree
    return disagree.any(axis=1) if multilabel and not per_label else disagree


def majority_votes(preds: np.ndarray) -> np.ndarray:
    """Per pixel, how many teachers vote for its most frequent value."""
    values = np.unique(preds)
    return np.max([(preds == v).sum(0, dtype=np.uint8) for v in values], axis=0)


def morph_mask(im: np.ndarray, erode: int = 0, dilate: int = 0) -> np.ndarray:
    """Erode then dilate each image's IM with square kernels of the given sides (0 = skip)."""
    if not erode and not dilate:
        return im
    from skimage.morphology import dilation, erosion, footprint_rectangle  # only where the IM is reshaped
    out = np.empty_like(im)
    for i, m in enumerate(im):
        if erode:
            m = erosion(m, footprint_rectangle((erode, erode)))
        if dilate:
            m = dilation(m, footprint_rectangle((dilate, dilate)))
        out[i] = m
    return out


def majority_vote(preds: np.ndarray, task: str, num_classes: int) -> np.ndarray:
    """Most frequent teacher value per pixel (ties go to the lower class / to 0); votes are
    counted in uint8 (at most 255 teachers)."""
    if task == "multiclass":
        counts = np.stack([(preds == c).sum(0, dtype=np.uint8) for c in range(num_classes)])
        return counts.argmax(0).astype(np.uint8)
    return (2 * preds.sum(0, dtype=np.uint16) > len(preds)).astype(np.uint8)


def class_presence_disagreement(preds: np.ndarray, task: str, num_classes: int) -> np.ndarray:
    """Per image: True if the teachers disagree on which classes appear in it."""
    n, count = preds.shape[:2]
    if task == "multiclass":
        present = np.stack([[np.bincount(p.ravel(), minlength=num_classes) > 0 for p in teacher] for teacher in preds])
    elif task == "multilabel":
        present = preds.reshape(n, count, preds.shape[2], -1).any(-1)
    else:
        present = preds.reshape(n, count, -1).any(-1)
    return np.any(present != present[:1], axis=(0, *range(2, present.ndim)))


def soft_weight(preds: np.ndarray, confidence: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The soft mask: per pixel (per label), the teachers' mean confidence in the label, a
    teacher that votes for another counting 0; uint8 (x 255, rounded). The stores hold each
    teacher's confidence in its own vote only, so for multi-class data this is what is known
    of the mean probability of the label (its lower bound); binary and multi-label: exactly it
    where the teachers agree."""
    agreeing = np.where(preds == labels[None], confidence.astype(np.float32), np.float32(0))
    return np.rint(agreeing.mean(0)).astype(np.uint8)


def build_pseudo_labels(preds: np.ndarray, images: np.ndarray, task: str, num_classes: int, *,
                        block_input: bool = True, block_output: bool = True, label_mode: str = "ignore",
                        ignore_index: int = 255, erode: int = 0, dilate: int = 0,
                        filter_class_disagreement: bool = False, agree: int | None = None,
                        per_label: bool = False, confidence: np.ndarray | None = None) -> PseudoLabels:
    """IM pseudo-labels of a chunk; with the teachers' `confidence` (n x ..., as uint8), the
    soft mask's weights too (block_output must then be off)."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    multilabel = task == "multilabel"
    if per_label and not multilabel:
        raise ValueError(f"per_label masks are for multi-label data; this task is {task!r}")
    raw = inconsistency_mask(preds, multilabel, agree, per_label)
    # the mask of each label (per_label) or of the pixel; im is always the pixel's (the union)
    masks = (np.stack([morph_mask(raw[:, k], erode, dilate) for k in range(raw.shape[1])], 1) if per_label
             else morph_mask(raw, erode, dilate))
    im = masks.any(1) if per_label else masks
    # Outside the IM the teachers agree (k of n: the majority), except where erosion shrank the IM: the vote there.
    labels = majority_vote(preds, task, num_classes)
    weight = soft_weight(preds, confidence, labels) if confidence is not None else None
    if block_output:
        if weight is not None:
            raise ValueError("a soft mask weighs the pixels the IM would ignore: block_output must be off")
        im_value = ignore_index if label_mode == "ignore" else (num_classes if task == "multiclass" else 0)
        where = masks if per_label else (im[:, None] if multilabel else im)
        labels = np.where(np.broadcast_to(where, labels.shape), np.uint8(im_value), labels)
    masked = np.where(im[..., None], np.uint8(0), images) if block_input else images.copy()
    keep = ~class_presence_disagreement(preds, task, num_classes) if filter_class_disagreement else np.ones(len(images), bool)
    return PseudoLabels(masked, labels.astype(np.uint8), im, im.reshape(len(im), -1).mean(1), keep, weight)


class InconsistencyMask(Builder):
    reports_mask = True
    summary = "inconsistency masks of the top-n teachers' hard predictions"

    def uses_top_n(self, settings: PseudoSettings) -> bool:
        return True

    def masks_input(self, settings: PseudoSettings) -> bool:
        return settings.block_input

    def label_mode(self, settings: PseudoSettings) -> str:
        return settings.label_mode

    def weighs_pixels(self, settings: PseudoSettings) -> bool:
        return bool(settings.soft)

    def teachers(self, selection, settings, parent, generation):
        # teacher_generations: the best of each earlier generation replaces one of g-1's lowest-ranked
        earlier = [s["ranking"][0] for s in selection.get("earlier", [])][:settings.teachers - 1]
        return selection["selected"][:settings.teachers - len(earlier)] + earlier

    def selections_read(self, settings, previous):
        span = settings.teacher_generations or 1
        return list(range(previous - 1, max(-1, previous - span), -1))

    def generations_read(self, settings, previous):
        return [previous, *self.selections_read(settings, previous)]

    own_of_others = ()

    def build(self, preds, confidence, images, task, num_classes, ignore, settings, prepared=None):
        return build_pseudo_labels(preds, images, task, num_classes, block_input=settings.block_input,
                                   block_output=settings.block_output, label_mode=settings.label_mode,
                                   ignore_index=ignore, erode=settings.erode, dilate=settings.dilate,
                                   filter_class_disagreement=settings.filter_class_disagreement,
                                   agree=settings.agree, per_label=bool(settings.per_label),
                                   confidence=confidence if settings.soft else None)

    def problems(self, settings: dict, task: str) -> list[str]:
        errors = []
        if settings.get("agree") is not None and settings["agree"] > settings["teachers"]:
            errors.append(f"agree: {settings['agree']} of {settings['teachers']} teachers cannot agree; "
                          f"at most `teachers`")
        if settings.get("teacher_generations") is not None and settings["teacher_generations"] > settings["teachers"]:
            errors.append(f"teacher_generations: {settings['teacher_generations']} generations cannot share "
                          f"{settings['teachers']} teachers (one from each); at most `teachers`")
        if settings.get("soft") and settings["block_output"]:
            errors.append("soft: a soft mask weighs the pixels the IM would ignore; set block_output: false")
        if settings.get("per_label") and task != "multilabel":
            errors.append(f"per_label: masks per label are for multi-label data; this data set is {task}")
        return errors
