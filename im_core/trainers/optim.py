"""The optimizer and the learning-rate schedule of a training job.

AdamW (the IM authors' choice; the fused kernel where the device has it) or SGD with momentum
(GIST/RIST and DST-CBC); linear warm-up, then cosine decay or polynomial ("poly") decay to
zero. A job builds a fresh optimizer, so a model that continues from a parent starts with a
reset optimizer and schedule.
"""
from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly")


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """The train settings' `optimizer` with its `lr`, `weight_decay` and (SGD) `momentum`."""
    if name == "adamw":
        return _fused_or_not(torch.optim.AdamW, model, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return _fused_or_not(torch.optim.SGD, model, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _fused_or_not(cls, model: torch.nn.Module, **kw) -> torch.optim.Optimizer:
    """The fused kernel (one kernel for all parameters instead of a dozen small ops each) where
    this torch has it for the device."""
    try:
        return cls(model.parameters(), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return cls(model.parameters(), **kw)


def lr_at(step: int, total: int, base_lr: float, warmup: int, schedule: str = "cosine", power: float = 0.9) -> float:
    """Linear warm-up over `warmup` steps, then cosine or poly ((1 - progress) ** power) decay to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "poly":
        return base_lr * (1 - progress) ** power
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
