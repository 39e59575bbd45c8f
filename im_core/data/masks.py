"""Decoding masks: class-index PNGs (with a value map, a void value, 0/255 binary masks), palette
colour masks, and multi-label masks (one folder per label, or one multi-channel file). Every
reader checks what it reads: lossy formats, modes, values outside the classes."""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import InputError, few_names
from .images import decode, nearest_palette_index, read_image

log = logging.getLogger("im_core.data")

# Pillow formats whose compression changes pixel values: a class-index mask must not be stored in
# them (WebP is refused only when the file is lossy, see `_is_lossy_webp`)
LOSSY_MASK_FORMATS = ("JPEG", "MPO", "JPEG2000", "AVIF")
INDEX_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "1")  # single-channel integer masks


def _refuse_lossy(path: Path) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        if im.format in LOSSY_MASK_FORMATS or (im.format == "WEBP" and _is_lossy_webp(path)):
            raise InputError(f"{path}: mask stored as {im.format}{' (lossy)' if im.format == 'WEBP' else ''}, "
                             "whose compression changes pixel values, so class indices come out wrong at "
                             "edges; save the masks losslessly (PNG) from the original annotation")
    return check


def _integer_values(values: np.ndarray, path: Path) -> np.ndarray:
    if values.dtype.kind == "f":
        raise InputError(f"{path}: mask holds float values; a mask holds integer class indices (or 0 / "
                         "positive_value per label): save it as an 8- or 16-bit integer PNG or TIFF")
    return values.astype(np.int64)


def read_index_mask(path: Path) -> np.ndarray:
    """A single-channel class-index mask's values, unscaled (8- or 16-bit), at the displayed
    orientation (EXIF applied, as for its image)."""
    def index(im: Image.Image) -> np.ndarray:
        if im.mode not in INDEX_MODES:
            raise InputError(f"{path}: mask has mode {im.mode}; expected a single-channel class-index PNG "
                             "(pixel value = class index)")
        return np.asarray(im)

    values, _ = decode(path, index, _refuse_lossy(path), "mask")
    if values.ndim != 2:
        raise InputError(f"{path}: mask has {values.shape[-1]} channels of more than 8 bits; expected a "
                         "single-channel class-index PNG (pixel value = class index)")
    return _integer_values(values, path)


def read_channel_mask(path: Path) -> np.ndarray:
    """A lossless mask as H x W x channels integers (1 channel for L/P/I modes), unscaled, at the
    displayed orientation."""
    values, _ = decode(path, check=_refuse_lossy(path), what="mask")
    values = _integer_values(values, path)
    return values[..., None] if values.ndim == 2 else values


def _is_lossy_webp(path: Path) -> bool:
    """True when a WebP file holds a lossy bitstream (chunk 'VP8 '); lossless ones hold 'VP8L'."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        while len(chunk := f.read(8)) == 8:
            fourcc, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if fourcc in (b"VP8 ", b"VP8L"):
                return fourcc == b"VP8 "
            f.seek(size + (size & 1), os.SEEK_CUR)
    return False


def read_index_classes(path: Path, cfg: dict, layout: dict, shape: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A class-index mask with the layout's value map, 0/255 binary and void value applied, checked."""
    raw = read_index_mask(path)
    ignore = cfg["ignore_index"]
    if layout.get("value_map"):
        mask = _apply_value_map(raw, {int(k): int(v) for k, v in layout["value_map"].items()}, path, cfg)
    else:
        mask = np.where(raw == 255, 1, raw) if cfg.get("binary_255") else raw
    if layout.get("void_value") is not None:
        mask = np.where(raw == layout["void_value"], ignore, mask)
    _check_mask_values(mask, path, len(cfg["class_names"]), ignore, cfg["name"])
    return mask


def _apply_value_map(raw: np.ndarray, value_map: dict[int, int], path: Path, cfg: dict) -> np.ndarray:
    values = np.unique(raw)
    unknown = [int(v) for v in values if int(v) not in value_map]
    if unknown:
        raise InputError(f"{path}: mask values {unknown[:10]} are not in datasets.{cfg['name']}.layout.value_map "
                         f"(which maps {len(value_map)} values); add them to the map (to a class index, or to the "
                         f"ignore index {cfg['ignore_index']} for 'not annotated')")
    lut = np.zeros(int(values.max()) + 1, np.int64)
    for v in values:
        lut[v] = value_map[int(v)]
    return lut[raw]


def read_palette_classes(path: Path, cfg: dict, layout: dict, shape: tuple[int, int] = (0, 0)) -> np.ndarray:
    """An RGB mask as class indices by the nearest palette colour; the void colour (if set) is ignored."""
    palette = [tuple(c) for c in cfg["palette"]]
    void = layout.get("void_colour")
    index = nearest_palette_index(read_image(path), palette + ([tuple(void)] if void else []))
    return np.where(index == len(palette), cfg["ignore_index"], index).astype(np.int64)


