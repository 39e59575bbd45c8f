"""Data sources: the demo generators, a folder of images and masks in a configurable layout,
and SUIM as distributed.

A source lists its images as `Item`s (name, size from the file header, fixed split if any, and
how to read the image and its mask) without decoding them, and checks what a listing shows:
missing folders, masks without images, duplicate names, split lists. Reading an item checks its
mask: unreadable files, lossy or RGB masks, values outside the classes, 0/255 binary masks,
values missing from a value map. `data.prepare` streams the items into the data store.

The folder source's `layout` covers the layouts public sets come in: where images and masks
are, how a mask's file name follows from its image's (`{stem}_segmentation.png`), what a mask
value means (class index, a value map, a void value, a palette colour) and, for multi-label
data, one 0/255 mask folder per label or one multi-channel mask per image.
"""
from __future__ import annotations

import functools
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .io import InputError
from . import synthetic, synthetic_cells

log = logging.getLogger("im_core.sources")

# Pillow formats whose compression changes pixel values: a class-index mask must not be stored in
# them (WebP is refused only when the file is lossy, see `_is_lossy_webp`)
LOSSY_MASK_FORMATS = ("JPEG", "MPO", "JPEG2000", "AVIF")
NOT_IMAGE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG")  # data and video containers Pillow only identifies
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
SUIM_CLASSES = ["background", "divers", "plants", "wrecks", "robots", "reefs", "fish", "sea_floor"]
SUIM_PALETTE = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255), (255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]
SUIM_URL = "https://irvlab.cs.umn.edu/resources/suim-dataset"
LAYOUT_DEFAULTS = {"images": "images", "masks": "masks", "unlabeled": "unlabeled", "image_name": "{stem}.*",
                   "mask_name": "{stem}.*", "recursive": False, "mask_format": None, "value_map": None,
                   "void_value": None, "void_colour": None, "positive_value": 255,
                   "missing_masks": "error"}


@dataclass
class Item:
    """One image of a source, listed but not read: its name (as stored and shown), size and
    whether it is grayscale (from the file header), how to read it (`read_image(channels)` ->
    H x W x channels uint8) and its mask (`read_mask()` -> H x W class indices, or labels x H x W
    0/1 for multi-label; None = unlabeled), and the split it is fixed to (None = drawn)."""
    name: str
    height: int
    width: int
    grayscale: bool
    read_image: Callable[[int], np.ndarray]
    read_mask: Callable[[], np.ndarray] | None
    split: str | None = None
    mask_label: str = ""  # the mask's file (or files), for messages


# ---------------------------------------------------------------- reading files

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


def _open_mask(path: Path) -> Image.Image:
    im = Image.open(path)
    if im.format in LOSSY_MASK_FORMATS or (im.format == "WEBP" and _is_lossy_webp(path)):
        im.close()
        raise InputError(f"{path}: mask stored as {im.format}{' (lossy)' if im.format == 'WEBP' else ''}, "
                         "whose compression changes pixel values, so class indices come out wrong at "
                         "edges; save the masks losslessly (PNG) from the original annotation")
    return im


