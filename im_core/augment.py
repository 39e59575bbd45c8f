"""Photometric input noise (Noisy Student, consistency views) and ALDT's augmented copies.

Images are float tensors C x H x W in grey levels 0..255. Pixels that are black in all channels
(the blocked input inside an inconsistency mask) stay black, so noise does not hide where the
teachers disagreed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

PHOTOMETRIC_KEYS = ("blur", "noise", "contrast", "brightness")
# strength of the photometric part of ALDT's copies when the experiment's augment sets none
COPY_NOISE = {"blur": 1.0, "noise": 10.0, "contrast": 0.2, "brightness": 10.0}


def has_photometric(augment: dict | None) -> bool:
    return bool(augment) and any(augment.get(k, 0) > 0 for k in PHOTOMETRIC_KEYS)


def photometric(image: torch.Tensor, augment: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """x -> blur(alpha * x + beta + uniform noise), each drawn per call; blocked pixels stay 0."""
    def uniform(lo: float, hi: float, shape=()) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=generator)

    blocked = (image == 0).all(dim=0)
    out = image.float()
    c, b = augment.get("contrast", 0), augment.get("brightness", 0)
    if c or b:
        out = out * uniform(1 - c, 1 + c) + uniform(-b, b)
    if augment.get("noise", 0):
        n = augment["noise"]
        out = out + uniform(-n, n, out.shape)
    if augment.get("blur", 0):
        sigma = float(uniform(0, augment["blur"]))
        if sigma > 0.1:
            kernel = 2 * math.ceil(3 * sigma) + 1
            out = TF.gaussian_blur(out, [kernel, kernel], [sigma, sigma])
    out = out.clamp(0, 255)
    out[:, blocked] = 0
    return out


def copy_augment(augment: dict) -> dict:
    """The experiment's geometric augmentation plus at least COPY_NOISE's photometric noise."""
    return {**augment, **{k: max(augment.get(k, 0), v) for k, v in COPY_NOISE.items()}}


def augmented_copies(images: np.ndarray, labels: np.ndarray, copies: int, augment: dict,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`copies` augmented versions of every image/label pair (ALDT), made from `seed` alone, so
    every model of an experiment trains on the same augmented set."""
    from .data import SegmentationSamples
    if copies == 0 or len(images) == 0:
        return images[:0], labels[:0]
    samples = SegmentationSamples(images, labels, copy_augment(augment))
    out_images, out_labels = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(copies):
            for i in range(len(images)):
                x, y = samples[i]
                out_images.append(x.round().to(torch.uint8).permute(1, 2, 0).numpy())
                out_labels.append(y.to(torch.uint8).numpy())
    return np.stack(out_images), np.stack(out_labels)
