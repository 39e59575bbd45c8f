"""UniMatch V2 (Yang, Zhao and Zhao, "UniMatch V2: Pushing the Limit of Semi-Supervised Semantic
Segmentation", IEEE TPAMI 2025, https://arxiv.org/abs/2410.10777): the pseudo-label of the weak
view comes from an EMA teacher in eval mode (decay min(1 - 1/t, ema_decay) at step t, weights
and buffers), the two strong views' CutMix boxes are filled from the batch in reverse order, and
their encoder features get complementary channel dropout (weak_strong.complementary_dropout: a
channel dropped in one view is doubled in the other) before one decoder pass.

    loss = (supervised + weight x (s1 + s2) / 2) / 2

The labeled batch goes through the model on its own (as the authors' code). The student is what
is validated and kept; the teacher is resume state.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ..data.strong import paste
from .base import Trainer as Base, TrainingContext
from .weak_strong import ContinuousSettings, UnlabeledStream, Views, complementary_dropout, pseudo_targets, unlabeled_loss


class Trainer(Base):
    calls_model_parts = True
    supervised_weight = 0.5

    def __init__(self, ctx: TrainingContext):
        super().__init__(ctx)
        s = ctx.settings
        self.cfg = ContinuousSettings.from_options(s.options["continuous"])
        self.stream = UnlabeledStream(ctx.unlabeled_images(), s.batch_size, s.augment, self.cfg.strong, ctx.generator,
                                      ctx.data_device, ctx.left_out() if self.cfg.im_online else None,
                                      f"trainer {s.trainer!r}")
        self.teacher = copy.deepcopy(ctx.model).requires_grad_(False).eval()

    def draw(self) -> Views:
        return self.stream.next(2)

    def loss(self, forward: Callable, views: Views, step: int, total: int) -> torch.Tensor:
        model, path, task = self.ctx.model, self.ctx.path, self.ctx.task
        with torch.no_grad(), path.autocast():
            weak = self.teacher(path.input(views.weak))
        targets = pseudo_targets(weak, task, self.ctx.num_classes, self.cfg.threshold, views.valid.to(weak.device))
        images = [path.input(paste(s, s.flip(0), box)) for s, box in zip(views.strong, views.boxes)]
        with path.autocast():
            features = complementary_dropout(model.encode(torch.cat(images)), self.cfg.feature_dropout)
            strong = model.decode(features).chunk(2)
        s1, s2 = (unlabeled_loss(logits, targets.mixed(targets.flipped(), box.to(logits.device)), task)
                  for logits, box in zip(strong, views.boxes))
        return self.cfg.weight * (s1 + s2) / 2 / 2

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """teacher = r x teacher + (1 - r) x student, r = min(1 - 1/step, ema_decay) (step 1:
        the student's copy), for the weights and the floating-point buffers; counters copied."""
        r = min(1 - 1 / step, self.cfg.ema_decay)
        for t, s in zip(self.teacher.parameters(), self.ctx.model.parameters(), strict=True):
            t.mul_(r).add_(s.detach(), alpha=1 - r)
        for t, s in zip(self.teacher.buffers(), self.ctx.model.buffers(), strict=True):
            if t.is_floating_point():
                t.mul_(r).add_(s, alpha=1 - r)
            else:
                t.copy_(s)

    def state_dict(self) -> dict:
        return {"stream": self.stream.state(), "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state(state["stream"])
        self.teacher.load_state_dict(state["teacher"])

    def describe(self) -> str:
        return f" with threshold {self.cfg.threshold:g}, EMA teacher decay up to {self.cfg.ema_decay:g}"
