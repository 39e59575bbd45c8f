"""The built-in demo data set: seeded synthetic scenes whose classes overlap in appearance.

Six classes: background and five object classes. Each class is a mixture of appearance
prototypes (a pair of colours and a texture: plain, stripes, spots or checks, at a scale);
the prototype table is fixed, the same for every demo, and drawn so that classes share
colours and textures: no single cue separates them, only the combination does. Shapes
(ellipse, rectangle, blob, triangle) are random for every class, and every object, image and
scene varies in colour, contrast, blur and noise. A model trained on a few labeled scenes
sees each prototype a handful of times and confuses many of them; with all labels, or with
good pseudo-labels on the unlabeled scenes, it learns them, which is what makes the data set
a useful test of semi-supervised segmentation.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES = ["background", "alpha", "beta", "gamma", "delta", "epsilon"]
PALETTE = [(40, 40, 40), (240, 200, 40), (230, 90, 40), (40, 120, 230), (60, 200, 160), (200, 60, 200)]
PROTOTYPES_PER_CLASS = 6
_TEXTURES = ("smooth", "striped", "spotted", "checked")
_SHAPES = ("ellipse", "rectangle", "blob", "triangle")


def _prototype_table(seed: int = 20260601) -> list[list[dict]]:
    """Per class, its appearance prototypes. Fixed: the demo 'world' does not depend on the data seed."""
    rng = np.random.default_rng(seed)
    table = []
    for cls in range(len(CLASS_NAMES)):
        protos = []
        for _ in range(PROTOTYPES_PER_CLASS):
            base = rng.uniform(0.15, 0.9, 3)
            protos.append({
                "colour_a": base, "colour_b": np.clip(base + rng.normal(0, 0.3, 3), 0.05, 1.0),
                "texture": "smooth" if cls == 0 else str(rng.choice(_TEXTURES)),
                "scale": float(rng.uniform(3.0, 7.0)),
            })
        table.append(protos)
    return table


PROTOTYPES = _prototype_table()


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
    r = rng.uniform(0.1, 0.2) * size
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


def _paint(rng: np.random.Generator, proto: dict, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    jitter = rng.normal(0, 0.05, 3)
    a, b = np.clip(proto["colour_a"] + jitter, 0, 1), np.clip(proto["colour_b"] + jitter, 0, 1)
    w = _texture(rng, proto["texture"], proto["scale"], yy, xx)[..., None]
    return a * (1 - w) + b * w


def make_scene(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask uint8 HxW) pair."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = PROTOTYPES[0][rng.integers(PROTOTYPES_PER_CLASS)]
    field = _smooth_field(rng, size, int(rng.integers(2, 5)))[..., None]
    image = bg["colour_a"] * (1 - field) + bg["colour_b"] * field
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        proto = PROTOTYPES[cls][rng.integers(PROTOTYPES_PER_CLASS)]
        inside = _shape_mask(rng, str(rng.choice(_SHAPES)), yy, xx, size)
        image[inside] = _paint(rng, proto, yy, xx)[inside]
        mask[inside] = cls
    contrast, brightness = rng.uniform(0.8, 1.15), rng.uniform(-0.08, 0.08)
    image = (image - 0.5) * contrast + 0.5 + brightness
    if rng.random() < 0.3:
        image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, (1, 1), (0, 1))) / 4
    image = image + rng.normal(0, rng.uniform(0.02, 0.08), image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def make_demo(n_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n_images` scenes as (images N x H x W x 3 uint8, masks N x H x W uint8), fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    pairs = [make_scene(rng, size) for _ in range(n_images)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
