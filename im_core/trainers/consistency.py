"""The consistency trainer (the IM paper's "Consistency Loss" baseline): the previous generation's
best model fine-tuned with cross-entropy on the labeled images plus the MSE between its
probabilities on two noised views of random unlabeled images, weighted by `consistency_weight`.
The starting model is a checkpoint candidate too, so the fine-tune never ends below it."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..data.batches import UnlabeledViews
from ..models.losses import probabilities
from .base import Trainer as Base, TrainingContext


class Trainer(Base):
    keeps_start = True

    def __init__(self, ctx: TrainingContext):
        super().__init__(ctx)
        self.weight = ctx.settings.options["consistency_weight"]
        self.views = UnlabeledViews(ctx.unlabeled_images(), ctx.settings.batch_size, ctx.settings.augment,
                                    ctx.generator, ctx.data_device)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views.sample()

    def loss(self, forward: Callable, drawn, step: int, total: int) -> torch.Tensor:
        path, task = self.ctx.path, self.ctx.task
        with path.autocast():
            p1, p2 = (probabilities(forward(path.input(v)).float(), task) for v in drawn)
        return self.weight * F.mse_loss(p1, p2)

    def describe(self) -> str:
        return f" with consistency weight {self.weight:g}"
