"""Run a trained model over splits of a data store -> a predictions store of hard labels."""
from __future__ import annotations

import os

import numpy as np
import torch

from .io import InputError, atomic_output, open_store, read_json, write_array
from .losses import discretize, probabilities
from .models import build_model
from .data import read_split


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = build_model(**ckpt["model_args"]).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def teacher_checkpoints(selection: str, checkpoints: list[str], n: int) -> list[str]:
    """The checkpoints of the top-n models of a selection file, best first."""
    chosen = read_json(selection)["selected"][:n]
    by_id = {torch.load(p, map_location="cpu", weights_only=False)["model_id"]: p for p in checkpoints}
    missing = [m for m in chosen if m not in by_id]
    if missing:
        raise InputError(f"{selection}: models {missing} are not among the checkpoints {checkpoints}")
    return [by_id[m] for m in chosen]


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int, device: torch.device):
    """Yield logits batch by batch for N x H x W x 3 uint8 images."""
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        yield model(x.permute(0, 3, 1, 2).float())


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: np.ndarray, task: str, batch_size: int = 32,
                          flips: bool = False) -> np.ndarray:
    """Class probabilities N x C x H x W (float32); with flips, averaged over the identity and the
    horizontal, vertical and both flips (each flipped back): the input ensemble."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device).permute(0, 3, 1, 2).float()
        dims_list = [(), (-1,), (-2,), (-2, -1)] if flips else [()]
        total = 0
        for dims in dims_list:
            xi = x.flip(dims) if dims else x
            p = probabilities(model(xi), task)
            total = total + (p.flip(dims) if dims else p)
        out.append((total / len(dims_list)).cpu().numpy())
    return np.concatenate(out)


def predict_labels(model: torch.nn.Module, images: np.ndarray, task: str, num_classes: int,
                   batch_size: int = 32, device: torch.device | None = None) -> np.ndarray:
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [discretize(logits, task, num_classes).cpu().numpy()
           for logits in predict_logits(model, images, batch_size, device)]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def run(checkpoint: str, data: str, out: str, splits: list[str], batch_size: int = 32, threads: int = 1) -> dict:
    torch.set_num_threads(max(1, threads))
    device = pick_device()
    model, ckpt = load_checkpoint(checkpoint, device)
    store = open_store(data)
    task, class_names = store.attrs["task"], store.attrs["class_names"]
    counts = {}
    with atomic_output(out) as tmp:
        group = open_store(tmp, mode="w")
        for split in splits:
            arrays = read_split(store, split, with_masks=False)
            labels = predict_labels(model, arrays.images, task, len(class_names), batch_size, device)
            sub = group.require_group(split)
            dims = ("image", "label", "y", "x") if labels.ndim == 4 else ("image", "y", "x")
            write_array(sub, "labels", labels, dims)
            write_array(sub, "index", arrays.index, ("image",))
            counts[split] = len(labels)
        group.attrs.update({
            "kind": "im_core.predictions", "checkpoint": str(checkpoint), "task": task,
            "class_names": class_names, "palette": store.attrs["palette"],
            "ignore_index": store.attrs["ignore_index"], "model_id": ckpt.get("model_id"),
            "generation": ckpt.get("generation"), "splits": splits,
        })
    return counts
