"""Augmentation of whole batches as tensor operations, and ALDT's augmented copies.

A batch is N x C x H x W images (grey levels 0..255), its labels (N x H x W, or N x L x H x W
for multi-label) and the blocked-input mask (N x H x W bool: pixels blacked out inside an
inconsistency mask). Flips and scale-crops are one affine resampling per image: images
bilinear, labels and the blocked mask nearest, so all three stay aligned. Photometric noise
(Noisy Student, consistency views, ALDT copies) follows; blocked pixels are black at the end,
so neither resampling nor noise hides where the teachers disagreed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import Augment, Photometric

# strength of the photometric part of ALDT's copies when the experiment's augment sets none
COPY_NOISE = Photometric(blur=1.0, noise=10.0, contrast=0.2, brightness=10.0)
# no augmentation at all: the batch as it is (as float)
NO_AUGMENT = Augment(blur=0, noise=0, contrast=0, brightness=0, hflip=False, vflip=False, scale=(1.0, 1.0))
CROP_RATIO = (0.8, 1.25)   # aspect ratios of the scale-crops
CROP_TRIES = 10            # as torchvision's RandomResizedCrop; then the whole image


def _uniform(lo: float, hi: float, shape, generator: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)


def crop_boxes(n: int, scale: tuple[float, float], generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Per image a crop (width, height, left, top) as fractions of the image side: area a
    fraction U(scale) of the image, aspect ratio log-uniform in CROP_RATIO; the first of
    CROP_TRIES draws that fits, else the whole image."""
    area = _uniform(scale[0], scale[1], (n, CROP_TRIES), generator, device)
    log_ratio = _uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), (n, CROP_TRIES), generator, device)
    w, h = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
    fits = (w <= 1) & (h <= 1)
    first = fits.to(torch.uint8).argmax(1)
    pick = lambda t: t.gather(1, first[:, None])[:, 0]  # noqa: E731
    w = torch.where(fits.any(1), pick(w), torch.ones(n, device=device))
    h = torch.where(fits.any(1), pick(h), torch.ones(n, device=device))
    left = torch.rand(n, generator=generator, device=device) * (1 - w)
    top = torch.rand(n, generator=generator, device=device) * (1 - h)
    return torch.stack([w, h, left, top], 1)


def affine_from_boxes(boxes: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor) -> torch.Tensor:
    """N x 2 x 3 sampling matrices (affine_grid, align_corners=False): crop, then flip."""
    w, h, left, top = boxes.unbind(1)
    theta = torch.zeros(len(boxes), 2, 3, device=boxes.device)
    theta[:, 0, 0] = torch.where(hflip, -w, w)
    theta[:, 1, 1] = torch.where(vflip, -h, h)
    theta[:, 0, 2] = 2 * left + w - 1
    theta[:, 1, 2] = 2 * top + h - 1
    return theta


def _flip_where(t: torch.Tensor, flip: torch.Tensor, dim: int) -> torch.Tensor:
    shape = (-1,) + (1,) * (t.ndim - 1)
    return torch.where(flip.view(shape), t.flip(dim), t)


def _coin(flip: bool, n: int, generator: torch.Generator, device) -> torch.Tensor:
    """Per image True with probability 1/2 where `flip` is on, else False (drawing nothing)."""
    if flip:
        return torch.rand(n, generator=generator, device=device) < 0.5
    return torch.zeros(n, dtype=torch.bool, device=device)


