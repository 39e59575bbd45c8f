"""What a trainer is: the objective of one training job beyond the supervised loss of its batch.

The training loop (steps/train.py) draws, per step, the trainer's own inputs (`draw`, before the
labeled batch, from the job's seeded generator), then the labeled batch, and calls
`trainers.step.training_step`, which adds the trainer's `loss` to the supervised loss of the
batch. A trainer with weights of its own (CCT's decoders) trains them with the model
(`modules`) and saves them in the resume state (`state_dict`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..settings import TrainSettings
from ..runtime.numeric_path import NumericPath


@dataclass
class TrainingContext:
    """What a trainer may use: the job's settings, model and numerical path, the task, the
    job's seeded generator and where the data lives, the unlabeled split's images and the
    pixels of them the generation's pseudo-labels left out (each read when called)."""
    settings: TrainSettings
    model: torch.nn.Module
    model_args: dict
    task: str
    num_classes: int
    path: NumericPath
    generator: torch.Generator
    data_device: str
    unlabeled_images: Callable[[], np.ndarray]
    left_out: Callable[[], np.ndarray] | None = None  # the pseudo-label store's left-out pixels of them (im_online)


class Trainer:
    """The supervised trainer: no inputs of its own, no loss beyond the batch's."""
    keeps_start = False          # its starting model (a parent) is a checkpoint candidate too
    calls_model_parts = False    # calls the model's encode/decode (a compiled model has neither)
    shares_forward = False       # runs the labeled batch itself, with its own inputs (`forward_with_labeled`)
    supervised_weight = 1.0      # the labeled batch's loss is multiplied by this

    def __init__(self, ctx: TrainingContext):
        self.ctx = ctx

    def modules(self) -> torch.nn.Module | None:
        """Weights of its own, trained with the model's (None: none)."""
        return None

    def draw(self) -> object:
        """This step's inputs of its own (unlabeled images), drawn before the labeled batch."""
        return None

    def loss(self, forward: Callable, drawn: object, step: int, total: int) -> torch.Tensor | None:
        """Its loss for the step (added to the batch's supervised loss; None: nothing)."""
        return None

    def forward_with_labeled(self, forward: Callable, x: torch.Tensor, drawn: object, step: int,
                             total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A trainer that `shares_forward`: the labeled batch's logits and its own loss, from one
        forward of the labeled batch with its unlabeled one (one BatchNorm batch, as the authors'
        code runs them); called inside the path's autocast."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After the optimizer's step (an EMA teacher follows the model)."""

    def state_dict(self) -> dict | None:
        """Its state for resume beyond the model, the optimizer and the generators (None: none)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        return ""
