"""FixMatch for segmentation (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with
Consistency and Confidence", NeurIPS 2020, https://arxiv.org/abs/2001.07685), as UniMatch's
authors run it for segmentation (their fixmatch.py):

    pseudo-label = the model's own confident prediction on the weak view (no gradient)
    loss = (supervised + weight x CE(strong view with CutMix, pseudo-label)) / 2

The labeled batch and the weak views go through the model as one batch (one set of BatchNorm
statistics); the CutMix source is a second unlabeled batch whose pseudo-labels come from the
model in eval mode. Shared pieces: weak_strong.py.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..data.strong import paste
from .base import Trainer as Base, TrainingContext
from .weak_strong import ContinuousSettings, Targets, UnlabeledStream, Views, pseudo_targets, unlabeled_loss


class Trainer(Base):
    shares_forward = True
    supervised_weight = 0.5
    strong_views = 1

    def __init__(self, ctx: TrainingContext):
        super().__init__(ctx)
        s = ctx.settings
        self.cfg = ContinuousSettings.from_options(s.options["continuous"])
        left_out = ctx.left_out() if self.cfg.im_online else None
        images = ctx.unlabeled_images()
        self.streams = [UnlabeledStream(images, s.batch_size, s.augment, self.cfg.strong, ctx.generator,
                                        ctx.data_device, left_out, f"trainer {s.trainer!r}") for _ in range(2)]

    def draw(self) -> tuple[Views, Views]:
        """This step's unlabeled batch and the batch its CutMix boxes are filled from."""
        return tuple(stream.next(self.strong_views) for stream in self.streams)

    def targets(self, logits: torch.Tensor, valid: torch.Tensor) -> Targets:
        return pseudo_targets(logits, self.ctx.task, self.ctx.num_classes, self.cfg.threshold,
                              valid.to(logits.device))

    @torch.no_grad()
    def eval_targets(self, views: Views) -> Targets:
        """Pseudo-labels of the CutMix source batch, from the model in eval mode."""
        model = self.ctx.model
        model.eval()
        try:
            return self.targets(model(self.ctx.path.input(views.weak)), views.valid)
        finally:
            model.train()

    def mixed(self, views: Views, source: Views, i: int) -> torch.Tensor:
        """Strong view i with the source batch's strong view i inside its CutMix boxes."""
        return self.ctx.path.input(paste(views.strong[i], source.strong[i], views.boxes[i]))

    def forward_with_labeled(self, forward: Callable, x: torch.Tensor, drawn: tuple[Views, Views], step: int,
                             total: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, source = drawn
        source_targets = self.eval_targets(source)
        logits_x, logits_w = forward(torch.cat([x, self.ctx.path.input(views.weak)])).split([len(x), len(views.weak)])
        targets = self.targets(logits_w, views.valid).mixed(source_targets, views.boxes[0].to(logits_w.device))
        unsup = unlabeled_loss(forward(self.mixed(views, source, 0)), targets, self.ctx.task)
        return logits_x, 0.5 * self.cfg.weight * unsup

    def state_dict(self) -> dict:
        return {"streams": [stream.state() for stream in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        for stream, saved in zip(self.streams, state["streams"], strict=True):
            stream.load_state(saved)

    def describe(self) -> str:
        return f" with threshold {self.cfg.threshold:g}, unlabeled weight {self.cfg.weight:g}"
