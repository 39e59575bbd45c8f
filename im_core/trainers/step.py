"""One optimizer step: the supervised loss of the batch, the loss terms that compose with any
trainer (GIST/RIST's mean-teacher feature consistency, DST's dynamic loss), the trainer's own
loss, backward, the optimizer, and the mean teacher's update after it.

`Objective` is what a job's settings make of these (`objective`); `training_step` runs it. The
numerical-path timing job (steps/time_paths.py) times the same step with the plain objective.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..settings import TrainSettings
from ..models.losses import segmentation_loss
from ..runtime.numeric_path import NumericPath
from .base import Trainer
from .dynamic import dynamic_loss
from .mean_teacher import MeanTeacher


@dataclass
class Objective:
    """The loss of a step: the batch's criterion (cross-entropy, or with `gamma` DST's dynamic
    loss on the pseudo-labeled pairs), the mean teacher's feature term, the trainer's term."""
    task: str
    ignore: int
    trainer: Trainer | None = None
    mean_teacher: MeanTeacher | None = None
    gamma: float = 0.0
    extras: dict = field(default_factory=dict)  # name -> object with state_dict/load_state_dict (resume)

    def supervised(self, logits: torch.Tensor, y: torch.Tensor, pseudo: torch.Tensor | None,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
        """`weights`: each label's weight x 255 (a soft mask's pseudo-labels; None: all 1)."""
        if self.gamma:
            return dynamic_loss(logits, y, pseudo, self.gamma, self.task, self.ignore, weights)
        return segmentation_loss(logits, y, self.task, self.ignore, weights)

    @property
    def calls_model_parts(self) -> bool:
        """Whether a step calls the model's forward_with_features/encode/decode (a compiled model
        has none of them)."""
        return self.mean_teacher is not None or bool(self.trainer and self.trainer.calls_model_parts)


def objective(settings: TrainSettings, trainer: Trainer, model: torch.nn.Module, task: str, ignore: int) -> Objective:
    """The objective of a training job: its trainer and the loss terms its settings ask for."""
    feature = settings.feature_consistency
    mean_teacher = (MeanTeacher(model, feature.ema_decay, feature.feature_dropout, feature.feature_consistency)
                    if feature else None)
    extras = {"mean_teacher": mean_teacher} if mean_teacher else {}
    if trainer.state_dict() is not None:
        extras[settings.trainer] = trainer
    return Objective(task, ignore, trainer, mean_teacher, settings.dynamic_gamma or 0.0, extras)


def training_step(forward: Callable, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, path: NumericPath,
                  x: torch.Tensor, y: torch.Tensor, objective: Objective, drawn: object = None, step: int = 0,
                  total: int = 0, pseudo: torch.Tensor | None = None,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step on an augmented batch `x`, `y` (`pseudo`: which of its pairs are
    pseudo-labeled, for the dynamic loss; `weights`: the labels' weights x 255, a soft mask's),
    with the trainer's `drawn` inputs; returns the loss."""
    x = path.input(x)
    mean_teacher, trainer = objective.mean_teacher, objective.trainer
    shared = trainer is not None and trainer.shares_forward
    with path.autocast():
        if mean_teacher is not None:
            logits, features = forward.forward_with_features(x)
            feature_loss = mean_teacher.loss(features, x)
        elif shared:
            logits, extra = trainer.forward_with_labeled(forward, x, drawn, step, total)
        else:
            logits = forward(x)
    y = y.to(logits.device, non_blocking=True)
    if weights is not None:
        weights = weights.to(logits.device, non_blocking=True)
    loss = objective.supervised(logits.float(), y, pseudo, weights)
    if trainer is not None and trainer.supervised_weight != 1.0:
        loss = trainer.supervised_weight * loss
    if mean_teacher is not None:
        loss = loss + feature_loss
    if not shared:
        extra = trainer.loss(forward, drawn, step, total) if trainer is not None else None
    if extra is not None:
        loss = loss + extra
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if mean_teacher is not None:
        mean_teacher.update(forward)
    if trainer is not None:
        trainer.after_step(step)
    return loss.detach()  # holding the autograd graph until the next step would keep its memory
