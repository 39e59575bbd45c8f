"""GIST/RIST's consistency loss (their Sec. III-C, after Mean Teacher): an exponential moving
average of the student's weights is the teacher; the student's and the teacher's bottleneck
features of the same batch are globally average-pooled, dropped out, and their L1 distance is
added to the loss. The teacher follows the student after every optimizer step."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


class MeanTeacher:
    def __init__(self, student: torch.nn.Module, decay: float, dropout: float, weight: float):
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.decay, self.dropout, self.weight = decay, dropout, weight

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        return F.dropout(features.float().mean((2, 3)), self.dropout, training=True)

    def loss(self, student_features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The weighted L1 distance between the pooled features of the student and of the teacher on x."""
        with torch.no_grad():
            self.teacher.train(True)
            _, teacher_features = self.teacher.forward_with_features(x)
        return self.weight * (self.pooled(student_features) - self.pooled(teacher_features)).abs().mean()

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """teacher = decay x teacher + (1 - decay) x student for the weights; buffers (the
        BatchNorm statistics) copied."""
        for t, s in zip(self.teacher.parameters(), student.parameters(), strict=True):
            t.mul_(self.decay).add_(s.detach(), alpha=1 - self.decay)
        for t, s in zip(self.teacher.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    def state_dict(self) -> dict:
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state)
