"""Segmentation metrics: confusion matrix, data-set-level mIoU, the IM paper's per-image mIoU.

Label arrays are integer class maps (N x H x W) for multi-class and binary tasks, or 0/1
channel maps (N x C x H x W) for multi-label tasks, where each channel is scored as its own
foreground class. Pixels whose target equals `ignore_index` never count.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """C x C counts, rows = ground truth, columns = prediction."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    pred = np.clip(pred[valid], 0, num_classes)  # anything outside the classes is a miss
    counts = np.bincount(target[valid] * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)[:, :num_classes]


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class absent from both prediction and ground truth."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _as_channels(labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """Multi-label N x C x H x W -> C x N x H x W so each channel can be scored as binary."""
    return np.moveaxis(labels, 1, 0) if multilabel else labels[None]


def dataset_confusions(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int, multilabel: bool) -> np.ndarray:
    """One confusion matrix for multi-class; one 2 x 2 matrix per channel for multi-label."""
    if not multilabel:
        return confusion_matrix(pred, target, num_classes, ignore_index)[None]
    return np.stack([confusion_matrix(p, t, 2, ignore_index) for p, t in zip(_as_channels(pred, True), _as_channels(target, True))])


def class_ious(confusions: np.ndarray, multilabel: bool) -> np.ndarray:
    if multilabel:  # each channel's foreground IoU is that label's IoU
        return np.array([iou_from_confusion(cm)[1] for cm in confusions])
    return iou_from_confusion(confusions[0])


def per_image_confusions(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int,
                         multilabel: bool) -> np.ndarray:
    """One set of `dataset_confusions` per image (N x K x a x a): summed over any subset of the
    images they give that subset's data-set-level mIoU (`miou_of`), as a bootstrap over images needs."""
    return np.stack([dataset_confusions(p[None], t[None], num_classes, ignore_index, multilabel)
                     for p, t in zip(pred, target)])


def miou_of(confusions: np.ndarray, multilabel: bool) -> float:
    """Data-set-level mIoU of summed confusions (K x a x a)."""
    ious = class_ious(confusions, multilabel)
    return float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else float("nan")


def per_image_miou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255, multilabel: bool = False) -> float:
    """The IM authors' mIoU: per image, mean IoU over the classes present in its ground truth;
    then the mean over images. Images without any valid ground-truth pixel are skipped."""
    scores = []
    for p, t in zip(pred, target):
        if multilabel:
            ious = [iou_from_confusion(confusion_matrix(pc, tc, 2, ignore_index))[1] for pc, tc in zip(p, t) if np.any(tc == 1)]
        else:
            cm = confusion_matrix(p, t, num_classes, ignore_index)
            present = cm.sum(1) > 0
            ious = list(iou_from_confusion(cm)[present])
        if ious:
            scores.append(float(np.mean(ious)))
    return float(np.mean(scores)) if scores else float("nan")


def score(pred: np.ndarray, target: np.ndarray, class_names: list[str], ignore_index: int = 255, multilabel: bool = False) -> dict:
    """All metrics of one prediction set against its ground truth, as a flat dict."""
    num_classes = len(class_names)
    confusions = dataset_confusions(pred, target, num_classes, ignore_index, multilabel)
    ious = class_ious(confusions, multilabel)
    correct = sum(np.trace(cm) for cm in confusions)
    total = sum(cm.sum() for cm in confusions)
    out = {
        "miou": float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else float("nan"),
        "miou_per_image": per_image_miou(pred, target, num_classes, ignore_index, multilabel),
        "pixel_accuracy": float(correct / total) if total else float("nan"),
    }
    out.update({f"iou_{name}": float(v) for name, v in zip(class_names, ious)})
    return out


def pseudo_label_quality(pseudo: np.ndarray, target: np.ndarray, ignore_index: int, num_classes: int,
                         class_names: list[str] | None = None) -> dict:
    """Coverage = share of pixels (with known ground truth) that got a real-class pseudo-label;
    accuracy = share of those that are right. IM-class and ignored pixels count as uncovered.
    With class names, per class too: `pseudo_coverage_<c>` the share of the class's true pixels
    that got a pseudo-label, `pseudo_accuracy_<c>` the share of the pixels labeled c that are c;
    multi-label, per label: the same for its present pixels, and `pseudo_recall_<label>` the
    share of its present pixels labeled present."""
    known = target != ignore_index
    covered = known & (pseudo != ignore_index) & (pseudo < (2 if pseudo.ndim == 4 else num_classes))
    n_known, n_covered = int(known.sum()), int(covered.sum())
    out = {
        "pseudo_coverage": n_covered / n_known if n_known else float("nan"),
        "pseudo_accuracy": float((pseudo[covered] == target[covered]).mean()) if n_covered else float("nan"),
    }
    if class_names and pseudo.ndim == 3:
        for c, name in enumerate(class_names):
            truly, labeled = known & (target == c), covered & (pseudo == c)
            out[f"pseudo_coverage_{name}"] = float((truly & covered).sum() / truly.sum()) if truly.any() else float("nan")
            out[f"pseudo_accuracy_{name}"] = float((target[labeled] == c).mean()) if labeled.any() else float("nan")
    elif class_names:  # multi-label: per label, its present pixels
        for k, name in enumerate(class_names):
            truly, labeled = known[:, k] & (target[:, k] == 1), covered[:, k] & (pseudo[:, k] == 1)
            out[f"pseudo_coverage_{name}"] = float((truly & covered[:, k]).sum() / truly.sum()) if truly.any() else float("nan")
            out[f"pseudo_accuracy_{name}"] = float((target[:, k][labeled] == 1).mean()) if labeled.any() else float("nan")
            out[f"pseudo_recall_{name}"] = float((truly & labeled).sum() / truly.sum()) if truly.any() else float("nan")
    return out