def read_channel_labels(path: Path, cfg: dict, layout: dict, shape: tuple[int, int] = (0, 0)) -> np.ndarray:
    """One multi-channel mask, channel k = label k, each 0 / positive_value -> labels x H x W 0/1."""
    values = read_channel_mask(path)
    n = len(cfg["class_names"])
    if values.shape[-1] != n:
        raise InputError(f"{path}: mask has {values.shape[-1]} channels for {n} labels ({', '.join(cfg['class_names'])}); "
                         "with layout.mask_format 'channels' channel k holds label k")
    return np.stack([_binary(values[..., k], path, cfg, layout) for k in range(n)])


def read_folder_labels(files: dict[int, Path] | None, cfg: dict, layout: dict, shape: tuple[int, int]) -> np.ndarray:
    """One 0 / positive_value mask per label ({label index: file}); a label without a file is
    all 0 at the image's `shape`."""
    files = files or {}
    arrays = {k: read_channel_mask(p) for k, p in files.items()}
    for k, a in arrays.items():
        if a.shape[-1] != 1:
            raise InputError(f"{files[k]}: a label mask has one channel (0 / {layout['positive_value']}); this one "
                             f"has {a.shape[-1]}")
    shapes = {a.shape[:2] for a in arrays.values()}
    if len(shapes) > 1:
        raise InputError(f"{few_names([str(p) for p in files.values()])}: the label masks of one image differ in size "
                         f"({', '.join(f'{w}x{h}' for h, w in sorted(shapes))})")
    shape = shapes.pop() if shapes else shape
    n = len(cfg["class_names"])
    return np.stack([_binary(arrays[k][..., 0], files[k], cfg, layout) if k in arrays else np.zeros(shape, np.int64)
                     for k in range(n)])


def _binary(values: np.ndarray, path: Path, cfg: dict, layout: dict) -> np.ndarray:
    positive = layout["positive_value"]
    bad = (values != 0) & (values != positive)
    if bad.any():
        found = sorted(set(np.unique(values[bad]).tolist()))[:10]
        hint = (f"; the masks hold 0/1: set datasets.{cfg['name']}.layout.positive_value: 1" if found == [1] else "")
        raise InputError(f"{path}: values {found} in a binary label mask; expected 0 (absent) and {positive} "
                         f"(present, layout.positive_value){hint}")
    return (values == positive).astype(np.int64)


# layout.mask_format -> reader(mask file, or {label: file}, cfg, layout, the image's (h, w)); only
# label folders need the shape (a label without a file is all 0)
MASK_READERS = {"index": read_index_classes, "palette": read_palette_classes, "channels": read_channel_labels,
                "label_folders": read_folder_labels}
def _check_mask_values(mask: np.ndarray, path: Path, num_classes: int, ignore_index: int, dataset: str = "<name>") -> None:
    bad = (mask >= num_classes) & (mask != ignore_index) | (mask < 0)
    if bad.any():
        values = sorted(set(np.unique(mask[bad]).tolist()))[:10]
        hint = ""
        if num_classes == 2 and 255 in values:
            hint = f" (masks stored as 0/255: set datasets.{dataset}.binary_255: true to read 255 as class 1)"
        raise InputError(f"{path}: mask values {values} are outside the {num_classes} classes 0..{num_classes - 1} "
                         f"and are not the ignore index {ignore_index}; fix the mask or the data set's class_names "
                         f"/ ignore_index{hint}")


def check_binary_255(mask_values: list[tuple[str, frozenset[int]]], cfg: dict) -> None:
    """Two classes, ignore_index 255 and masks holding 0 and 255 but never 1: the masks are 0/255
    binary masks, and reading 255 as 'not annotated' would lose every foreground pixel. An error,
    unless binary_255 maps 255 to class 1. Some masks with 255 and no 1 while others hold 1:
    ambiguous, a warning. `mask_values`: (mask file, its values) per labeled image."""
    if (len(cfg["class_names"]) != 2 or cfg["ignore_index"] != 255 or cfg.get("binary_255")
            or (cfg.get("layout") or {}).get("value_map")):
        return
    with_255 = [p for p, values in mask_values if 255 in values]
    if not with_255:
        return
    if not any(1 in values for _, values in mask_values):
        raise InputError(
            f"{with_255[0]}: the masks hold 0 and 255 but no 1 ({len(with_255)} of {len(mask_values)} masks contain "
            f"255); with 2 classes and ignore_index 255, 255 means 'not annotated', so every foreground pixel would "
            f"be lost. If 255 marks the foreground (masks saved as 0/255), set datasets.{cfg['name']}.binary_255: "
            f"true (255 is read as class 1); if 255 really marks unannotated pixels, the masks have no foreground")
    suspicious = [p for p, values in mask_values if 255 in values and 1 not in values]
    if suspicious:
        log.warning("datasets.%s: %d masks contain 255 (ignore_index: not annotated) but no class 1 while other "
                    "masks contain 1: %s. If 255 marks the foreground in them, convert them to 0/1 (or set "
                    "binary_255: true, which reads every 255 as class 1)", cfg["name"], len(suspicious), few_names(suspicious))
