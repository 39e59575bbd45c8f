"""Run a trained model over splits of a data store -> a predictions store of hard labels and
the confidence of each (the probability of the predicted label as uint8, p x 255), so that
confidence thresholds need no second pass of the model.

Inference runs without gradients on the job's numerical path (runtime.py), in batches of the
prediction batch size; a split is read, predicted and written in chunks, so memory stays flat
in the number of images.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from .data import label_shape, split_indices
from .io import atomic_output, create_array, open_store
from .losses import confidence, discretize, probabilities
from .models import build_model
from .runtime import NumericPath, choose_path, pick_device, start_job

CHUNK_IMAGES = 512   # images read, predicted and written at a time

__all__ = ["pick_device", "load_checkpoint", "checkpoints_by_id", "predict_logits", "predict_labels",
           "predict_labels_with_confidence", "predict_probabilities", "run"]


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = build_model(**ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def checkpoints_by_id(checkpoints: list[str]) -> dict[str, str]:
    """Model id -> checkpoint path."""
    return {torch.load(p, map_location="cpu", weights_only=False)["model_id"]: p for p in checkpoints}


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


def run(checkpoint: str, data: str, out: str, splits: list[str], batch_size: int = 64, threads: int = 1) -> dict:
    start_job(threads)
    store = open_store(data)
    task, class_names, size = store.attrs["task"], store.attrs["class_names"], tuple(store.attrs["size"])
    device = pick_device()
    model, ckpt = load_checkpoint(checkpoint, device)
    path = choose_path(ckpt.get("settings", {}), size, device)
    model = path.model(model)
    shape = label_shape(task, len(class_names), size)
    dims = ("image", "label", "y", "x") if task == "multilabel" else ("image", "y", "x")
    counts = {}
    with atomic_output(out) as tmp:
        group = open_store(tmp, mode="w")
        for split in splits:
            index = split_indices(store, split)
            sub = group.require_group(split)
            labels = create_array(sub, "labels", (len(index), *shape), np.uint8, dims)
            confidences = create_array(sub, "confidence", (len(index), *shape), np.uint8, dims)
            for start in range(0, len(index), CHUNK_IMAGES):
                part = index[start:start + CHUNK_IMAGES]
                images = store["images"].get_orthogonal_selection((part,))
                labels[start:start + len(part)], confidences[start:start + len(part)] = predict_labels_with_confidence(
                    model, images, task, len(class_names), batch_size, path)
            create_array(sub, "index", index.shape, index.dtype, ("image",))[:] = index
            counts[split] = len(index)
        group.attrs.update({
            "kind": "im_core.predictions", "checkpoint": str(checkpoint), "task": task,
            "class_names": class_names, "palette": store.attrs["palette"],
            "ignore_index": store.attrs["ignore_index"], "model_id": ckpt.get("model_id"),
            "generation": ckpt.get("generation"), "lineage": ckpt.get("lineage", {}), "splits": splits,
            "numeric_path": path.as_dict(),
            "confidence": "probability of the predicted label x 255, rounded (uint8)",
        })
    return counts
