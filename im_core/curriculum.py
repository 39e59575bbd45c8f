"""DST-CBC's class-balanced curriculum (`../shared/papers/dst-cbc.txt`, Sec. 3): per class, a
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

STRIDE = 16  # every 16th pixel's confidence goes into the thresholds (the official code's)


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
