"""What FixMatch and UniMatch V1/V2 share: the unlabeled stream and the weak-to-strong loss.

Every step draws an unlabeled batch of the labeled batch's size from its own shuffled epochs
(the position is resume state): the weak view is the experiment's flip/scale-crop
(data/augment.py `geometric`), the strong views are made from it (data/strong.py: colour
jitter, grayscale, blur) and get a CutMix box from another unlabeled image whose pseudo-label,
confidence and ignore mask follow the box. The pseudo-label is the weak view's prediction,
counted where its confidence reaches the threshold:

- multi-class: the arg-max of the softmax over the real classes (an extra IM channel is never a
  pseudo-label), confidence its probability;
- binary and multi-label: each sigmoid channel on its own, label p > 0.5, confidence
  max(p, 1 - p), so a pixel can count for one label and not for another.

The unlabeled loss is the cross-entropy (binary cross-entropy per channel) of a strong view's
logits against the pseudo-label at the confident, not-ignored pixels, summed and divided by the
number of not-ignored pixels (not by the confident ones: a batch with few confident pixels
weighs little), as the authors' code does. Pixels are ignored where the generation's
pseudo-label builder left them out (`im_online`: with builder `im`, where the previous
generation's top-n teachers disagree), warped with the weak view's geometry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import NO_AUGMENT, geometric
from ..data.batches import ShuffledEpochs
from ..data.strong import StrongAugment, cutmix_boxes, paste, strong_view
from ..errors import InputError
from ..settings import Augment


@dataclass(frozen=True)
class ContinuousSettings:
    threshold: float
    weight: float
    feature_dropout: float
    ema_decay: float
    im_online: bool
    strong: StrongAugment

    @classmethod
    def from_options(cls, section: dict) -> "ContinuousSettings":
        strong = {k: tuple(v) if isinstance(v, list) else v for k, v in section["strong"].items()}
        return cls(section["threshold"], section["weight"], section["feature_dropout"], section["ema_decay"],
                   section["im_online"], StrongAugment(**strong))


@dataclass
class Targets:
    """Pseudo-labels of a batch: the label, whether it is confident, whether the pixel counts at
    all (False: ignored). N x H x W each (multi-label: label and confident N x L x H x W)."""
    label: torch.Tensor
    confident: torch.Tensor
    valid: torch.Tensor

    def mixed(self, other: "Targets", box: torch.Tensor) -> "Targets":
        """These targets with `other`'s inside the CutMix `box` (N x H x W bool)."""
        return Targets(paste(self.label, other.label, box), paste(self.confident, other.confident, box),
                       paste(self.valid, other.valid, box))

    def flipped(self) -> "Targets":
        """The batch in reverse order (UniMatch V2 mixes each image with its mirror in the batch)."""
        return Targets(self.label.flip(0), self.confident.flip(0), self.valid.flip(0))


def pseudo_targets(logits: torch.Tensor, task: str, num_classes: int, threshold: float,
                   valid: torch.Tensor | None = None) -> Targets:
    """The weak view's pseudo-labels from its (detached) logits, confident where the probability
    of the chosen label reaches `threshold`; `valid` (N x H x W bool) the pixels that count."""
    logits = logits.detach().float()
    if task == "multiclass":
        confidence, label = logits.softmax(1)[:, :num_classes].max(1)
    else:
        p = logits.sigmoid()
        p = p[:, 0] if task == "binary" else p
        label, confidence = (p > 0.5).to(torch.uint8), torch.maximum(p, 1 - p)
    if valid is None:
        valid = torch.ones(label.shape[:1] + label.shape[-2:], dtype=torch.bool, device=label.device)
    return Targets(label, confidence >= threshold, valid)


