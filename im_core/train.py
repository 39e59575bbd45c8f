"""Train one model on the labeled split, optionally plus a pseudo-label store.

Trainers: `supervised` trains from scratch; `consistency` fine-tunes the previous generation's
best model with cross-entropy on the labeled images plus an MSE between its probabilities on two
noised views of each unlabeled image. AdamW, cosine learning-rate schedule with linear warm-up,
flip and scale-crop augmentation (plus photometric noise if configured), validation mIoU after
every epoch, the best checkpoint kept. Seeds fix weights, data order and augmentation.
"""
from __future__ import annotations

import logging
import math
import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from . import metrics
from .augment import COPY_NOISE, augmented_copies, has_photometric, photometric
from .data import SegmentationSamples, read_split, training_arrays
from .io import InputError, atomic_output, open_store
from .losses import output_channels, probabilities, segmentation_loss
from .models import build_model, count_parameters
from .predict import load_checkpoint, pick_device, predict_labels, teacher_checkpoints

log = logging.getLogger("im_core.train")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def training_set(store, pseudo_path: str | None, settings: dict | None = None) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """Images with ground truth (labeled split, or all for FDT), their augmented copies (ALDT),
    plus the pseudo store's (masked) images and labels; also whether the labels use an extra IM
    class, and how many images carry ground truth."""
    settings = settings or {}
    labeled = training_arrays(store, settings.get("labels", "labeled"))
    images, labels, extra_class = [labeled.images], [labeled.masks], False
    if settings.get("labeled_copies", 0):
        copies = augmented_copies(labeled.images, labeled.masks, settings["labeled_copies"], settings["augment"],
                                  settings["copies_seed"])
        images.append(copies[0])
        labels.append(copies[1])
    if pseudo_path:
        pseudo = open_store(pseudo_path)
        keep = pseudo["keep"][:]
        images.append(pseudo["images"].get_orthogonal_selection((np.flatnonzero(keep),)))
        labels.append(pseudo["labels"].get_orthogonal_selection((np.flatnonzero(keep),)))
        extra_class = pseudo.attrs["label_mode"] == "im_class" and pseudo.attrs["task"] == "multiclass"
    return np.concatenate(images), np.concatenate(labels), extra_class, len(labeled.index)


class UnlabeledViews:
    """Two noised views of random unlabeled images (same geometry, so pixels correspond)."""

    def __init__(self, images: np.ndarray, batch_size: int, augment: dict, generator: torch.Generator):
        if len(images) == 0:
            raise InputError("the consistency trainer needs unlabeled images; the data set has none")
        self.images, self.batch_size, self.generator = images, batch_size, generator
        self.noise = augment if has_photometric(augment) else {**augment, **COPY_NOISE}

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.images), (self.batch_size,), generator=self.generator).numpy()
        x = torch.from_numpy(self.images[np.sort(pick)]).permute(0, 3, 1, 2).float()
        flip = torch.rand(len(x), generator=self.generator) < 0.5
        x[flip] = x[flip].flip(-1)
        views = [torch.stack([photometric(img, self.noise, self.generator) for img in x]) for _ in range(2)]
        return views[0], views[1]


def run(data: str, out: str, settings: dict, pseudo: str | None = None, threads: int = 1,
        model_id: str = "", generation: int = 0, progress: bool = True,
        init_selection: str | None = None, init_checkpoints: list[str] | None = None) -> dict:
    torch.set_num_threads(max(1, threads))
    device = pick_device()
    gen = seed_everything(settings["seed"])
    store = open_store(data)
    task, class_names, ignore = store.attrs["task"], store.attrs["class_names"], store.attrs["ignore_index"]
    images, labels, extra_class, n_labeled = training_set(store, pseudo, settings)
    val = read_split(store, "val")

    consistency = settings.get("trainer", "supervised") == "consistency"
    if consistency:
        if not (init_selection and init_checkpoints):
            raise InputError("trainer 'consistency' fine-tunes the previous generation's best model: "
                             "pass --init-selection and --init-checkpoints")
        init_path = teacher_checkpoints(init_selection, init_checkpoints, 1)[0]
        teacher, teacher_ckpt = load_checkpoint(init_path, device)
        model_args = teacher_ckpt["model_args"]
        model = build_model(**model_args).to(device)
        model.load_state_dict(teacher_ckpt["state_dict"])
        del teacher
        unlabeled = UnlabeledViews(read_split(store, "unlabeled", with_masks=False).images, settings["batch_size"],
                                   settings["augment"], gen)
        log.info("fine-tuning %s (val mIoU %.4f) with consistency weight %g", init_path,
                 teacher_ckpt["best_val_miou"], settings["consistency_weight"])
    else:
        model_args = dict(in_channels=3, out_channels=output_channels(task, len(class_names), extra_class),
                          alpha=settings["model"]["alpha"], dropout=settings["model"]["dropout"])
        model = build_model(**model_args).to(device)
    loader = torch.utils.data.DataLoader(
        SegmentationSamples(images, labels, settings["augment"]), batch_size=settings["batch_size"],
        shuffle=True, drop_last=len(images) > settings["batch_size"], generator=gen, num_workers=0,
    )
    steps_per_epoch = len(loader)
    total = settings["steps"] or settings["epochs"] * steps_per_epoch
    eval_every = settings["eval_every"] or steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    warmup = int(settings["warmup_fraction"] * total)
    log.info("model %s gen %d: %d training images (%d labeled), %d val, %d params, %d steps of batch %d on %s",
             model_id, generation, len(images), n_labeled, len(val.index),
             count_parameters(model), total, settings["batch_size"], device)

    best = {"val_miou": -1.0, "step": 0, "state_dict": None}
    history = []
    step, started = 0, time.time()
    bar = tqdm(total=total, desc=f"train {model_id}", disable=not progress, file=sys.stderr, leave=False, mininterval=2.0)
    model.train()
    while step < total:
        for x, y in loader:
            if step >= total:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, settings["lr"], warmup)
            loss = segmentation_loss(model(x.to(device)), y.to(device), task, ignore)
            if consistency:
                view1, view2 = unlabeled.sample()
                p1 = probabilities(model(view1.to(device)), task)
                p2 = probabilities(model(view2.to(device)), task)
                loss = loss + settings["consistency_weight"] * torch.nn.functional.mse_loss(p1, p2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % eval_every == 0 or step == total:
                pred = predict_labels(model, val.images, task, len(class_names), device=device)
                val_miou = metrics.score(pred, val.masks, class_names, ignore, task == "multilabel")["miou"]
                history.append({"step": step, "loss": float(loss.detach()), "val_miou": val_miou})
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val_miou=f"{val_miou:.3f}")
                log.info("step %d/%d loss %.4f val mIoU %.4f", step, total, float(loss.detach()), val_miou)
                if val_miou > best["val_miou"]:
                    best = {"val_miou": val_miou, "step": step,
                            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    bar.close()
    ckpt = {"state_dict": best["state_dict"], "model_args": model_args, "task": task, "class_names": class_names,
            "model_id": model_id, "generation": generation, "best_val_miou": best["val_miou"],
            "best_step": best["step"], "history": history, "settings": settings,
            "train_seconds": time.time() - started}
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
    log.info("best val mIoU %.4f at step %d; %.1f s", best["val_miou"], best["step"], ckpt["train_seconds"])
    return {k: ckpt[k] for k in ("best_val_miou", "best_step", "train_seconds")}
