"""Run a trained model over splits of a data store -> a predictions store of hard labels and
the confidence of each (the probability of the predicted label as uint8, p x 255), so that
confidence thresholds need no second pass of the model.

Inference runs without gradients on the job's numerical path (runtime/numeric_path.py), in batches of the
prediction batch size; a split is read, predicted and written in chunks, so memory stays flat
in the number of images.
"""
from __future__ import annotations

import numpy as np

from ..data.read import label_shape, split_indices
from ..io import atomic_output, create_array, open_store
from ..models.checkpoints import load_checkpoint
from ..models.inference import predict_labels_with_confidence
from ..runtime.devices import pick_device
from ..runtime.numeric_path import choose_path
from ..runtime.process import start_job
from ..settings import NumericRequest

CHUNK_IMAGES = 512   # images read, predicted and written at a time


def run(checkpoint: str, data: str, out: str, splits: list[str], batch_size: int = 64, threads: int = 1) -> dict:
    start_job(threads)
    store = open_store(data)
    task, class_names, size = store.attrs["task"], store.attrs["class_names"], tuple(store.attrs["size"])
    device = pick_device()
    model, ckpt = load_checkpoint(checkpoint, device)
    path = choose_path(NumericRequest.of_checkpoint(ckpt.get("settings")), size, device)
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
            "numeric_path": path.as_dict(), "train_numeric_path": ckpt.get("numeric_path"),
            "confidence": "probability of the predicted label x 255, rounded (uint8)",
        })
    return counts
