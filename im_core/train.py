"""Train one model on the labeled split, optionally plus a pseudo-label store.

Trainers: `supervised` trains from scratch or continues a parent of the previous generation
(`init: parent`, the parent named by rank or index: stages.py), on pooled pairs or a fixed
share of ground truth per batch (L, P, FIST's mix); `consistency` fine-tunes the previous
generation's best model with cross-entropy on the labeled images plus an MSE between its
probabilities on two noised views of each unlabeled image. Optionally GIST/RIST's mean-teacher
feature consistency (mean_teacher.py). AdamW or SGD, cosine or poly learning-rate schedule
with linear warm-up (optim.py), flip and scale-crop augmentation (plus photometric noise if
configured) applied to whole batches of the training set held as tensors (batches.py), on the
numerical path runtime.py chooses (recorded in the checkpoint); validation on the development
set every `eval_every` steps (default: every epoch), the checkpoint best by the selection's
metric kept (`select_metric`; the consistency fine-tune's starting model is a candidate too).
Seeds fix weights, data order and augmentation. At every validation the whole state is saved
(resume.py), so a killed job continues where it stopped and ends as an uninterrupted run would.
"""
from __future__ import annotations

import logging
import random
import re
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import metrics, resume
from .augment import augmented_copies
from .batches import Batches, TrainingTensors, UnlabeledViews
from .data import read_dev, read_split, training_arrays
from .io import InputError, atomic_output, check_claim, open_store, read_json
from .cct import CrossConsistency
from .cuda_graphs import training_forward
from .mean_teacher import MeanTeacher
from .losses import dynamic_loss, output_channels, probabilities, segmentation_loss
from .models import build_model, count_parameters
from .optim import lr_at, make_optimizer
from .predict import checkpoints_by_id, load_checkpoint, predict_labels
from .path_timings import load_rates, rate_label
from .runtime import NumericPath, choose_path, pick_device, start_job
from .stages import parent_id, path_letter

