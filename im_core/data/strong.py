"""The strong augmentation of FixMatch/UniMatch on whole batches, as tensor operations.

FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020, https://arxiv.org/abs/2001.07685) trains the student on a strongly
perturbed view of an unlabeled image against the pseudo-label of its weak view; UniMatch
(Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", CVPR 2023, https://arxiv.org/abs/2208.09910) carries this over to segmentation.
Its strong view is made from the weak view (same geometry, so the pseudo-label still fits):
colour jitter (p 0.8), random grayscale (p 0.2), Gaussian blur (p 0.5), then CutMix, a box of
another image pasted in, together with that image's pseudo-label, confidence and ignore mask.
AUTHORS holds the authors' settings.

Images are float N x C x H x W with grey levels 0..255 (C = 1 or 3; saturation, hue and
grayscale leave a 1-channel image as it is). Every random number comes from the `generator`
passed in, and a fixed number of them per image whatever the coins say, so a run resumes
bit-identically once the generator's state is restored and the stream never depends on
outcomes. Pixels blocked by the inconsistency mask are black at the end of the photometric
part, as in augment.photometric.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

from .augment import gaussian_blur

# the draws of strong_view per image (columns of one torch.rand(n, VIEW_DRAWS)): jitter coin,
# 4 jitter factors, 4 keys whose argsort is the jitter order, grayscale coin, blur coin, sigma
VIEW_DRAWS = 12
# the draws of cutmix_boxes per image: coin, area, aspect ratio, left, top
BOX_DRAWS = 5


@dataclass(frozen=True)
class StrongAugment:
    """Settings of the strong view: colour jitter strengths (brightness, contrast, saturation:
    factors U[1 - s, 1 + s]; hue: shift U[-hue, hue] of a turn) applied with probability
    jitter_p, grayscale with grayscale_p, blur with blur_p (sigma U(blur_sigma)), and CutMix
    with cutmix_p (box area U(cutmix_area) of the image, aspect ratio U(cutmix_ratio))."""
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    cutmix_p: float
    cutmix_area: tuple[float, float]
    cutmix_ratio: tuple[float, float]

    def __post_init__(self):
        for name in ("jitter_p", "grayscale_p", "blur_p", "cutmix_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"StrongAugment.{name}: a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"StrongAugment.{name}: not negative, got {getattr(self, name)!r}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"StrongAugment.hue: in [0, 0.5], got {self.hue!r}")
        for name, lowest, highest in (("blur_sigma", 0.0, math.inf), ("cutmix_area", 0.0, 1.0),
                                      ("cutmix_ratio", 1e-6, math.inf)):
            lo, hi = getattr(self, name)
            if not lowest <= lo <= hi <= highest:
                raise ValueError(f"StrongAugment.{name}: lo <= hi within [{lowest:.3g}, {highest:g}], got {(lo, hi)!r}")

    @property
    def jitter_active(self) -> bool:
        return self.jitter_p > 0 and any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))

    @property
    def photometric_active(self) -> bool:
        """Whether strong_view can change an image (gaussian_blur skips sigma <= 0.1)."""
        return self.jitter_active or self.grayscale_p > 0 or (self.blur_p > 0 and self.blur_sigma[1] > 0.1)

    @property
    def cutmix_active(self) -> bool:
        return self.cutmix_p > 0 and self.cutmix_area[1] > 0

    @property
    def active(self) -> bool:
        return self.photometric_active or self.cutmix_active


# UniMatch's strong view (its transform.py and datasets): ColorJitter(0.5, 0.5, 0.5, 0.25) with
# p 0.8, RandomGrayscale(0.2), blur p 0.5 with sigma U[0.1, 2], obtain_cutmix_box's defaults
AUTHORS = StrongAugment(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, jitter_p=0.8, grayscale_p=0.2,
                        blur_p=0.5, blur_sigma=(0.1, 2.0), cutmix_p=0.5, cutmix_area=(0.02, 0.4),
                        cutmix_ratio=(0.3, 1 / 0.3))


def _between(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Uniform draws u in [0, 1) mapped to [lo, hi)."""
    return lo + (hi - lo) * u


def jitter_factors(u: torch.Tensor, settings: StrongAugment) -> torch.Tensor:
    """N x 4 uniform draws -> brightness, contrast, saturation factors and hue shift, each
    uniform in torchvision ColorJitter's range (factors not below 0)."""
    b, c, s, h = settings.brightness, settings.contrast, settings.saturation, settings.hue
    return torch.stack([_between(u[:, 0], max(0.0, 1 - b), 1 + b), _between(u[:, 1], max(0.0, 1 - c), 1 + c),
                        _between(u[:, 2], max(0.0, 1 - s), 1 + s), _between(u[:, 3], -h, h)], 1)


