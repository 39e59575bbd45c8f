"""Train one model: set-up, data, loop, evaluation, checkpoint.

The model starts from scratch or from a parent of an earlier generation (trainers/start.py) and
learns from the labeled split, optionally plus a pseudo-label store (data/training_set.py), in
batches augmented as whole tensors (data/batches.py), with its trainer's objective
(trainers/: the supervised loss, plus the trainer's own terms and the loss terms its settings
ask for), AdamW or SGD with a warm-up and cosine or poly schedule (trainers/optim.py), on the
numerical path runtime/numeric_path.py chooses (recorded in the checkpoint). It is validated
on the development set every `eval_every` steps (default: every epoch), and the checkpoint best
by the selection's metric is kept. Seeds fix weights, data order and augmentation. At every
validation the whole state is saved (runtime/resume.py), so a killed job continues where it
stopped and ends as an uninterrupted run would.
"""
from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from .. import metrics
from ..data.batches import Batches, TrainingTensors
from ..data.read import SplitArrays, read_dev, read_split, split_indices
from ..data.training_set import left_out_pixels, training_set
from ..errors import InputError
from ..io import atomic_output, check_claim, open_store
from ..methods.stages import lineage
from ..models import count_parameters
from ..models.inference import predict_labels
from ..runtime import resume
from ..runtime.cuda_graphs import training_forward
from ..runtime.devices import pick_device
from ..runtime.numeric_path import NumericPath, choose_path
from ..runtime.process import start_job
from ..settings import TrainSettings
from ..trainers import load_trainer, trainer_spec
from ..trainers.base import TrainingContext
from ..trainers.optim import lr_at, make_optimizer, scaled_lr
from ..trainers.start import initial_model
from ..trainers.step import Objective, objective, training_step

log = logging.getLogger("im_core.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Job:
    """What the set-up decides: the data store's facts, the numerical path, the fingerprint."""
    settings: TrainSettings
    task: str
    class_names: list
    ignore: int
    path: NumericPath
    fingerprint: str


@dataclass
class Loop:
    """Everything the loop runs: model, objective, optimizer, batches, validation."""
    model: torch.nn.Module
    model_args: dict
    parent: dict | None
    objective: Objective
    forward: object
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: Batches
    trainer: object
    total: int
    eval_every: int
    warmup: int
    val: SplitArrays
    val_images: torch.Tensor
    data_device: str


@dataclass
class Progress:
    """Where the loop is: the best checkpoint so far, the validation history, the resumes."""
    best: dict
    history: list = field(default_factory=list)
    first_step: int = 1
    resumed_at: list = field(default_factory=list)
    elapsed: float = 0.0


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone() for k, v in model.state_dict().items()}


def check_options(settings: TrainSettings) -> None:
    """The trainer's own settings are exactly those its TRAINERS row names."""
    own = set(trainer_spec(settings.trainer, where="--settings: trainer").settings)
    if set(settings.options) != own:
        raise InputError(f"--settings: trainer {settings.trainer!r} takes the settings {sorted(own)}, got "
                         f"{sorted(settings.options)}")


# ---------------------------------------------------------------- set-up

def graph_eligible(settings: TrainSettings) -> bool:
    """Whether a training step calls the model's forward once per batch, as a CUDA graph needs:
    a trainer that does (its TRAINERS row) without GIST/RIST's feature consistency (which runs
    the model through another method), and an encoder that is not frozen for some steps only
    (a graph recorded with the encoder's gradients would keep computing them), without gradient
    checkpointing (its recomputation runs Python hooks inside the backward pass)."""
    return (trainer_spec(settings.trainer).one_forward and not settings.feature_consistency
            and (settings.model.freeze_encoder_steps or 0) <= 0 and not settings.model.gradient_checkpointing)


