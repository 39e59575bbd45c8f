"""DST's dynamic loss (Feng et al., "DMT: Dynamic Mutual Training for Semi-Supervised Learning",
Pattern Recognition 2022): a pseudo-labeled pixel's cross-entropy weighted by the model's own
detached probability of its pseudo class to the power gamma; ground truth weighs 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dynamic_loss(logits: torch.Tensor, target: torch.Tensor, pseudo: torch.Tensor, gamma: float, task: str,
                 ignore_index: int = 255, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy, a pseudo-labeled pair's pixels (`pseudo`: N bool) weighted by the
    model's detached probability of their target to the power `gamma`, ground truth weighted 1;
    the sum over the batch's non-ignored pixels divided by their count (not by the sum of the
    weights; `weights`, a soft mask's x 255, scale them further). gamma = 0 is
    `models.losses.segmentation_loss`."""
    valid = target != ignore_index
    count = valid.sum().clamp(min=1)
    if task == "multiclass":
        safe = torch.where(valid, target, 0).long()
        per_pixel = F.cross_entropy(logits, safe, reduction="none")
        p_target = logits.detach().softmax(1).gather(1, safe[:, None])[:, 0]
    else:
        logits = logits[:, 0] if task == "binary" else logits
        safe = torch.where(valid, target, 0).to(logits.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
        p_on = logits.detach().sigmoid()
        p_target = torch.where(safe > 0, p_on, 1 - p_on)
    shape = (-1,) + (1,) * (per_pixel.ndim - 1)
    weight = torch.where(pseudo.view(shape), p_target.pow(gamma), torch.ones_like(p_target))
    if weights is not None:
        weight = weight * (weights.to(weight.dtype) / 255)
    return (per_pixel * weight * valid).sum() / count