def geometric(images: torch.Tensor, labels: torch.Tensor, blocked: torch.Tensor, augment: Augment,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips and scale-crops of a batch; images become float."""
    n, device = len(images), images.device
    hflip = _coin(augment.hflip, n, generator, device)
    vflip = _coin(augment.vflip, n, generator, device)
    images = images.float()
    if not augment.scale_crops:  # flips alone are exact index operations
        for flip, dim in ((hflip, -1), (vflip, -2)):
            images, labels, blocked = (_flip_where(t, flip, dim) for t in (images, labels, blocked))
        return images, labels, blocked
    theta = affine_from_boxes(crop_boxes(n, augment.scale, generator, device), hflip, vflip)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    multilabel = labels.ndim == 4
    stacked = torch.cat([labels.float() if multilabel else labels[:, None].float(), blocked[:, None].float()], 1)
    stacked = F.grid_sample(stacked, grid, mode="nearest", padding_mode="border", align_corners=False)
    labels = stacked[:, :-1].to(labels.dtype)
    return images, (labels if multilabel else labels[:, 0]), stacked[:, -1] > 0.5


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur image i with sigma[i] (separable, reflect padding); sigma <= 0.1 leaves it as is."""
    blur = sigma > 0.1
    if not bool(blur.any()):
        return images
    n, c, h, w = images.shape
    radius = min(math.ceil(3 * float(sigma[blur].max())), h - 1, w - 1)
    t = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    safe = torch.where(blur, sigma, torch.ones_like(sigma)).to(images.dtype)
    kernel = torch.exp(-0.5 * (t[None] / safe[:, None]) ** 2)
    kernel = torch.where(blur[:, None], kernel, (t == 0).to(images.dtype)[None])
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
    x = F.pad(images.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(x, kernel[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w)


def photometric(images: torch.Tensor, augment: Photometric, generator: torch.Generator,
                blocked: torch.Tensor | None = None) -> torch.Tensor:
    """x -> blur(a * x + b + uniform noise), a, b and the blur drawn per image; clamped to
    0..255; blocked pixels (default: those black in every channel) set to 0."""
    n, device = len(images), images.device
    if blocked is None:
        blocked = (images == 0).all(1)
    out = images.float()
    c, b = augment.contrast, augment.brightness
    if c or b:
        out = out * _uniform(1 - c, 1 + c, (n, 1, 1, 1), generator, device) + _uniform(-b, b, (n, 1, 1, 1), generator, device)
    if augment.noise:
        out = out + _uniform(-augment.noise, augment.noise, out.shape, generator, device)
    if augment.blur:
        out = gaussian_blur(out, _uniform(0, augment.blur, (n,), generator, device))
    return out.clamp_(0, 255).masked_fill_(blocked[:, None], 0)


def augment_batch(images: torch.Tensor, labels: torch.Tensor, blocked: torch.Tensor, augment: Augment | None,
                  generator: torch.Generator, noisy: torch.Tensor | None = None,
                  noisy_augment: Photometric | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Geometric then photometric augmentation of a uint8 batch -> float images, labels, mask
    (`augment` None: none). Images flagged in `noisy` (N bool: the pseudo-labeled pairs of
    Noisy Student / IM+) get the photometric noise of `noisy_augment` instead of `augment`'s."""
    augment = augment or NO_AUGMENT
    images, labels, blocked = geometric(images, labels, blocked, augment, generator)
    noised = None
    if noisy is not None and noisy_augment is not None and noisy_augment.active:
        noised = photometric(images, noisy_augment, generator, blocked)
    if augment.active:
        out = photometric(images, augment, generator, blocked)
    else:
        out = images.masked_fill_(blocked[:, None], 0)  # no host sync to test for any
    if noised is not None:
        out = torch.where(noisy[:, None, None, None], noised, out)
    return out, labels, blocked


def copy_augment(augment: Augment) -> Augment:
    """The experiment's geometric augmentation plus at least COPY_NOISE's photometric noise."""
    return augment.with_noise(Photometric(*(max(getattr(augment, k), getattr(COPY_NOISE, k))
                                            for k in ("blur", "noise", "contrast", "brightness"))))


def augmented_copies(images: np.ndarray, labels: np.ndarray, copies: int, augment: Augment,
                     seed: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`copies` augmented versions of every image/label pair (ALDT), made from `seed` alone, so
    every model of an experiment trains on the same augmented set."""
    if copies == 0 or len(images) == 0:
        return images[:0], labels[:0]
    generator = torch.Generator().manual_seed(seed)
    settings = copy_augment(augment)
    out_images, out_labels = [], []
    for _ in range(copies):
        for start in range(0, len(images), chunk):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).permute(0, 3, 1, 2)
            y = torch.from_numpy(np.ascontiguousarray(labels[start:start + chunk]))
            x, y, _ = augment_batch(x, y, torch.zeros(len(x), *x.shape[2:], dtype=torch.bool), settings, generator)
            out_images.append(x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            out_labels.append(y.to(torch.uint8).numpy())
    return np.concatenate(out_images), np.concatenate(out_labels)
