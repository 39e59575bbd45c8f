"""The IM paper's ensemble baselines, without any mask: Model Ensemble (the argmax of the top-n
teachers' averaged probabilities) and Input Ensemble (the best teacher's probabilities averaged
over the identity and three flips). Both run the teachers again: averaged probabilities are not
in their stored predictions."""
from __future__ import annotations

import numpy as np

from ..settings import PseudoSettings
from .base import Builder


def ensemble_predictions(models: list, images: np.ndarray, task: str, num_classes: int, flips: bool,
                         batch_size: int = 64, path=None) -> np.ndarray:
    """Hard labels from the probabilities averaged over models (and over flips), 1 x N x ..."""
    import torch
    from ..models.inference import predict_probabilities
    from ..models.losses import discretize_probabilities
    total = 0
    for model in models:
        total = total + predict_probabilities(model, images, task, batch_size, flips=flips, path=path)
    labels = discretize_probabilities(torch.from_numpy(total / len(models)), task, num_classes)
    return labels.numpy().astype(np.uint8)[None]


class ModelEnsemble(Builder):
    summary = "argmax of the top-n teachers' averaged probabilities, no mask"

    def uses_top_n(self, settings: PseudoSettings) -> bool:
        return True

    def reruns(self, settings: PseudoSettings) -> bool:
        return True

    def teachers(self, selection, settings, parent, generation):
        return selection["selected"][:settings.teachers]

    def rerun(self, models, images, task, num_classes, settings, path):
        return ensemble_predictions(models, images, task, num_classes, False, path=path), None


class InputEnsemble(Builder):
    summary = "the best teacher's probabilities averaged over flips"

    def reruns(self, settings: PseudoSettings) -> bool:
        return True

    def rerun(self, models, images, task, num_classes, settings, path):
        return ensemble_predictions(models, images, task, num_classes, True, path=path), None