def read_index_mask(path: Path) -> np.ndarray:
    try:
        with _open_mask(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise InputError(f"{path}: mask has mode {im.mode}; expected a single-channel class-index PNG "
                                 "(pixel value = class index)")
            return np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this mask ({e}); replace or remove the file") from e


def read_channel_mask(path: Path) -> np.ndarray:
    """A lossless mask as H x W x channels integers (1 channel for L/P/I modes)."""
    try:
        with _open_mask(path) as im:
            values = np.asarray(im).astype(np.int64)
            return values[..., None] if values.ndim == 2 else values
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this mask ({e}); replace or remove the file") from e


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


def nearest_palette_index(rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """Map each RGB pixel to the index of the nearest palette colour (squared distance)."""
    pal = np.asarray(palette, dtype=np.int32)
    diff = rgb.reshape(-1, 1, 3).astype(np.int32) - pal[None]
    return (diff**2).sum(-1).argmin(1).reshape(rgb.shape[:2]).astype(np.uint8)


def list_images(folder: Path, skipped: list[Path] | None = None, recursive: bool = False) -> list[Path]:
    """The files of `folder` (and its subfolders, with `recursive`) that Pillow can open (by
    suffix), sorted; hidden files and folders are left out. Other entries (files of other types,
    subfolders when not recursive) are appended to `skipped` when given."""
    images = []
    for p in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.is_file() and p.suffix.lower() in image_suffixes():
            images.append(p)
        elif skipped is not None and not (recursive and p.is_dir()):
            skipped.append(p)
    return images


def name_key(pattern: str, relative: str) -> str | None:
    """The key that pairs images and masks: `relative` (a file's '/'-separated path inside its
    folder) with the text around `{stem}` in `pattern` taken off its file name; None where the
    name does not fit the pattern. A pattern ending in `.*` takes any image suffix."""
    folder, _, filename = relative.rpartition("/")
    prefix, _, suffix = pattern.partition("{stem}")
    if suffix.endswith(".*"):
        ext = Path(filename).suffix
        if ext.lower() not in image_suffixes():
            return None
        suffix = suffix[:-2] + ext
    if not (filename.startswith(prefix) and filename.endswith(suffix)) or len(filename) <= len(prefix) + len(suffix):
        return None
    stem = filename[len(prefix):len(filename) - len(suffix)]
    return f"{folder}/{stem}" if folder else stem


def _by_key(folder: Path, pattern: str, what: str, recursive: bool, skipped: list[Path]) -> dict[str, Path]:
    """The image files of `folder` by the key their name gives under `pattern` (see name_key);
    files that do not fit the pattern are skipped; two files with one key are an error."""
    out: dict[str, Path] = {}
    for p in list_images(folder, skipped, recursive):
        key = name_key(pattern, p.relative_to(folder).as_posix())
        if key is None:
            skipped.append(p)
        elif key in out:
            raise InputError(f"{out[key]} and {p}: two {what} with the name stem {key!r}; images and masks "
                             "are matched by the stem, so keep one of the two (remove or rename the other)")
        else:
            out[key] = p
    return out


def _require_dir(path: Path, key: str, what: str) -> None:
    if not path.is_dir():
        raise InputError(f"{path}: folder not found ({key}); {what}")


def few_names(paths: list, n: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _warn_skipped(skipped: list[Path], key: str) -> None:
    if skipped:
        log.warning("%s: skipped %d entries that are not image files Pillow reads (by suffix) or do not fit "
                    "the layout's file name pattern: %s", key, len(skipped), few_names(skipped))


# ---------------------------------------------------------------- the demo sources

def _array_items(images: np.ndarray, masks: np.ndarray, prefix: str) -> list[Item]:
    """Items over arrays already in memory (the synthetic sources)."""
    gray = images.shape[-1] == 1

    def item(i: int) -> Item:
        return Item(f"{prefix}_{i:05d}", images.shape[1], images.shape[2], gray,
                    lambda channels: _convert_channels(images[i], channels), lambda: masks[i].astype(np.int64))
    return [item(i) for i in range(len(images))]


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[-1] == channels:
        return image
    return np.repeat(image, 3, axis=-1) if channels == 3 else np.asarray(Image.fromarray(image).convert("L"))[..., None]


def load_demo(cfg: dict) -> list[Item]:
    h, w = cfg["size"]
    if h != w:
        raise InputError(f"datasets.{cfg['name']}.size: the demo source makes square images; got {h}x{w}")
    return _array_items(*synthetic.make_demo(cfg["n_images"], h, cfg["seed"]), "demo")


def load_demo_cells(cfg: dict) -> list[Item]:
    h, w = cfg["size"]
    if h != w:
        raise InputError(f"datasets.{cfg['name']}.size: the demo_cells source makes square images; got {h}x{w}")
    return _array_items(*synthetic_cells.make_cells(cfg["n_images"], h, cfg["seed"]), "cells")


# ---------------------------------------------------------------- the folder source

def layout_of(cfg: dict) -> dict:
    """The folder layout with its defaults (multi-label masks: one folder per label)."""
    layout = {**LAYOUT_DEFAULTS, **(cfg.get("layout") or {})}
    if layout["mask_format"] is None:
        layout["mask_format"] = "label_folders" if cfg.get("task") == "multilabel" else "index"
    return layout


def load_folder(cfg: dict) -> list[Item]:
    root = Path(cfg["path"])
    layout = layout_of(cfg)
    key = f"datasets.{cfg['name']}"
    images_dir, masks_dir, unlabeled_dir = (root / layout[k] for k in ("images", "masks", "unlabeled"))
    _require_dir(root, f"{key}.path", "set it to a folder holding the images and masks (see README, 'Data layouts')")
    _require_dir(images_dir, f"{key}.layout.images", "put the labeled images there")
    _require_dir(masks_dir, f"{key}.layout.masks", "put one mask per image there, named after its image "
                 f"(layout.mask_name: {layout['mask_name']!r})")
    skipped: list[Path] = []
    recursive = bool(layout["recursive"])
    images = _by_key(images_dir, layout["image_name"], "images", recursive, skipped)
    unlabeled = (_by_key(unlabeled_dir, layout["image_name"], "images", recursive, skipped)
                 if unlabeled_dir.is_dir() and unlabeled_dir != images_dir else {})
    if layout["mask_format"] == "label_folders":
        masks = _label_folder_masks(masks_dir, layout, cfg, recursive, skipped)
    else:
        masks = _by_key(masks_dir, layout["mask_name"], "masks", recursive, skipped)
    _warn_skipped(skipped, key)
    if layout["missing_masks"] == "unlabeled" and layout["mask_format"] != "label_folders":
        without = [k for k in images if k not in masks]  # e.g. VOC: JPEGImages holds every image, masks a few
        unlabeled.update({k: images.pop(k) for k in without if k not in unlabeled})
    _check_pairs(images, masks, unlabeled, images_dir, masks_dir, unlabeled_dir, allow_missing=layout["mask_format"] == "label_folders")
    if not images and not unlabeled:
        raise InputError(f"{images_dir}: no images found (looked for every format Pillow reads: .png, .jpg, .tif, "
                         f".bmp, .webp, ... named as layout.image_name: {layout['image_name']!r})")
    reader = MASK_READERS[layout["mask_format"]]
    items = [_file_item(key_, path, masks.get(key_), lambda shape, files=masks.get(key_):
                        functools.partial(reader, files, cfg, layout, shape))
             for key_, path in images.items()]
    items += [_file_item(key_, path, None, None) for key_, path in unlabeled.items()]
    if layout["mask_format"] == "label_folders":
        bare = [it.name for it, k in zip(items, images) if not masks.get(k)]
        if bare:
            log.warning("%s: %d labeled images have no mask in any label folder and are read as showing no label: %s",
                        key, len(bare), few_names(bare))
    _fixed_splits(cfg, items)
    return items


def _file_item(key: str, path: Path, mask_files, mask_reader: Callable | None) -> Item:
    """An image file's item; `mask_reader(shape)` gives its mask reader (None: unlabeled)."""
    h, w, gray = image_header(path)
    name = f"{key.rpartition('/')[0]}/{path.name}" if "/" in key else path.name
    label = (few_names([str(p) for p in mask_files.values()]) if isinstance(mask_files, dict)
             else str(mask_files or ""))
    read_mask = mask_reader((h, w)) if mask_reader else None
    return Item(name, h, w, gray, functools.partial(read_image, path), read_mask, None, label)


def _label_folder_masks(masks_dir: Path, layout: dict, cfg: dict, recursive: bool, skipped: list[Path]
                        ) -> dict[str, dict[int, Path]]:
    """Image key -> {label index: mask file} over one folder per label (masks/<label>/...)."""
    out: dict[str, dict[int, Path]] = {}
    for index, label in enumerate(cfg["class_names"]):
        folder = masks_dir / label
        _require_dir(folder, f"datasets.{cfg['name']}.layout.masks", f"multi-label masks are one folder per label, "
                     f"named as class_names ({', '.join(cfg['class_names'])}); an image without a mask in a label's "
                     "folder shows none of that label, but every label's folder must exist (it may be empty)")
        for key, path in _by_key(folder, layout["mask_name"], f"masks of label {label!r}", recursive, skipped).items():
            out.setdefault(key, {})[index] = path
    return out


def _check_pairs(images: dict[str, Path], masks: dict, unlabeled: dict[str, Path], images_dir: Path,
                 masks_dir: Path, unlabeled_dir: Path, allow_missing: bool = False) -> None:
    """Every labeled image has a mask (unless `allow_missing`: multi-label, none = no label),
    every mask an image, and no name is both labeled and unlabeled."""
    for key, img_path in images.items():
        if key not in masks and not allow_missing:
            raise InputError(f"{img_path}: no mask with this name in {masks_dir} (layout.mask_name: the mask of image "
                             f"stem {key!r} is named as the pattern gives); add one or move the image to {unlabeled_dir}")
        if key in unlabeled:
            raise InputError(f"{img_path} and {unlabeled[key]}: the same image name in {images_dir.name}/ and "
                             f"{unlabeled_dir.name}/; an image is either labeled or not: remove or rename one of the two")
    orphans = [p for key, p in masks.items() if key not in images]
    if orphans:
        orphans = [next(iter(p.values())) if isinstance(p, dict) else p for p in orphans]
        first_key = next(k for k in masks if k not in images)
        where = ("its image is in the unlabeled folder: move the image to the labeled one to use the mask, or remove "
                 "the mask" if first_key in unlabeled else f"add the image to {images_dir} or remove the mask")
        raise InputError(f"{orphans[0]}: no image with this name stem in {images_dir}; {where} "
                         f"({len(orphans)} masks without an image: {few_names([p.name for p in orphans])})")


# ---------------------------------------------------------------- reading masks

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


# ---------------------------------------------------------------- split lists

def split_list_path(cfg: dict, split: str) -> Path:
    """Where datasets.<name>.split_lists.<split> is: a relative path is relative to the data set's
    folder (`path`), an absolute path is taken as given."""
    given = Path(cfg["split_lists"][split])
    return given if given.is_absolute() else Path(cfg["path"]) / given


def split_list_missing(cfg: dict, split: str) -> str | None:
    """The error message for a split list that is not there (None when it is)."""
    path = split_list_path(cfg, split)
    if path.is_file():
        return None
    given = cfg["split_lists"][split]
    msg = (f"{os.path.abspath(path)}: split list not found (datasets.{cfg['name']}.split_lists.{split}: {given!r}; "
           f"a relative path is read relative to the data set's folder, datasets.{cfg['name']}.path: {cfg['path']!r})")
    if not Path(given).is_absolute() and Path(given).is_file():
        msg += (f"; a file {os.path.abspath(given)} exists relative to the working directory: give its absolute "
                "path or a path relative to the data set's folder")
    return msg


def _fixed_splits(cfg: dict, items: list[Item]) -> None:
    """Splits from the optional split lists (one file name, stem or sub-path per line); unlabeled
    images are 'unlabeled'. Sets each item's `split`."""
    for it in items:
        it.split = None if it.read_mask is not None else "unlabeled"
    index: dict[str, int] = {}
    for i, it in enumerate(items):
        for alias in (it.name, Path(it.name).name, Path(it.name).stem, str(Path(it.name).with_suffix(""))):
            index.setdefault(alias, i)
    listed: dict[int, tuple[str, Path, int]] = {}  # image -> (split, list file, line) where it was listed first
    for split in (cfg.get("split_lists") or {}):
        missing = split_list_missing(cfg, split)
        if missing:
            raise InputError(missing)
        list_path = split_list_path(cfg, split)
        for line_no, line in enumerate(list_path.read_text().splitlines(), 1):
            name = line.strip()
            if not name:
                continue
            i = index.get(name, index.get(Path(name).stem))
            if i is None:
                raise InputError(f"{list_path}:{line_no}: {name!r} is not an image of {cfg['path']}")
            if split != "unlabeled" and items[i].read_mask is None:
                raise InputError(f"{list_path}:{line_no}: {name!r} has no mask, so it cannot be in split {split!r}")
            if i in listed and listed[i][0] != split:
                first_split, first_path, first_line = listed[i]
                raise InputError(f"{list_path}:{line_no}: {name!r} is also listed in {first_path}:{first_line} "
                                 f"(split {first_split!r}); an image belongs to one split: remove one of the two lines")
            listed.setdefault(i, (split, list_path, line_no))
            items[i].split = split
    if cfg.get("split_lists"):  # with lists given, an unlisted labeled image is not used at all
        for it in items:
            it.split = it.split or "unused"


# ---------------------------------------------------------------- SUIM

def load_suim(cfg: dict) -> list[Item]:
    root = Path(cfg["path"])
    expected = [root / "train_val" / "images", root / "train_val" / "masks", root / "TEST" / "images", root / "TEST" / "masks"]
    missing = [str(p) for p in expected if not p.is_dir()]
    if missing:
        raise InputError(
            f"SUIM not found: missing {', '.join(missing)} (datasets.{cfg['name']}.path = {root}). Download SUIM from "
            f"{SUIM_URL} (the train_val and TEST archives) and unpack both into {root} so that "
            f"{root}/train_val/images, {root}/train_val/masks, {root}/TEST/images and {root}/TEST/masks exist."
        )
    items: list[Item] = []
    skipped: list[Path] = []
    for part, split in (("train_val", None), ("TEST", "test")):
        masks_by_stem = _by_key(root / part / "masks", "{stem}.*", "masks", False, skipped)
        images = _by_key(root / part / "images", "{stem}.*", "images", False, skipped)
        orphans = [p for stem, p in masks_by_stem.items() if stem not in images]
        if orphans:  # the distributed archive is as it is: the extra masks are not used, and said so
            log.warning("datasets.%s: %d masks in %s have no image and are not used: %s",
                        cfg["name"], len(orphans), root / part / "masks", few_names([p.name for p in orphans]))
        for stem, img_path in images.items():
            mask_path = masks_by_stem.get(stem)
            if mask_path is None:
                raise InputError(f"{img_path}: no mask with this name in {root / part / 'masks'}")
            h, w, _ = image_header(img_path)
            items.append(Item(f"{part}/{img_path.name}", h, w, False, functools.partial(read_image, img_path),
                              functools.partial(_read_suim_mask, mask_path, (h, w)), split, str(mask_path)))
    _warn_skipped(skipped, f"datasets.{cfg['name']}.path")
    return items


def _read_suim_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = nearest_palette_index(read_image(path), SUIM_PALETTE)
    if mask.shape != shape:  # a few SUIM masks differ by some pixels: resize, as the authors do
        mask = np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.NEAREST))
    return mask.astype(np.int64)


SOURCES = {"demo": load_demo, "demo_cells": load_demo_cells, "folder": load_folder, "suim": load_suim}