log = logging.getLogger("im_core.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainingSet:
    images: np.ndarray    # N x H x W x C uint8
    labels: np.ndarray    # N x H x W (N x C x H x W) uint8
    blocked: np.ndarray   # N x H x W bool: input pixels blacked out inside an IM
    extra_class: bool     # the labels use an extra IM class
    n_labeled: int        # images with ground truth
    n_pseudo: int = 0     # pseudo-labeled pairs, the last ones

    @property
    def pseudo(self) -> np.ndarray:
        """N bool: the pseudo-labeled pairs (after the ground truth and its ALDT copies)."""
        return np.arange(len(self.images)) >= len(self.images) - self.n_pseudo


def training_set(store, pseudo_path: str | None, settings: dict | None = None) -> TrainingSet:
    """Images with ground truth (labeled split, or all for FDT), their augmented copies (ALDT),
    plus the pseudo store's (masked) images and labels; the blocked-input mask (the IM pixels
    blacked out in the pseudo store's images); whether the labels use an extra IM class; and
    how many images carry ground truth."""
    settings = settings or {}
    labeled = training_arrays(store, settings.get("labels", "labeled"))
    images, labels, extra_class = [labeled.images], [labeled.masks], False
    if settings.get("labeled_copies", 0):
        copies = augmented_copies(labeled.images, labeled.masks, settings["labeled_copies"], settings["augment"],
                                  settings["copies_seed"])
        images.append(copies[0])
        labels.append(copies[1])
    blocked = [np.zeros((sum(map(len, images)),) + labeled.images.shape[1:3], bool)]
    if pseudo_path:
        pseudo = open_store(pseudo_path)
        keep = (np.flatnonzero(pseudo["keep"][:]),)
        images.append(pseudo["images"].get_orthogonal_selection(keep))
        labels.append(pseudo["labels"].get_orthogonal_selection(keep))
        block_input = pseudo.attrs.get("settings", {}).get("block_input", False) and pseudo.attrs["builder"] == "im"
        im = pseudo["im"].get_orthogonal_selection(keep)
        blocked.append(im if block_input else np.zeros_like(im))
        extra_class = pseudo.attrs["label_mode"] == "im_class" and pseudo.attrs["task"] == "multiclass"
    n_pseudo = len(images[-1]) if pseudo_path else 0
    return TrainingSet(np.concatenate(images), np.concatenate(labels), np.concatenate(blocked), extra_class,
                       len(labeled.index), n_pseudo)


def initial_model(settings: dict, task: str, num_classes: int, extra_class: bool, path: NumericPath,
                  init_selection: str | None, init_checkpoints: list[str] | None, model_id: str = "",
                  in_channels: int = 3) -> tuple[torch.nn.Module, dict, dict | None]:
    """A fresh U-Net, or a parent model of the previous generation to continue from (the
    consistency trainer's, and `init: parent`); with the model's arguments and its parent
    (model id and checkpoint; None for a fresh model)."""
    model_args = dict(in_channels=in_channels, out_channels=output_channels(task, num_classes, extra_class),
                      alpha=settings["model"]["alpha"], dropout=settings["model"]["dropout"])
    consistency = settings.get("trainer", "supervised") == "consistency"
    if not consistency and settings.get("init", "scratch") == "scratch":
        return path.model(build_model(**model_args)), model_args, None
    if not (init_selection and init_checkpoints):
        what = ("trainer 'consistency' fine-tunes the previous generation's best model" if consistency
                else f"model {model_id} continues from a parent of the previous generation (init: parent)")
        raise InputError(f"{what}: pass --init-selection and --init-checkpoints")
    init_path = parent_checkpoint(init_selection, init_checkpoints, settings.get("parent", "rank:0"), model_id)
    model, ckpt = load_checkpoint(init_path, torch.device(path.device))
    if ckpt["model_args"]["in_channels"] != in_channels:
        raise InputError(f"{init_path}: the parent reads {ckpt['model_args']['in_channels']}-channel images, this "
                         f"data store holds {in_channels}-channel images")
    if ckpt["model_args"]["out_channels"] != model_args["out_channels"]:
        raise InputError(f"{init_path}: the parent has {ckpt['model_args']['out_channels']} output channels, this "
                         f"model needs {model_args['out_channels']} (pseudo_labels.label_mode im_class adds one); "
                         "a model can continue only from a parent with the same outputs")
    log.info("%s %s (%s, val mIoU %.4f)%s", "fine-tuning" if consistency else "continuing from", init_path,
             ckpt["model_id"], ckpt["best_val_miou"],
             f" with consistency weight {settings['consistency_weight']:g}" if consistency else "")
    parent = {"model_id": ckpt["model_id"], "checkpoint": str(init_path), "path": ckpt.get("lineage", {}).get("path", "")}
    return path.model(model.train()), ckpt["model_args"], parent


def parent_checkpoint(selection: str, checkpoints: list[str], parent: str, model_id: str) -> str:
    """The parent's checkpoint: `rank:<r>` the selection's r-th best (0 = best), `index:<i>` the
    previous generation's model m<i> (the same path), `best_so_far` the best model of every
    generation up to the previous one (the checkpoints must include it); the older names `best` and `same_index`
    (this model's own index) mean rank:0 and index:<this model's index>."""
    if parent in ("best", "same_index"):
        index = re.search(r"_m(\d+)$", model_id)
        if parent == "same_index" and index is None:
            raise InputError(f"model {model_id!r}: parent 'same_index' needs a model id ending in _m<i>")
        parent = "rank:0" if parent == "best" else f"index:{index.group(1)}"
    generation = re.match(r"gen(\d+)_", model_id)
    by_id = checkpoints_by_id(checkpoints)
    try:
        wanted = parent_id(parent, read_json(selection), int(generation.group(1)) if generation else 1)
    except ValueError as e:
        raise InputError(f"model {model_id}: {e} ({selection})") from e
    if parent.startswith("index:"):  # by index: the suffix, whatever the generation's id prefix
        wanted = next((m for m in by_id if m.endswith("_m" + parent.split(":")[1])), wanted)
    if wanted not in by_id:
        raise InputError(f"model {model_id}: its parent {wanted} ({parent}) is not among the checkpoints {checkpoints}")
    return by_id[wanted]


def lineage(generation: int, parent: dict | None, settings: dict, pseudo: str | None) -> dict:
    """Where a model comes from: its generation, its initialisation (from scratch, or a parent
    model's weights), its label source: "L" the labeled ground truth (with ALDT's copies),
    "L (all)" every training image's ground truth (FDT), "L+P" that pooled with pseudo-labels,
    "P" pseudo-labels only, "L:0.25+P:0.75" a fixed share of each in every batch; and its path,
    the letters (L, P, M for a mix) of the stages from its first ancestor trained from scratch
    after gen0 (a parent's path plus its own letter; gen0's is empty)."""
    source = "L" if settings.get("labels", "labeled") == "labeled" else "L (all)"
    share = settings.get("labeled_share")
    if pseudo and share is not None:
        source = {1: source, 0: "P"}.get(share, f"{source}:{share:g}+P:{1 - share:g}")
    elif pseudo:
        source += "+P"
    letter = path_letter(share, bool(pseudo)) if generation > 0 else ""
    return {"generation": generation, "init": "parent" if parent else "scratch",
            "parent": parent["model_id"] if parent else "", "parent_checkpoint": parent["checkpoint"] if parent else "",
            "label_source": source, "path": (parent["path"] if parent else "") + letter}


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone() for k, v in model.state_dict().items()}


