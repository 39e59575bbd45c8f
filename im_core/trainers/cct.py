"""CCT, cross-consistency training (Ouali, Hudelot and Tami, "Semi-Supervised Semantic Segmentation
with Cross-Consistency Training", CVPR 2020), as a stage-0 trainer.

The model's encoder is shared by its main decoder, trained on the labeled images, and by
auxiliary decoders of the same structure that see perturbed encoder features (every tensor its
decoder takes: the 1x1 U-Net's bottleneck and skips, an smp encoder's feature pyramid, a ViT's
tapped blocks on the patch grid) of unlabeled images and are trained to agree with the main decoder's detached
prediction there: MSE between their probabilities, averaged over the decoders, weighted by
w x exp(-5 (1 - t)^2) over the first `rampup` of training. Only the main decoder is kept, so a
CCT checkpoint is a plain model of its architecture (models.auxiliary_decoder builds the
others). The perturbations follow the official code's defaults; each is
a small function on feature tensors.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..models.losses import discretize, probabilities
from ..models import auxiliary_decoder
from ..data.batches import UnlabeledViews
from .base import Trainer as Base, TrainingContext

PERTURBATIONS = ("vat", "dropout", "cutout", "context_masking", "object_masking", "feature_drop", "feature_noise")
# the paper's set, and the compact default for small U-Nets (one decoder each of three cheap ones)
FULL_DECODERS = {"vat": 2, "dropout": 6, "cutout": 6, "context_masking": 2, "object_masking": 2,
                 "feature_drop": 6, "feature_noise": 6}
COMPACT_DECODERS = {"feature_noise": 1, "dropout": 1, "feature_drop": 1}


def feature_noise(x: torch.Tensor, bound: float = 0.3) -> torch.Tensor:
    """x + x * n, n ~ U(-bound, bound), one noise map shared by the batch (as the official code)."""
    noise = (torch.rand(x.shape[1:], device=x.device, dtype=x.dtype) * 2 - 1) * bound
    return x + x * noise


def spatial_dropout(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Whole channels dropped with probability p (the rest scaled by 1 / (1 - p))."""
    return F.dropout2d(x, p, training=True)


def feature_drop(x: torch.Tensor, low: float = 0.7, high: float = 0.9) -> torch.Tensor:
    """Zero the positions whose channel mean exceeds U(low, high) x its maximum in the image: the
    most activated regions go."""
    attention = x.mean(1, keepdim=True)
    peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
    threshold = peak * torch.empty_like(peak).uniform_(low, high)
    return x * (attention < threshold)


def object_map(labels: torch.Tensor, task: str, background: int = 0) -> torch.Tensor:
    """Class map N x H x W of the predicted labels: multi-class as is; binary and multi-label 1
    where anything is predicted, else 0 (so the background is 0 for them)."""
    if task == "multilabel":
        return labels.amax(1).long()
    return labels.long()


