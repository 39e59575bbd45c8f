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
    job's seeded generator and where the data lives, and the unlabeled split's images (read on
    first call)."""
    settings: TrainSettings
    model: torch.nn.Module
    model_args: dict
    task: str
    num_classes: int
    path: NumericPath
    generator: torch.Generator
    data_device: str
    unlabeled_images: Callable[[], np.ndarray]


class Trainer:
    """The supervised trainer: no inputs of its own, no loss beyond the batch's."""
    keeps_start = False          # its starting model (a parent) is a checkpoint candidate too
    calls_model_parts = False    # calls the model's encode/decode (a compiled model has neither)

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

    def state_dict(self) -> dict | None:
        """Its state for resume beyond the model, the optimizer and the generators (None: none)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        return ""