def training_step(forward: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  path: NumericPath, x: torch.Tensor, y: torch.Tensor, task: str, ignore: int,
                  views: tuple[torch.Tensor, torch.Tensor] | None = None, consistency_weight: float = 0.0,
                  mean_teacher: MeanTeacher | None = None, unlabeled_loss: Callable[[], torch.Tensor] | None = None,
                  dynamic: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """One optimizer step on an augmented batch (plus, for the consistency trainer, the MSE
    between the probabilities on two views of unlabeled images; with a mean teacher, the
    feature consistency loss on the batch, and the teacher's update after the step; CCT's loss
    on unlabeled images, `unlabeled_loss`; DST's dynamic loss with `dynamic` = (the batch's
    pseudo-labeled flags, gamma)); returns the loss."""
    x = path.input(x)
    with path.autocast():
        if mean_teacher is not None:
            logits, features = forward.forward_with_features(x)
            feature_loss = mean_teacher.loss(features, x)
        else:
            logits = forward(x)
    y = y.to(logits.device, non_blocking=True)
    if dynamic is not None:
        loss = dynamic_loss(logits.float(), y, dynamic[0], dynamic[1], task, ignore)
    else:
        loss = segmentation_loss(logits.float(), y, task, ignore)
    if mean_teacher is not None:
        loss = loss + feature_loss
    if unlabeled_loss is not None:
        with path.autocast():
            loss = loss + unlabeled_loss()
    if views is not None:
        with path.autocast():
            p1, p2 = (probabilities(forward(path.input(v)).float(), task) for v in views)
        loss = loss + consistency_weight * torch.nn.functional.mse_loss(p1, p2)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if mean_teacher is not None:
        mean_teacher.update(forward)
    return loss.detach()  # holding the autograd graph until the next step would keep its memory


def training_state(model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   batches: Batches, extras: dict | None = None) -> dict:
    """What the loop needs besides its bookkeeping to go on exactly where it is (resume.py);
    `extras`: the add-ons with weights of their own (the EMA teacher, CCT's decoders) by name."""
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
            "batches": batches.state(), "random": resume.random_states(),
            "extras": {name: extra.state_dict() for name, extra in (extras or {}).items()}}


def restore_training(saved: dict, model: torch.nn.Module, opt: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, batches: Batches, extras: dict | None = None) -> None:
    model.load_state_dict(saved["model"])
    for name, extra in (extras or {}).items():
        extra.load_state_dict(saved["extras"][name])
    opt.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    batches.load_state(saved["batches"])
    resume.set_random_states(saved["random"])


def loss_addons(settings: dict, model: torch.nn.Module, model_args: dict, task: str, num_classes: int,
                path: NumericPath) -> tuple[MeanTeacher | None, CrossConsistency | None]:
    """The add-ons with weights of their own that the settings ask for: GIST/RIST's EMA teacher, CCT's decoders."""
    feature = settings.get("feature_consistency")
    mean_teacher = (MeanTeacher(model, feature["ema_decay"], feature["feature_dropout"], feature["feature_consistency"])
                    if feature else None)
    cct = (CrossConsistency(settings["cct"], model_args["out_channels"], model_args["alpha"], task, num_classes,
                            path.device) if settings.get("trainer") == "cct" else None)
    return mean_teacher, cct