_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def color_jitter_one(image: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    """One C x H x W image in [0, 1] through brightness, contrast, saturation and hue (the four
    `factors`) in the given `order`, as torchvision's ColorJitter does; each step clamps to [0, 1]."""
    for index in order:
        image = _ADJUST[index](image, factors[index])
    return image


def color_jitter(images: torch.Tensor, apply: torch.Tensor, factors: torch.Tensor,
                 order: torch.Tensor) -> torch.Tensor:
    """Colour jitter of the images flagged in `apply` (N bool), image i with its own factors
    (N x 4) and order (N x 4, a permutation of 0..3); images 0..255 in and out."""
    # Per image: torchvision's ColorJitter draws one set of factors and one order per call, the
    # method one per image, and the adjust_* functions take a single factor. One transfer of the
    # draws to the host, then a loop over the (8-16) images that jitter.
    out = images.clone()
    apply_list, factor_list, order_list = apply.tolist(), factors.tolist(), order.tolist()
    for i, applied in enumerate(apply_list):
        if applied:
            out[i] = color_jitter_one(images[i] / 255, factor_list[i], order_list[i]) * 255
    return out


def grayscale(images: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """The images flagged in `apply` (N bool) turned grey in all three channels (torchvision's
    luma weights); 1-channel images as they are."""
    if images.shape[1] == 1:
        return images
    grey = TF.rgb_to_grayscale(images, num_output_channels=3)
    return torch.where(apply[:, None, None, None], grey, images)


def strong_view(images: torch.Tensor, settings: StrongAugment, generator: torch.Generator,
                blocked: torch.Tensor | None = None) -> torch.Tensor:
    """The photometric part of the strong view of a batch (from its weak view): colour jitter,
    grayscale, blur, clamped to 0..255, `blocked` pixels (N x H x W bool; None: none) 0 in every
    channel. Draws VIEW_DRAWS numbers per image from `generator` whatever the settings. Same
    shape and (floating) dtype as `images`."""
    n, device = len(images), images.device
    u = torch.rand(n, VIEW_DRAWS, generator=generator, device=device)
    jitter = u[:, 0] < settings.jitter_p
    factors = jitter_factors(u[:, 1:5], settings)
    order = u[:, 5:9].argsort(1)   # a uniformly random permutation of the four adjustments
    grey = u[:, 9] < settings.grayscale_p
    sigma = _between(u[:, 11], *settings.blur_sigma).masked_fill(u[:, 10] >= settings.blur_p, 0)  # 0: no blur
    out = images.float()
    if settings.jitter_active:
        out = color_jitter(out, jitter, factors, order)
    if settings.grayscale_p > 0:
        out = grayscale(out, grey)
    if settings.blur_p > 0:
        out = gaussian_blur(out, sigma)
    out = out.clamp(0, 255)
    if blocked is not None:
        out = out.masked_fill(blocked[:, None], 0)
    return out.to(images.dtype) if images.is_floating_point() else out


def cutmix_rectangles(n: int, height: int, width: int, p: float, area: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Per image a box (left, top, width, height) in pixels, as UniMatch's obtain_cutmix_box:
    with probability p, size U(area) x height x width and aspect ratio r U(ratio), box width
    int(sqrt(size / r)) and height int(sqrt(size * r)) clipped to the image, top-left uniform
    where the box fits (one draw instead of UniMatch's rejection loop); else an empty box (0 x 0).
    Draws BOX_DRAWS numbers per image whatever the coin says."""
    u = torch.rand(n, BOX_DRAWS, generator=generator, device=device).double()  # pixel arithmetic exact
    applied = u[:, 0] < p
    size = _between(u[:, 1], *area) * height * width
    r = _between(u[:, 2], *ratio)
    box_w = (size / r).sqrt().floor().clamp(0, width).long()
    box_h = (size * r).sqrt().floor().clamp(0, height).long()
    left = torch.minimum((u[:, 3] * (width - box_w + 1)).floor().long(), width - box_w)
    top = torch.minimum((u[:, 4] * (height - box_h + 1)).floor().long(), height - box_h)
    zero = torch.zeros_like(box_w)
    return torch.stack([left, top, torch.where(applied, box_w, zero), torch.where(applied, box_h, zero)], 1)


def rectangle_masks(rectangles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x 4 boxes (left, top, width, height) -> N x H x W bool, True inside the box."""
    left, top, box_w, box_h = (t[:, None] for t in rectangles.unbind(1))
    xs = torch.arange(width, device=rectangles.device)[None]
    ys = torch.arange(height, device=rectangles.device)[None]
    inside_x = (xs >= left) & (xs < left + box_w)
    inside_y = (ys >= top) & (ys < top + box_h)
    return inside_y[:, :, None] & inside_x[:, None, :]


def cutmix_boxes(n: int, height: int, width: int, p: float, area: tuple[float, float],
                 ratio: tuple[float, float], generator: torch.Generator, device="cpu") -> torch.Tensor:
    """N x H x W bool CutMix boxes (see cutmix_rectangles); all False where the coin says no."""
    return rectangle_masks(cutmix_rectangles(n, height, width, p, area, ratio, generator, device), height, width)


def paste(target: torch.Tensor, source: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """`target` with the pixels inside `box` (N x H x W bool) taken from `source`: images
    (N x C x H x W), labels, confidences and masks (N x H x W) or multi-label (N x L x H x W),
    so the pseudo-label, its confidence and its ignore mask follow the box exactly as the image."""
    if target.shape != source.shape:
        raise ValueError(f"paste: target {tuple(target.shape)} and source {tuple(source.shape)} differ")
    if target.ndim not in (3, 4) or box.shape != (target.shape[0], *target.shape[-2:]):
        raise ValueError(f"paste: box {tuple(box.shape)} does not fit {tuple(target.shape)} (N x [C x] H x W)")
    return torch.where(box if target.ndim == 3 else box[:, None], source, target)
