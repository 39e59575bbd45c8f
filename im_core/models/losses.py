"""Losses and output discretization for the three task types.

- multiclass: softmax over the classes (plus an optional extra "IM" class), cross-entropy;
- binary: one sigmoid channel, foreground = 1;
- multilabel: one sigmoid channel per label, targets are 0/1 per channel.
Target pixels equal to `ignore_index` never contribute to the loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TASKS = ("multiclass", "binary", "multilabel")


def output_channels(task: str, num_classes: int, extra_im_class: bool = False) -> int:
    if task == "multiclass":
        return num_classes + int(extra_im_class)
    if task == "binary":
        return 1
    if task == "multilabel":
        return num_classes
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, task: str, ignore_index: int = 255,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over the non-ignored pixels (0 where every pixel is ignored). `target` is
    N x H x W (N x C x H x W for multilabel); `weights` (its shape, uint8: weight x 255, a soft
    mask's) scale each pixel's loss, the sum still divided by the count of non-ignored pixels.
    No host synchronisation, so a GPU never waits."""
    valid = target != ignore_index
    count = valid.sum().clamp(min=1)
    if task == "multiclass" and weights is None:
        return F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="sum") / count
    if task == "multiclass":
        per_pixel = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="none")
    else:
        logits = logits[:, 0] if task == "binary" else logits
        per_pixel = F.binary_cross_entropy_with_logits(logits, torch.where(valid, target, 0).to(logits.dtype),
                                                       reduction="none") * valid
    if weights is not None:
        per_pixel = per_pixel * (weights.to(per_pixel.dtype) / 255)
    return per_pixel.sum() / count


@torch.no_grad()
def discretize(logits: torch.Tensor, task: str, num_classes: int) -> torch.Tensor:
    """Hard labels as uint8: argmax over the real classes (an extra IM channel is never chosen),
    or sigmoid > 0.5 per channel."""
    if task == "multiclass":
        return logits[:, :num_classes].argmax(1).to(torch.uint8)
    if task == "binary":
        return (logits[:, 0] > 0).to(torch.uint8)
    return (logits > 0).to(torch.uint8)


@torch.no_grad()
def confidence(logits: torch.Tensor, task: str, num_classes: int) -> torch.Tensor:
    """The probability of the label `discretize` picks, as uint8 (p x 255, rounded): the softmax
    probability of the arg-max real class, or for sigmoid outputs max(p, 1 - p) per channel."""
    if task == "multiclass":
        p = logits.float().softmax(1)[:, :num_classes].amax(1)
    else:
        p = logits.float().sigmoid()
        p = torch.maximum(p, 1 - p)
        p = p[:, 0] if task == "binary" else p
    return (p * 255).round_().to(torch.uint8)


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Softmax over the channels (multi-class), else a sigmoid per channel."""
    return logits.softmax(1) if task == "multiclass" else logits.sigmoid()


def discretize_probabilities(probs: torch.Tensor, task: str, num_classes: int) -> torch.Tensor:
    """Hard labels from (averaged) probabilities, as `discretize` does from logits."""
    if task == "multiclass":
        return probs[:, :num_classes].argmax(1)
    if task == "binary":
        return probs[:, 0] > 0.5
    return probs > 0.5
