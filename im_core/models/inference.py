"""Inference without gradients on a job's numerical path: logits, probabilities (optionally
averaged over flips), hard labels and their confidence (the probability of the predicted label
as uint8, p x 255), batch by batch."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..runtime.numeric_path import NumericPath
from .losses import confidence, discretize, probabilities


def _default_path(model: torch.nn.Module) -> NumericPath:
    return NumericPath(device=str(next(model.parameters()).device), precision="fp32", channels_last=False)


def _as_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """N x H x W x C uint8 arrays (as stored) or N x C x H x W tensors -> N x C x H x W."""
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return images


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, images: np.ndarray | torch.Tensor, batch_size: int,
                   path: NumericPath | None = None) -> Iterator[torch.Tensor]:
    """Yield float32 logits batch by batch (images: N x H x W x C arrays or N x C x H x W tensors)."""
    path = path or _default_path(model)
    for start in range(0, len(images), batch_size):
        x = path.input(_as_batch(images[start:start + batch_size])).float()
        with path.autocast():
            logits = model(x)
        yield logits.float()


def predict_probabilities(model: torch.nn.Module, images: np.ndarray, task: str, batch_size: int = 64,
                          flips: bool = False, path: NumericPath | None = None) -> np.ndarray:
    """Class probabilities N x C x H x W (float32); with flips, averaged over the identity and the
    horizontal, vertical and both flips (each flipped back): the input ensemble."""
    model.eval()
    flip_dims = [(), (-1,), (-2,), (-2, -1)] if flips else [()]
    total = None
    for dims in flip_dims:
        batch = _as_batch(images)
        batch = batch.flip(dims) if dims else batch
        probs = torch.cat([probabilities(logits, task) for logits in predict_logits(model, batch, batch_size, path)])
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return (total / len(flip_dims)).cpu().numpy()


def predict_labels(model: torch.nn.Module, images: np.ndarray | torch.Tensor, task: str, num_classes: int,
                   batch_size: int = 64, path: NumericPath | None = None) -> np.ndarray:
    return predict_labels_with_confidence(model, images, task, num_classes, batch_size, path, False)[0]


def predict_labels_with_confidence(model: torch.nn.Module, images: np.ndarray | torch.Tensor, task: str,
                                   num_classes: int, batch_size: int = 64, path: NumericPath | None = None,
                                   with_confidence: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Hard labels (uint8) and, where asked, their confidence (uint8, p x 255), shaped alike."""
    was_training = model.training
    model.eval()
    labels, confidences = [], []
    for logits in predict_logits(model, images, batch_size, path):
        labels.append(discretize(logits, task, num_classes).cpu().numpy())
        if with_confidence:
            confidences.append(confidence(logits, task, num_classes).cpu().numpy())
    model.train(was_training)
    if not labels:
        return np.zeros((0,), np.uint8), np.zeros((0,), np.uint8) if with_confidence else None
    return np.concatenate(labels), np.concatenate(confidences) if with_confidence else None