def set_up(data: str, settings: TrainSettings, store, inputs: list[str], model_id: str, generation: int) -> Job:
    """The store's facts, the numerical path (runtime/numeric_path.py; on a CPU the workflow has
    settled it in the settings) and the job's fingerprint (settings, inputs, code, path)."""
    check_options(settings)
    seed_everything(settings.seed)
    task, class_names, ignore = store.attrs["task"], store.attrs["class_names"], store.attrs["ignore_index"]
    path = choose_path(settings.numeric, tuple(store.attrs["size"]), graph_eligible=graph_eligible(settings))
    fingerprint = resume.fingerprint(settings.to_params(), inputs, model_id=model_id, generation=generation,
                                     numeric_path=path.as_dict())
    return Job(settings, task, class_names, ignore, path, fingerprint)


# ---------------------------------------------------------------- data and model

def build_loop(job: Job, store, pseudo: str | None, model_id: str, init_selection: str | None,
               init_checkpoints: list[str] | None) -> Loop:
    """The training set as tensors on the data device, the development set, the model (fresh or
    a parent), the trainer and the objective, the optimizer and the batches."""
    s, path = job.settings, job.path
    arrays = training_set(store, pseudo, s)
    data_device = path.data_device(arrays.images.nbytes + arrays.labels.nbytes + arrays.blocked.nbytes
                                   + (arrays.weights.nbytes if arrays.weights is not None else 0))
    generator = torch.Generator(device=data_device).manual_seed(s.seed)
    train_data = TrainingTensors.from_arrays(arrays.images, arrays.labels, arrays.blocked, data_device, arrays.pseudo,
                                             arrays.weights)
    extra_class, n_labeled = arrays.extra_class, arrays.n_labeled
    del arrays
    val = read_dev(store, s.dev_images, s.dev_seed or 0)
    val_images = path.input(torch.from_numpy(val.images).permute(0, 3, 1, 2))
    trainer_class = load_trainer(s.trainer)
    model, model_args, parent = initial_model(s, job.task, len(job.class_names), extra_class, path, init_selection,
                                              init_checkpoints, model_id, in_channels=val.images.shape[-1])
    if s.model.gradient_checkpointing:  # a training-time option: not in model_args, the checkpoint rebuilds without it
        model.set_gradient_checkpointing(True)
    batches = Batches(train_data, s.batch_size, s.augment, generator, s.pseudo_augment, s.labeled_share)
    total = s.total_steps(batches.steps_per_epoch)
    ctx = TrainingContext(s, model, model_args, job.task, len(job.class_names), path, generator, data_device,
                          lambda: read_split(store, "unlabeled", with_masks=False).images,
                          lambda: left_out_pixels(pseudo, split_indices(store, "unlabeled"), f"model {model_id}"))
    trainer = trainer_class(ctx)
    goal = objective(s, trainer, model, job.task, job.ignore)
    own = trainer.modules()
    opt = make_optimizer(model, s.optimizer, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum, own=own,
                         decoder_lr_multiplier=s.model.decoder_lr_multiplier)
    # a compiled model has no forward_with_features/encode for the objectives that call them
    forward = (torch.compile(model) if path.compile and not goal.calls_model_parts
               else training_forward(model, path))
    log.info("model %s: %d training images (%d labeled), %.1f MB as tensors, %d val, %d params, %d steps of batch "
             "%d on %s (data on %s); checkpoint chosen by val %s", model_id, len(train_data), n_labeled,
             train_data.nbytes() / 1e6, len(val.index), count_parameters(model), total, s.batch_size, path.as_dict(),
             data_device, s.select_metric)
    return Loop(model, model_args, parent, goal, forward, opt, path.grad_scaler(), batches, trainer, total,
                s.validate_every(batches.steps_per_epoch), int(s.warmup_fraction * total), val, val_images,
                data_device)


# ---------------------------------------------------------------- evaluation

def validate(job: Job, loop: Loop) -> dict:
    pred = predict_labels(loop.model, loop.val_images, job.task, len(job.class_names),
                          job.settings.predict_batch_size, job.path)
    return metrics.score(pred, loop.val.masks, job.class_names, job.ignore, job.task == "multilabel")


