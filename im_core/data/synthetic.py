"""The built-in demo data set: seeded synthetic scenes whose classes overlap in appearance.

Six classes: a background and five object classes. An object's class is given by its hue:
the hue circle is cut into 20 narrow bands and each class owns four of them, scattered so
that neighbouring bands belong to different classes. Everything else is shared by all
classes and varies at random: shape (ellipse, rectangle, blob, triangle), texture (plain,
stripes, spots, checks, whose dark half shifts the colour), saturation, brightness, the
background field, contrast, blur and noise. A model trained on all labels learns the band
map; a model trained on a few labeled scenes sees some bands rarely or never and confuses
neighbouring hues, which is what makes the data set a useful test of semi-supervised
segmentation. The band map is fixed, the same for every demo; scenes depend on the seed.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES = ["background", "alpha", "beta", "gamma", "delta", "epsilon"]
PALETTE = [(40, 40, 40), (240, 200, 40), (230, 90, 40), (40, 120, 230), (60, 200, 160), (200, 60, 200)]
_TEXTURES = ("smooth", "striped", "spotted", "checked")
_SHAPES = ("ellipse", "rectangle", "blob", "triangle")
HUE_BANDS = 20


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _band_classes(seed: int = 20260601) -> np.ndarray:
    """Object class of each hue band: every class owns HUE_BANDS / 5 bands scattered over the circle.
    Fixed: the demo 'world' does not depend on the data seed."""
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(1, len(CLASS_NAMES)), HUE_BANDS // (len(CLASS_NAMES) - 1))
    while True:  # neighbouring bands belong to different classes, so hue is a fine-grained cue
        perm = rng.permutation(owners)
        if np.all(perm != np.roll(perm, 1)):
            return perm


BAND_CLASS = _band_classes()


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells + 1, cells + 1))
    idx = np.linspace(0, cells, size)
    i0 = np.floor(idx).astype(int).clip(0, cells - 1)
    f = idx - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _texture(rng: np.random.Generator, kind: str, scale: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Blend weight of colour_b in [0, 1] per pixel."""
    scale = scale * rng.uniform(0.85, 1.15)
    theta = rng.uniform(0, np.pi)
    u = np.cos(theta) * xx + np.sin(theta) * yy + rng.uniform(0, 50)
    v = -np.sin(theta) * xx + np.cos(theta) * yy + rng.uniform(0, 50)
    if kind == "smooth":
        return np.zeros_like(xx)
    if kind == "striped":
        return (np.mod(u, scale) < scale / 2).astype(np.float32)
    if kind == "spotted":
        du, dv = np.mod(u, scale) - scale / 2, np.mod(v, scale) - scale / 2
        return (du**2 + dv**2 < (scale * 0.32) ** 2).astype(np.float32)
    if kind == "checked":
        return ((np.mod(u, scale) < scale / 2) ^ (np.mod(v, scale) < scale / 2)).astype(np.float32)
    raise ValueError(kind)


def _shape_mask(rng: np.random.Generator, kind: str, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    r = rng.uniform(0.12, 0.25) * size
    cy, cx = rng.uniform(r * 0.5, size - r * 0.5, 2)
    theta = rng.uniform(0, np.pi)
    u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
    v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
    aspect = rng.uniform(0.6, 1.0)
    if kind == "ellipse":
        return (u / r) ** 2 + (v / (r * aspect)) ** 2 <= 1.0
    if kind == "rectangle":
        return (np.abs(u) <= r * 0.9) & (np.abs(v) <= r * 0.9 * aspect)
    if kind == "blob":
        angle = np.arctan2(v, u)
        wobble = 1.0 + 0.25 * np.sin(3 * angle + rng.uniform(0, 6.3)) + 0.15 * np.sin(5 * angle + rng.uniform(0, 6.3))
        return np.hypot(u, v / aspect) <= r * wobble
    if kind == "triangle":
        corners = [theta + k * 2 * np.pi / 3 for k in range(3)]
        inside = np.ones_like(u, dtype=bool)
        for a in corners:  # a point is inside when it lies within every edge's half-plane
            inside &= np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy) <= r * 0.6
        return inside
    raise ValueError(kind)


def _object_colours(rng: np.random.Generator, cls: int) -> tuple[np.ndarray, np.ndarray]:
    band = rng.choice(np.flatnonzero(BAND_CLASS == cls))
    hue = (band + rng.uniform(0.1, 0.9)) / HUE_BANDS
    colour = _hsv(hue, rng.uniform(0.55, 0.9), rng.uniform(0.7, 0.95))
    return colour, colour * rng.uniform(0.35, 0.6)


def make_scene(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask uint8 HxW) pair."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.5))
    field = _smooth_field(rng, size, int(rng.integers(2, 5)))[..., None]
    image = bg * (0.7 + 0.6 * field)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        a, b = _object_colours(rng, cls)
        w = _texture(rng, str(rng.choice(_TEXTURES)), rng.uniform(3.0, 6.0), yy, xx)[..., None]
        inside = _shape_mask(rng, str(rng.choice(_SHAPES)), yy, xx, size)
        image[inside] = (a * (1 - w) + b * w)[inside]
        mask[inside] = cls
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.05, 0.05)
    image = (image - 0.5) * contrast + 0.5 + brightness
    if rng.random() < 0.3:
        image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, (1, 1), (0, 1))) / 4
    image = image + rng.normal(0, rng.uniform(0.02, 0.06), image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def make_demo(n_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n_images` scenes as (images N x H x W x 3 uint8, masks N x H x W uint8), fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    pairs = [make_scene(rng, size) for _ in range(n_images)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
