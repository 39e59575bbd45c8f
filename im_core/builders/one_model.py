"""Builders from one model's prediction: the best teacher (Noisy Student: Xie et al., "Self-training
with Noisy Student improves ImageNet classification", CVPR 2020) and each student's own parent
(GIST/RIST/FIST: Teh et al., "The GIST and RIST of Iterative Self-Training for Semi-Supervised
Segmentation", CRV 2022). Both can erase the pixels whose confidence is below `label_erase`
(Label Erase), the confidence taken with the logits divided by `temperature` (which needs the
model run again); the store's `im` then holds the erased pixels."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..methods.stages import parent_id
from ..settings import PseudoSettings
from .base import Builder, PseudoLabels, unmasked


def label_erase(labels: np.ndarray, confidence: np.ndarray, threshold: float, ignore_index: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Label Erase: pixels whose confidence (uint8, p x 255) is below `threshold` (a probability)
    become `ignore_index`; with the erased pixels (N x H x W, any channel for multi-label)."""
    erased = confidence.astype(np.float32) < np.float32(threshold) * 255
    out = np.where(erased, np.uint8(ignore_index), labels)
    return out, (erased.any(1) if erased.ndim == 4 else erased)


def tempered_prediction(model, images: np.ndarray, task: str, num_classes: int, temperature: float, path
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One model's hard labels (1 x ...) and their confidence with the logits divided by `temperature`."""
    from ..models.inference import predict_logits
    from ..models.losses import confidence, discretize
    labels, conf = [], []
    for logits in predict_logits(model, images, 64, path):
        labels.append(discretize(logits, task, num_classes).cpu().numpy())
        conf.append(confidence(logits / temperature, task, num_classes).cpu().numpy())
    return np.concatenate(labels)[None], np.concatenate(conf)


class OneModel(Builder):
    one_model = True

    def rerun(self, models, images, task, num_classes, settings, path):
        return tempered_prediction(models[0], images, task, num_classes, settings.temperature, path)

    def build(self, preds, confidence, images, task, num_classes, ignore, settings, prepared=None) -> PseudoLabels:
        pl = unmasked(preds[0], images)
        if confidence is not None:  # Label Erase: the store's left-out mask
            pl.labels, pl.im = label_erase(pl.labels, confidence, settings.label_erase, ignore)
            pl.im_fraction = pl.im.reshape(len(pl.im), -1).mean(1)
        return pl


class BestTeacher(OneModel):
    summary = "the best teacher's prediction (Noisy Student)"


class Parent(OneModel):
    per_student = True
    summary = "each student's own parent's prediction (GIST/RIST/FIST)"

    def teachers(self, selection, settings, parent, generation):
        if not parent:
            raise InputError("pseudo_labels.builder 'parent' builds one student's pseudo-labels: pass --parent "
                             "(rank:<r> or index:<i> of the previous generation)")
        try:
            return [parent_id(parent, selection, generation)]
        except ValueError as e:
            raise InputError(f"--parent {parent}: {e}") from e