def run(data: str, out: str, settings: dict, pseudo: str | None = None, threads: int = 1,
        model_id: str = "", generation: int = 0, progress: bool = True,
        init_selection: str | None = None, init_checkpoints: list[str] | None = None,
        path_timings: str | None = None) -> dict:
    # set-up
    start_job(threads)
    seed_everything(settings["seed"])
    store = open_store(data)
    task, class_names, ignore = store.attrs["task"], store.attrs["class_names"], store.attrs["ignore_index"]
    # timings are of CPU paths: a job that finds a GPU takes the GPU's path
    measured = load_rates(path_timings) if path_timings and pick_device().type == "cpu" else None
    path = choose_path(settings, tuple(store.attrs["size"]), measured=measured)
    select_metric = settings.get("select_metric", "miou")
    inputs = [data] + [p for p in (pseudo, init_selection) if p] + list(init_checkpoints or [])
    job_fingerprint = resume.fingerprint(settings, inputs, model_id=model_id, generation=generation,
                                         numeric_path=path.as_dict())
    finished = resume.restore_done(out, job_fingerprint)
    if finished is not None:  # finished before, then removed by an interrupted Snakemake
        log.info("restored the model this job had finished (%s): the same settings, inputs and code",
                 resume.done_path(out))
        return _summary(finished)

    # data
    arrays = training_set(store, pseudo, settings)
    data_device = path.data_device(arrays.images.nbytes + arrays.labels.nbytes + arrays.blocked.nbytes)
    generator = torch.Generator(device=data_device).manual_seed(settings["seed"])
    train_data = TrainingTensors.from_arrays(arrays.images, arrays.labels, arrays.blocked, data_device, arrays.pseudo)
    extra_class, n_labeled = arrays.extra_class, arrays.n_labeled
    del arrays
    val = read_dev(store, settings.get("dev_images"), settings.get("dev_seed", 0))
    val_images = path.input(torch.from_numpy(val.images).permute(0, 3, 1, 2))
    model, model_args, parent = initial_model(settings, task, len(class_names), extra_class, path, init_selection,
                                              init_checkpoints, model_id, in_channels=val.images.shape[-1])
    trainer = settings.get("trainer", "supervised")
    consistency = trainer == "consistency"
    unlabeled = (UnlabeledViews(read_split(store, "unlabeled", with_masks=False).images, settings["batch_size"],
                                settings["augment"], generator, data_device) if trainer in ("consistency", "cct")
                 else None)
    batches = Batches(train_data, settings["batch_size"], settings["augment"], generator,
                      settings.get("pseudo_augment"), settings.get("labeled_share"))
    total = settings["steps"] or settings["epochs"] * batches.steps_per_epoch
    eval_every = settings["eval_every"] or batches.steps_per_epoch
    mean_teacher, cct = loss_addons(settings, model, model_args, task, len(class_names), path)
    extras = {name: extra for name, extra in (("mean_teacher", mean_teacher), ("cct", cct)) if extra is not None}
    opt = make_optimizer(torch.nn.ModuleList([model, cct.decoders]) if cct else model, settings)
    scaler = path.grad_scaler()
    warmup = int(settings["warmup_fraction"] * total)
    # the add-ons call the model's forward_with_features/encode, which a compiled model does not have
    forward = torch.compile(model) if path.compile and not extras else training_forward(model, path)
    log.info("model %s gen %d: %d training images (%d labeled), %.1f MB as tensors, %d val, %d params, "
             "%d steps of batch %d on %s (data on %s); checkpoint chosen by val %s", model_id, generation,
             len(train_data), n_labeled, train_data.nbytes() / 1e6, len(val.index), count_parameters(model), total,
             settings["batch_size"], path.as_dict(), data_device, select_metric)

    def validate() -> dict:
        pred = predict_labels(model, val_images, task, len(class_names), settings.get("predict_batch_size", 64), path)
        return metrics.score(pred, val.masks, class_names, ignore, task == "multilabel")

    # resume, or start (the consistency fine-tune keeps its starting model as a candidate)
    state_file = resume.resume_path(out)
    # the random generators' states are per device: a state from a run whose data lived elsewhere does not fit
    state_key = f"{job_fingerprint}:{data_device}"
    saved = resume.load(state_file, state_key)
    if saved is not None:
        restore_training(saved, model, opt, scaler, batches, extras)
        best, history, first_step = saved["best"], saved["history"], saved["step"] + 1
        resumed_at, elapsed = saved["resumed_at"] + [saved["step"]], saved["train_seconds"]
        log.info("resuming from step %d of %d (%s)", saved["step"], total, state_file)
    else:
        best = {"score": -1.0, "scores": {}, "step": 0, "state_dict": None}
        history, first_step, resumed_at, elapsed = [], 1, [], 0.0
        if consistency:
            scores = validate()
            best = {"score": scores[select_metric], "scores": scores, "step": 0, "state_dict": _cpu_state(model)}
            log.info("starting model: val %s %.4f", select_metric, best["score"])

    # loop
    started = time.time() - elapsed
    bar = tqdm(total=total, initial=first_step - 1, desc=f"train {model_id}", disable=not progress, file=sys.stderr,
               leave=False, mininterval=2.0)
    model.train()
    for step in range(first_step, total + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, total, settings["lr"], warmup, settings.get("schedule", "cosine"),
                                settings.get("poly_power", 0.9))
        views = unlabeled.sample() if consistency else None
        cct_batch = path.input(unlabeled.flipped()) if cct else None
        x, y = next(batches)
        gamma = settings.get("dynamic_gamma", 0)
        loss = training_step(forward, opt, scaler, path, x, y, task, ignore, views,
                             settings.get("consistency_weight", 0.0), mean_teacher,
                             (lambda: cct.loss(model, cct_batch, step, total)) if cct else None,
                             (batches.last_pseudo, gamma) if gamma else None)
        bar.update(1)
        # evaluation
        if step % eval_every == 0 or step == total:
            scores, loss_value = validate(), float(loss.detach())
            history.append({"step": step, "loss": loss_value, "val_miou": scores["miou"],
                            "val_miou_per_image": scores["miou_per_image"]})
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{scores[select_metric]:.3f}")
            log.info("step %d/%d loss %.4f val mIoU %.4f (per image %.4f)", step, total, loss_value, scores["miou"],
                     scores["miou_per_image"])
            if scores[select_metric] > best["score"]:
                best = {"score": scores[select_metric], "scores": scores, "step": step, "state_dict": _cpu_state(model)}
            check_claim(out)  # an orphaned job stops here once a newer run has taken the job over
            resume.save(state_file, training_state(model, opt, scaler, batches, extras) | {
                "fingerprint": state_key, "step": step, "best": best, "history": history,
                "resumed_at": resumed_at, "train_seconds": time.time() - started})
    bar.close()
    if path.cuda_graph and not forward.recorded:
        path = replace(path, cuda_graph=False)  # recording failed (warned): the job ran eagerly

    # checkpoint
    ckpt = {"state_dict": best["state_dict"], "model_args": model_args, "task": task, "class_names": class_names,
            "palette": store.attrs["palette"], "size": list(store.attrs["size"]), "ignore_index": ignore,
            "model_id": model_id, "generation": generation, "lineage": lineage(generation, parent, settings, pseudo),
            "select_metric": select_metric,
            "best_val_score": best["score"], "best_val_miou": best["scores"]["miou"], "best_step": best["step"],
            "history": history, "settings": settings, "numeric_path": path.as_dict(),
            "path_rates": {rate_label(*key): rate for key, rate in (measured or {}).items()},
            "resumed_at": resumed_at,
            "fingerprint": job_fingerprint,
            "train_seconds": time.time() - started}
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
    resume.record_done(out)
    state_file.unlink(missing_ok=True)
    log.info("best val %s %.4f at step %d; %.1f s", select_metric, best["score"], best["step"], ckpt["train_seconds"])
    return _summary(ckpt)


def _summary(ckpt: dict) -> dict:
    return {k: ckpt[k] for k in ("best_val_miou", "best_val_score", "best_step", "resumed_at", "train_seconds")}