def unlabeled_loss(logits: torch.Tensor, targets: Targets, task: str) -> torch.Tensor:
    """Cross-entropy (sigmoid channels: binary cross-entropy) of `logits` against the targets at
    their confident, valid pixels; the sum divided by the number of valid pixels (of every
    channel, multi-label)."""
    logits = logits.float()
    valid = targets.valid
    if task == "multiclass":
        per_pixel = F.cross_entropy(logits, targets.label.long(), reduction="none")
        count = valid.sum()
    else:
        logits = logits[:, 0] if task == "binary" else logits
        per_pixel = F.binary_cross_entropy_with_logits(logits, targets.label.to(logits.dtype), reduction="none")
        if task == "multilabel":
            valid = valid[:, None].expand_as(per_pixel)
        count = valid.sum()
    return (per_pixel * (targets.confident & valid)).sum() / count.clamp(min=1)


@dataclass
class Views:
    """One unlabeled batch as a step uses it: the weak view, its strong views with their CutMix
    boxes, and which pixels count (N x H x W bool)."""
    weak: torch.Tensor
    valid: torch.Tensor
    strong: list[torch.Tensor]
    boxes: list[torch.Tensor]


class UnlabeledStream:
    """Shuffled epochs of unlabeled images as weak views plus `n_strong` strong views each (with
    a CutMix box each); `left_out` (N x H x W bool, aligned with the images) marks pixels whose
    loss is ignored. The pool's order and position are the state; the draws come from the job's
    generator (saved with the batches)."""

    def __init__(self, images: np.ndarray, batch_size: int, augment: Augment | None, strong: StrongAugment,
                 generator: torch.Generator, device: torch.device | str, left_out: np.ndarray | None = None,
                 what: str = "this trainer"):
        if len(images) == 0:
            raise InputError(f"{what} learns from the unlabeled images; the data set has none")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
        self.left_out = (torch.zeros((len(images),) + images.shape[1:3], dtype=torch.bool, device=device)
                         if left_out is None else torch.from_numpy(np.ascontiguousarray(left_out)).to(device))
        self.augment, self.strong, self.generator = augment or NO_AUGMENT, strong, generator
        self.pool = ShuffledEpochs(torch.arange(len(images), device=device), batch_size, generator)

    def next(self, n_strong: int) -> Views:
        pick = self.pool.next()
        images, left_out = self.images[pick], self.left_out[pick]
        # the weak view: the experiment's geometry alone (its photometric noise is the strong view's job)
        dummy = torch.zeros(left_out.shape, dtype=torch.uint8, device=left_out.device)
        weak, _, left_out = geometric(images, dummy, left_out, self.augment, self.generator)
        n, _, h, w = weak.shape
        s = self.strong
        strong = [strong_view(weak, s, self.generator) for _ in range(n_strong)]
        boxes = [cutmix_boxes(n, h, w, s.cutmix_p, s.cutmix_area, s.cutmix_ratio, self.generator, weak.device)
                 for _ in range(n_strong)]
        return Views(weak, ~left_out, strong, boxes)

    def state(self) -> dict:
        return self.pool.state()

    def load_state(self, state: dict) -> None:
        self.pool.load_state(state)


def complementary_dropout(features: list[torch.Tensor], share: float) -> list[torch.Tensor]:
    """UniMatch V2's perturbation of the features of 2B images (strong views 1 then 2 of B
    images): in all but int(B x (1 - share)) random pairs, each channel is dropped (x0) in one
    view and doubled (x2) in the other, drawn per pair and channel; the other pairs pass
    unchanged (as the authors' code). Drawn per feature tensor (a CNN's levels differ in width; a
    ViT's tapped blocks are one width); from the global generator, as dropout."""
    out = []
    for f in features:
        b = len(f) // 2
        first = torch.randint(0, 2, (b, f.shape[1]), device=f.device).to(f.dtype) * 2
        perturbed = torch.ones(b, dtype=torch.bool, device=f.device)
        perturbed[torch.randperm(b, device=f.device)[:int(b * (1 - share))]] = False
        first = torch.where(perturbed[:, None], first, torch.ones_like(first))
        second = torch.where(perturbed[:, None], 2 - first, first)
        mask = torch.cat([first, second]).view(2 * b, f.shape[1], *([1] * (f.ndim - 2)))
        out.append(f * mask)
    return out