def evaluate(job: Job, loop: Loop, progress: Progress, step: int, loss: torch.Tensor) -> dict:
    """Validate, record the history and keep the best weights by the selection's metric."""
    metric = job.settings.select_metric
    scores, loss_value = validate(job, loop), float(loss.detach())
    progress.history.append({"step": step, "loss": loss_value, "val_miou": scores["miou"],
                             "val_miou_per_image": scores["miou_per_image"]})
    log.info("step %d/%d loss %.4f val mIoU %.4f (per image %.4f)", step, loop.total, loss_value, scores["miou"],
             scores["miou_per_image"])
    if scores[metric] > progress.best["score"]:
        progress.best = {"score": scores[metric], "scores": scores, "step": step, "state_dict": _cpu_state(loop.model)}
    return scores


# ---------------------------------------------------------------- resume

def training_state(loop: Loop) -> dict:
    """What the loop needs besides its bookkeeping to go on exactly where it is (runtime/resume.py): the
    model, optimizer, scaler, batches, random generators, and the objective's weights of its own
    (the EMA teacher, CCT's decoders) by name."""
    return {"model": loop.model.state_dict(), "optimizer": loop.opt.state_dict(), "scaler": loop.scaler.state_dict(),
            "batches": loop.batches.state(), "random": resume.random_states(),
            "extras": {name: extra.state_dict() for name, extra in loop.objective.extras.items()}}


def restore_training(saved: dict, loop: Loop) -> None:
    loop.model.load_state_dict(saved["model"])
    for name, extra in loop.objective.extras.items():
        extra.load_state_dict(saved["extras"][name])
    loop.opt.load_state_dict(saved["optimizer"])
    loop.scaler.load_state_dict(saved["scaler"])
    loop.batches.load_state(saved["batches"])
    resume.set_random_states(saved["random"])


def resume_or_start(job: Job, loop: Loop, state_file, state_key: str) -> Progress:
    """The saved state of this job where there is one; else a fresh start (a trainer that keeps
    its starting model validates it first, as a checkpoint candidate)."""
    saved = resume.load(state_file, state_key)
    if saved is not None:
        restore_training(saved, loop)
        log.info("resuming from step %d of %d (%s)", saved["step"], loop.total, state_file)
        return Progress(saved["best"], saved["history"], saved["step"] + 1, saved["resumed_at"] + [saved["step"]],
                        saved["train_seconds"])
    progress = Progress({"score": -1.0, "scores": {}, "step": 0, "state_dict": None})
    if loop.trainer.keeps_start:
        scores = validate(job, loop)
        metric = job.settings.select_metric
        progress.best = {"score": scores[metric], "scores": scores, "step": 0, "state_dict": _cpu_state(loop.model)}
        log.info("starting model: val %s %.4f", metric, progress.best["score"])
    return progress


# ---------------------------------------------------------------- loop

def stalled(history: list[dict], best_step: int, patience: int | None) -> bool:
    """Early stopping: whether the last `patience` validations all came after the best one
    (checked before each step, so a resumed job stops where the uninterrupted one did)."""
    return bool(patience) and sum(h["step"] > best_step for h in history) >= patience