def resize_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An N x 1 x H x W mask at the spatial size of a feature tensor (nearest)."""
    return F.interpolate(mask.float(), size=like.shape[-2:], mode="nearest").to(like.dtype)


def cutout_keep_mask(classes: np.ndarray, background: int = 0, erase: float = 0.4) -> np.ndarray:
    """N x 1 x H x W float: 0 inside a centred sub-box of each predicted object's bounding box
    (an object: a connected region of one non-background class) covering `erase` of its area,
    1 elsewhere."""
    keep = np.ones((len(classes), 1, *classes.shape[1:]), np.float32)
    side = math.sqrt(erase)
    for i, image in enumerate(classes):
        for c in np.unique(image):
            if c == background:
                continue
            regions, _ = ndimage.label(image == c)
            for rows, cols in ndimage.find_objects(regions):
                h, w = rows.stop - rows.start, cols.stop - cols.start
                eh, ew = round(h * side), round(w * side)
                top, left = rows.start + (h - eh) // 2, cols.start + (w - ew) // 2
                keep[i, 0, top:top + eh, left:left + ew] = 0
    return keep


def vat_perturbation(features: list[torch.Tensor], decoder: torch.nn.Module, target: torch.Tensor, task: str,
                     xi: float = 1e-6, eps: float = 2.0) -> list[torch.Tensor]:
    """Virtual adversarial noise: the direction (per image, over all encoder tensors) in which a
    tiny step moves the decoder's probabilities furthest from `target`, scaled to norm `eps`."""
    def normalise(parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Unit L2 norm per image over all parts (scaled by the largest value first: the gradients
        of a step of size xi are tiny enough to underflow when squared)."""
        peak = torch.stack([p.abs().flatten(1).amax(1) for p in parts]).amax(0).clamp_min(1e-30).view(-1, 1, 1, 1)
        parts = [p / peak for p in parts]
        norm = torch.sqrt(sum(p.flatten(1).pow(2).sum(1) for p in parts)).clamp_min(1e-12).view(-1, 1, 1, 1)
        return [p / norm for p in parts]

    detached = [f.detach() for f in features]
    direction = [d.requires_grad_() for d in normalise([torch.randn_like(f) for f in detached])]
    with torch.enable_grad():
        moved = decoder([f + xi * d for f, d in zip(detached, direction)])
        distance = F.mse_loss(probabilities(moved.float(), task), target)
        grads = torch.autograd.grad(distance, direction)
    return [f + eps * g for f, g in zip(features, normalise([g.detach() for g in grads]))]


def perturb(kind: str, features: list[torch.Tensor], decoder: torch.nn.Module, target: torch.Tensor,
            classes: torch.Tensor, task: str, background: int) -> list[torch.Tensor]:
    """The encoder features as auxiliary decoder `decoder` of perturbation `kind` sees them."""
    if kind == "vat":
        return vat_perturbation(features, decoder, target, task)
    if kind in ("dropout", "feature_drop", "feature_noise"):
        fn = {"dropout": spatial_dropout, "feature_drop": feature_drop, "feature_noise": feature_noise}[kind]
        return [fn(f) for f in features]
    if kind == "cutout":
        mask = torch.from_numpy(cutout_keep_mask(classes.cpu().numpy(), background)).to(features[0].device)
    elif kind in ("context_masking", "object_masking"):
        objects = (classes != background)[:, None]
        mask = objects if kind == "context_masking" else ~objects
    else:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {PERTURBATIONS}")
    return [f * resize_mask(mask, f) for f in features]


def rampup_weight(step: int, total: int, weight: float, rampup: float) -> float:
    """weight x exp(-5 (1 - t)^2), t = step / (rampup x total) capped at 1 (full weight after the ramp)."""
    length = rampup * total
    t = 1.0 if length <= 0 else min(1.0, step / length)
    return weight * math.exp(-5 * (1 - t) ** 2)


class CrossConsistency:
    """The auxiliary decoders and the unsupervised loss of one CCT training job."""

    def __init__(self, settings: dict, model_args: dict, task: str, num_classes: int, device: torch.device | str):
        counts = settings["decoders"]
        unknown = sorted(set(counts) - set(PERTURBATIONS))
        if unknown:
            raise ValueError(f"cct.decoders: unknown perturbations {unknown}; expected {PERTURBATIONS}")
        self.kinds = [kind for kind in PERTURBATIONS for _ in range(counts.get(kind, 0))]
        if not self.kinds:
            raise ValueError("cct.decoders: at least one auxiliary decoder is needed")
        self.decoders = torch.nn.ModuleList(auxiliary_decoder(model_args) for _ in self.kinds).to(device)
        self.weight, self.rampup = settings["weight"], settings["rampup"]
        self.background, self.task, self.num_classes = settings["background_class"], task, num_classes

    def loss(self, model: torch.nn.Module, unlabeled: torch.Tensor, step: int, total: int) -> torch.Tensor:
        """The ramped weight x the mean MSE between each auxiliary decoder's probabilities on its
        perturbed features of `unlabeled` and the main decoder's detached ones."""
        features = model.encode(unlabeled)
        with torch.no_grad():
            main = model.decode(features)
            target = probabilities(main.float(), self.task)
            classes = object_map(discretize(main, self.task, self.num_classes), self.task, self.background)
        total_mse = 0.0
        for kind, decoder in zip(self.kinds, self.decoders):
            seen = perturb(kind, features, decoder, target, classes, self.task, self.background)
            total_mse = total_mse + F.mse_loss(probabilities(decoder(seen).float(), self.task), target)
        return rampup_weight(step, total, self.weight, self.rampup) * total_mse / len(self.kinds)

    def state_dict(self) -> dict:
        return self.decoders.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.decoders.load_state_dict(state)


class Trainer(Base):
    """CCT as a trainer: a random batch of flipped unlabeled images per step, the auxiliary
    decoders' loss on it, the decoders trained with the model and kept in the resume state."""
    calls_model_parts = True

    def __init__(self, ctx: TrainingContext):
        super().__init__(ctx)
        self.cross = CrossConsistency(ctx.settings.options["cct"], ctx.model_args, ctx.task, ctx.num_classes,
                                      ctx.path.device)
        self.views = UnlabeledViews(ctx.unlabeled_images(), ctx.settings.batch_size, ctx.settings.augment,
                                    ctx.generator, ctx.data_device)

    def modules(self) -> torch.nn.Module:
        return self.cross.decoders

    def draw(self) -> torch.Tensor:
        return self.ctx.path.input(self.views.flipped())

    def loss(self, forward: Callable, drawn: torch.Tensor, step: int, total: int) -> torch.Tensor:
        with self.ctx.path.autocast():
            return self.cross.loss(self.ctx.model, drawn, step, total)

    def state_dict(self) -> dict:
        return self.cross.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.cross.load_state_dict(state)
