"""The built-in multi-label demo: seeded grayscale "brightfield" scenes of cells, in the spirit of
the IM paper's HeLa set (one brightfield channel; alive cells, dead cells and cell positions as
three overlapping sigmoid labels).

Alive cells are spread, irregular and grainy with a dark nucleus; dead cells are rounded,
smooth and bright inside a dark rim. Both kinds vary in size, brightness and contrast so that
no single grey value tells them apart, and cells may overlap (then a pixel is alive and dead).
Every cell's centre is a small disc of the position label, which overlaps the cell's own label.
Illumination, blur and noise vary per scene. Scenes depend on the seed only.
"""
from __future__ import annotations

import numpy as np

from .synthetic import _smooth_field

LABEL_NAMES = ["alive", "dead", "position"]
PALETTE = [(70, 200, 90), (230, 70, 60), (250, 220, 40)]


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
          aspect: float, wobble: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular ellipse: (inside mask, normalised radius per pixel, 1 at the outline)."""
    theta = rng.uniform(0, np.pi)
    u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
    v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
    angle = np.arctan2(v, u)
    edge = r * (1 + wobble * np.sin(2 * angle + rng.uniform(0, 6.3)) + 0.5 * wobble * np.sin(5 * angle + rng.uniform(0, 6.3)))
    radius = np.hypot(u, v / aspect) / edge
    return radius <= 1.0, radius


def make_cell_scene(rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One (image H x W x 1 uint8, labels 3 x H x W uint8 0/1) pair."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = rng.uniform(0.4, 0.6) + rng.uniform(0.05, 0.15) * (_smooth_field(rng, size, 2) - 0.5)
    labels = np.zeros((3, size, size), np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        dead = rng.random() < 0.4
        r = size * (rng.uniform(0.08, 0.12) if dead else rng.uniform(0.10, 0.17))
        cy, cx = rng.uniform(r * 0.6, size - r * 0.6, 2)
        inside, radius = _blob(rng, yy, xx, cy, cx, r, rng.uniform(0.8, 1.0) if dead else rng.uniform(0.45, 0.85),
                               rng.uniform(0.0, 0.06) if dead else rng.uniform(0.08, 0.2))
        rim = np.exp(-((radius - 1.0) / 0.18) ** 2)
        contrast = rng.uniform(0.08, 0.2)
        if dead:  # rounded up: bright and smooth inside a dark rim
            cell = contrast * (0.9 - 0.4 * radius ** 2)
            image = np.where(inside, image + cell, image) - 1.1 * contrast * rim
        else:  # spread: grainy, slightly dark, a bright halo and a dark nucleus
            grain = rng.normal(0, 1, (size, size)) * contrast * 0.35
            nucleus = np.exp(-(np.hypot(yy - cy, xx - cx) / (0.35 * r)) ** 2)
            cell = -0.25 * contrast + grain - 0.7 * contrast * nucleus
            image = np.where(inside, image + cell, image) + 0.6 * contrast * rim
        labels[1 if dead else 0][inside] = 1
        labels[2][np.hypot(yy - cy, xx - cx) <= max(1.2, 0.3 * r)] = 1
    if rng.random() < 0.4:
        image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, (1, 1), (0, 1))) / 4
    image = image + rng.normal(0, rng.uniform(0.015, 0.04), image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], labels


def make_cells(n_images: int, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n_images` scenes as (images N x H x W x 1 uint8, labels N x 3 x H x W uint8), fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    pairs = [make_cell_scene(rng, size) for _ in range(n_images)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
