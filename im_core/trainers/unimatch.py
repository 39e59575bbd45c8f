"""UniMatch V1 (Yang, Qi, Feng, Zhang and Shi, "Revisiting Weak-to-Strong Consistency in
Semi-Supervised Semantic Segmentation", CVPR 2023, https://arxiv.org/abs/2208.09910): FixMatch
(fixmatch.py: the same streams, pseudo-labels and CutMix source) with two strong views, each
with its own CutMix box, and a feature-perturbation stream: the weak view's encoder features
(every tensor the decoder takes) pass through channel dropout and the decoder, and learn the
weak view's pseudo-label.

    loss = (supervised + weight x (0.25 x s1 + 0.25 x s2 + 0.5 x fp)) / 2

every unlabeled term on the confident, not-ignored pixels (weak_strong.py). The labeled batch,
the weak views and the perturbed features go through the decoder as one batch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .fixmatch import Trainer as FixMatch
from .weak_strong import Views, unlabeled_loss


class Trainer(FixMatch):
    strong_views = 2
    calls_model_parts = True

    def forward_with_labeled(self, forward: Callable, x: torch.Tensor, drawn: tuple[Views, Views], step: int,
                             total: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, source = drawn
        model, path, task = self.ctx.model, self.ctx.path, self.ctx.task
        source_targets = self.eval_targets(source)
        n, m = len(x), len(views.weak)
        features = model.encode(torch.cat([x, path.input(views.weak)]))
        perturbed = [F.dropout2d(f[n:], self.cfg.feature_dropout, training=True) for f in features]
        logits_x, logits_w, logits_fp = model.decode([torch.cat([f, p]) for f, p in zip(features, perturbed)]
                                                     ).split([n, m, m])
        targets = self.targets(logits_w, views.valid)
        strong = forward(torch.cat([self.mixed(views, source, 0), self.mixed(views, source, 1)])).chunk(2)
        s1, s2 = (unlabeled_loss(logits, targets.mixed(source_targets, box.to(logits.device)), task)
                  for logits, box in zip(strong, views.boxes))
        fp = unlabeled_loss(logits_fp, targets, task)
        return logits_x, self.cfg.weight * (0.25 * s1 + 0.25 * s2 + 0.5 * fp) / 2