def train_loop(job: Job, loop: Loop, progress: Progress, out: str, state_file, state_key: str, model_id: str,
               show_progress: bool) -> float:
    """Steps from where the progress is to the end: the learning rate, the trainer's draw, the
    batch, one optimizer step; validation and the resume state every `eval_every` steps.
    Returns the seconds trained."""
    s = job.settings
    started = time.time() - progress.elapsed
    bar = tqdm(total=loop.total, initial=progress.first_step - 1, desc=f"train {model_id}", disable=not show_progress,
               file=sys.stderr, leave=False, mininterval=2.0)
    loop.model.train()
    for step in range(progress.first_step, loop.total + 1):
        if stalled(progress.history, progress.best["step"], s.patience):
            log.info("early stop at step %d: %d validations without a new best (best at step %d)", step - 1,
                     s.patience, progress.best["step"])
            break
        lr = lr_at(step - 1, loop.total, s.lr, loop.warmup, s.schedule, s.poly_power)
        for group in loop.opt.param_groups:
            group["lr"] = scaled_lr(group, lr)
        if s.model.freeze_encoder_steps:
            loop.model.freeze_encoder(s.model.frozen_at(step))
        drawn = loop.trainer.draw()
        x, y = next(loop.batches)
        loss = training_step(loop.forward, loop.opt, loop.scaler, job.path, x, y, loop.objective, drawn, step,
                             loop.total, loop.batches.last_pseudo if loop.objective.gamma else None,
                             loop.batches.last_weights)
        bar.update(1)
        if step % loop.eval_every == 0 or step == loop.total:
            scores = evaluate(job, loop, progress, step, loss)
            bar.set_postfix(loss=f"{float(loss):.3f}", val=f"{scores[s.select_metric]:.3f}")
            check_claim(out)  # an orphaned job stops here once a newer run has taken the job over
            resume.save(state_file, training_state(loop) | {
                "fingerprint": state_key, "step": step, "best": progress.best, "history": progress.history,
                "resumed_at": progress.resumed_at, "train_seconds": time.time() - started})
    bar.close()
    return time.time() - started


# ---------------------------------------------------------------- checkpoint

def write_checkpoint(job: Job, loop: Loop, progress: Progress, store, out: str, model_id: str, generation: int,
                     pseudo: str | None, seconds: float) -> dict:
    s, path = job.settings, job.path
    if path.cuda_graph and not loop.forward.recorded:
        path = replace(path, cuda_graph=False)  # recording failed (warned): the job ran eagerly
    best = progress.best
    ckpt = {"state_dict": best["state_dict"], "model_args": loop.model_args, "task": job.task,
            "class_names": job.class_names, "palette": store.attrs["palette"], "size": list(store.attrs["size"]),
            "ignore_index": job.ignore, "model_id": model_id, "generation": generation,
            "lineage": lineage(generation, loop.parent, pseudo, s.labels, s.labeled_share),
            "select_metric": s.select_metric,
            "best_val_score": best["score"], "best_val_miou": best["scores"]["miou"], "best_step": best["step"],
            "history": progress.history, "settings": s.to_params(), "numeric_path": path.as_dict(),
            "resumed_at": progress.resumed_at,
            "fingerprint": job.fingerprint,
            "train_seconds": seconds}
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
    resume.record_done(out)
    log.info("best val %s %.4f at step %d; %.1f s", s.select_metric, best["score"], best["step"], seconds)
    return ckpt


def run(data: str, out: str, settings: TrainSettings, pseudo: str | None = None, threads: int = 1,
        model_id: str = "", generation: int = 0, progress: bool = True,
        init_selection: str | None = None, init_checkpoints: list[str] | None = None) -> dict:
    start_job(threads)
    store = open_store(data)
    inputs = [data] + [p for p in (pseudo, init_selection) if p] + list(init_checkpoints or [])
    job = set_up(data, settings, store, inputs, model_id, generation)
    finished = resume.restore_done(out, job.fingerprint)
    if finished is not None:  # finished before, then removed by an interrupted Snakemake
        log.info("restored the model this job had finished (%s): the same settings, inputs and code",
                 resume.done_path(out))
        return _summary(finished)
    loop = build_loop(job, store, pseudo, model_id, init_selection, init_checkpoints)
    state_file = resume.resume_path(out)
    # the random generators' states are per device: a state from a run whose data lived elsewhere does not fit
    state_key = f"{job.fingerprint}:{loop.data_device}"
    state = resume_or_start(job, loop, state_file, state_key)
    seconds = train_loop(job, loop, state, out, state_file, state_key, model_id, progress)
    ckpt = write_checkpoint(job, loop, state, store, out, model_id, generation, pseudo, seconds)
    state_file.unlink(missing_ok=True)
    return _summary(ckpt)


def _summary(ckpt: dict) -> dict:
    return {k: ckpt[k] for k in ("best_val_miou", "best_val_score", "best_step", "resumed_at", "train_seconds")}
