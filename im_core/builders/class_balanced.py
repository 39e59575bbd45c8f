"""DST-CBC's class-balanced curriculum (Feng et al., "Semi-Supervised Semantic Segmentation via
Dynamic Self-Training and Class-Balanced Curriculum", arXiv:2004.08514, Sec. 3): per class, a
confidence threshold that keeps the top `ratio` of the pixels predicted as that class, so every
class contributes the same share of its pixels whatever its size; the ratio grows round by round
(0.2, 0.4, ... 1.0). Thresholds come from every 16th pixel of one pass over the unlabeled set.

Classes: multi-class and binary use the predicted label (binary: 0 and 1, each with the
confidence max(p, 1 - p)); multi-label treats each channel's "on" and "off" as two classes of
their own (2C thresholds), with that channel's confidence.
"""
from __future__ import annotations

import math

import numpy as np

from ..methods.stages import parent_id
from ..settings import PseudoSettings
from .base import Builder, PseudoLabels
from .im import inconsistency_mask

STRIDE = 16  # every 16th pixel's confidence goes into the thresholds (the official code's)
CHUNK_IMAGES = 256  # unlabeled images whose confidences are read at a time


def class_keys(labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """The threshold each pixel answers to: its label, or for multi-label 2 x channel + its 0/1."""
    if not multilabel:
        return labels.astype(np.int64)
    channels = np.arange(labels.shape[1]).reshape(1, -1, *([1] * (labels.ndim - 2)))
    return 2 * channels + labels.astype(np.int64)


def key_count(task: str, num_classes: int) -> int:
    return 2 * num_classes if task == "multilabel" else max(num_classes, 2)


def sample_confidences(keys: np.ndarray, confidence: np.ndarray, valid: np.ndarray, count: int,
                       stride: int = STRIDE) -> list[np.ndarray]:
    """Per key, the confidences (uint8) of every `stride`-th valid pixel predicted as it."""
    keys, confidence, valid = (a.reshape(-1)[::stride] for a in (keys, confidence, np.broadcast_to(valid, keys.shape)))
    keys, confidence = keys[valid], confidence[valid]
    return [confidence[keys == k] for k in range(count)]


def thresholds(samples: list[np.ndarray], ratio: float) -> np.ndarray:
    """Per key, the confidence (uint8 units) that the top `ratio` of its sampled pixels reach; 0
    (everything kept) at ratio >= 1 and for a key no sampled pixel was predicted as."""
    out = np.zeros(len(samples), np.float32)
    if ratio >= 1:
        return out
    for k, values in enumerate(samples):
        if len(values):
            ordered = np.sort(values)[::-1]
            out[k] = ordered[max(0, math.ceil(len(ordered) * ratio) - 1)]
    return out


def assign(labels: np.ndarray, keys: np.ndarray, confidence: np.ndarray, limits: np.ndarray, valid: np.ndarray,
           ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The predicted label where its confidence reaches its key's threshold (and the pixel is
    valid), else `ignore_index`; with the pixels left out (N x H x W, any channel for multi-label)."""
    keep = (confidence >= limits[keys]) & np.broadcast_to(valid, keys.shape)
    out = np.where(keep, labels, np.uint8(ignore_index)).astype(np.uint8)
    left_out = ~keep
    return out, (left_out.any(1) if left_out.ndim == 4 else left_out)


def agreement(preds: np.ndarray, task: str, settings: PseudoSettings) -> np.ndarray:
    """Where the previous round's top-n agree (the class-balanced builder's IM filter: they are
    the last n of the teachers read; the first is the best so far, which may be of an earlier
    round), shaped to broadcast over the labels; everywhere without the filter."""
    n = min(settings.teachers, len(preds))
    valid = ~inconsistency_mask(preds[-n:], task == "multilabel")
    if not settings.agreement or n == 1:
        valid[:] = True
    return valid[:, None] if task == "multilabel" else valid


def curriculum_thresholds(teachers, n: int, task: str, num_classes: int, settings: PseudoSettings) -> np.ndarray:
    """DST-CBC's per-class thresholds (uint8 units) over the whole unlabeled split, from the best
    model's confidence, inside the teachers' agreement where that filter is on."""
    count = key_count(task, num_classes)
    samples = [[] for _ in range(count)]
    for start in range(0, n, CHUNK_IMAGES):
        preds, confidence = teachers(slice(start, min(n, start + CHUNK_IMAGES)), None, task, num_classes)
        keys = class_keys(preds[0], task == "multilabel")
        for k, values in enumerate(sample_confidences(keys, confidence, agreement(preds, task, settings), count)):
            samples[k].append(values)
    return thresholds([np.concatenate(v) for v in samples], settings.ratio)


class ClassBalanced(Builder):
    """DST-CBC's round: the best model so far labels the unlabeled images, each class kept down
    to its round's threshold; with `agreement`, only where the previous round's top-n agree."""
    earlier_generations = True
    summary = ("DST-CBC: the best model so far, each class kept down to the confidence its top `ratios` share "
               "of pixels reaches")

    def resolve(self, section: dict, generation: int) -> dict:
        settings = {k: v for k, v in section.items() if k != "ratios"}
        ratios = section["ratios"]
        settings["ratio"] = ratios[min(max(generation, 1), len(ratios)) - 1]
        return settings

    def uses_top_n(self, settings: PseudoSettings) -> bool:
        return bool(settings.agreement)

    def needs_confidence(self, settings: PseudoSettings) -> bool:
        return True

    def teachers(self, selection, settings, parent, generation):
        best = parent_id("best_so_far", selection, generation)
        return list(dict.fromkeys([best, *(selection["selected"][:settings.teachers] if settings.agreement else [])]))

    def prepare(self, teachers, n, task, num_classes, settings) -> tuple[dict, np.ndarray]:
        limits = curriculum_thresholds(teachers, n, task, num_classes, settings)
        return {"ratio": settings.ratio, "thresholds": (limits / 255).round(4).tolist()}, limits

    def build(self, preds, confidence, images, task, num_classes, ignore, settings, prepared=None) -> PseudoLabels:
        keys = class_keys(preds[0], task == "multilabel")
        labels, left_out = assign(preds[0], keys, confidence, prepared, agreement(preds, task, settings), ignore)
        return PseudoLabels(images, labels, left_out, left_out.reshape(len(images), -1).mean(1),
                            np.ones(len(images), bool))
