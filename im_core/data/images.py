"""Decoding image files with Pillow: which suffixes are images, sizes from the file header,
pixels as RGB or one grayscale channel, palette colours to class indices; resizing an image
and its mask."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

NOT_IMAGE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG")  # data and video containers Pillow only identifies
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@functools.cache
def image_suffixes() -> dict[str, str]:
    """File suffix (lower case, with the dot) -> Pillow format, for every image format Pillow can
    open (do not modify the returned dict: it is shared)."""
    Image.init()
    return {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt not in NOT_IMAGE_FORMATS}


def image_header(path: Path) -> tuple[int, int, bool]:
    """(height, width, grayscale) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width, im.mode in GRAY_MODES
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this image ({e}); replace or remove the file") from e


def read_image(path: Path, channels: int = 3) -> np.ndarray:
    """H x W x channels uint8: RGB, or one grayscale channel (16-bit images keep their top 8 bits)."""
    try:
        with Image.open(path) as im:
            if channels == 3:
                return np.asarray(im.convert("RGB"))
            if im.mode.startswith("I;16"):
                return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)[..., None]
            return np.asarray(im.convert("L"))[..., None]
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this image ({e}); replace or remove the file") from e


def nearest_palette_index(rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """Map each RGB pixel to the index of the nearest palette colour (squared distance)."""
    pal = np.asarray(palette, dtype=np.int32)
    diff = rgb.reshape(-1, 1, 3).astype(np.int32) - pal[None]
    return (diff**2).sum(-1).argmin(1).reshape(rgb.shape[:2]).astype(np.uint8)


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (H x W x C) bilinear and mask (H x W, or labels x H x W) nearest to `size`."""
    h, w = size
    if image.shape[:2] != (h, w):
        planes = [image[..., c] for c in range(image.shape[-1])]
        image = np.stack([np.asarray(Image.fromarray(p).resize((w, h), Image.BILINEAR)) for p in planes], -1)
        if mask is not None:
            layers = mask if mask.ndim == 3 else mask[None]
            resized = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.NEAREST))
                                for m in layers])
            mask = resized if mask.ndim == 3 else resized[0]
    return image, mask
