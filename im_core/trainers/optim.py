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
                   momentum: float = 0.9, own: torch.nn.Module | None = None,
                   decoder_lr_multiplier: float | None = None) -> torch.optim.Optimizer:
    """The train settings' `optimizer` with its `lr`, `weight_decay` and (SGD) `momentum` for
    the model and the trainer's `own` weights. A model with an encoder of its own (a pretrained
    encoder, models/smp_models.py) gets two parameter groups, the encoder's and the rest (decoder,
    head, the trainer's weights) at `decoder_lr_multiplier` x the learning rate (the group's
    `lr_scale`, which `scaled_lr` applies); the 1x1 U-Net one group, as it always had."""
    params = parameter_groups(model, own, decoder_lr_multiplier)
    if name == "adamw":
        return _fused_or_not(torch.optim.AdamW, params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return _fused_or_not(torch.optim.SGD, params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def parameter_groups(model: torch.nn.Module, own: torch.nn.Module | None, decoder_lr_multiplier: float | None):
    """The model's (and the trainer's) parameters as the optimizer takes them."""
    if not hasattr(model, "encoder_parameters"):
        return list((torch.nn.ModuleList([model, own]) if own is not None else model).parameters())
    encoder = model.encoder_parameters()
    in_encoder = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in in_encoder] + (list(own.parameters()) if own is not None else [])
    return [{"params": encoder, "lr_scale": 1.0}, {"params": rest, "lr_scale": float(decoder_lr_multiplier or 1.0)}]


def scaled_lr(group: dict, lr: float) -> float:
    """A parameter group's learning rate at the schedule's `lr` (its `lr_scale`, 1 where it has none)."""
    return lr * group.get("lr_scale", 1.0)


def _fused_or_not(cls, params, **kw) -> torch.optim.Optimizer:
    """The fused kernel (one kernel for all parameters instead of a dozen small ops each) where
    this torch has it for the device."""
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return cls(params, **kw)


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
