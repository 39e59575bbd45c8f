"""Data sources: the demo generator, a folder of images and masks, and SUIM as distributed.

Each source reads its files into `RawData` (images, class-index masks or None, names, and the
split an image is fixed to, if any) and checks them: unreadable files, lossy or RGB masks, mask
values outside the classes, 0/255 binary masks, duplicate stems, masks without images, split
lists. `data.prepare` turns RawData into the data store.
"""
from __future__ import annotations

import functools
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .io import InputError
from . import synthetic

log = logging.getLogger("im_core.sources")

# Pillow formats whose compression changes pixel values: a class-index mask must not be stored in
# them (WebP is refused only when the file is lossy, see `_is_lossy_webp`)
LOSSY_MASK_FORMATS = ("JPEG", "MPO", "JPEG2000", "AVIF")
NOT_IMAGE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG")  # data and video containers Pillow only identifies
SUIM_CLASSES = ["background", "divers", "plants", "wrecks", "robots", "reefs", "fish", "sea_floor"]
SUIM_PALETTE = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255), (255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]
SUIM_URL = "https://irvlab.cs.umn.edu/resources/suim-dataset"


@dataclass
class RawData:
    """What a source yields before splitting: one entry per image."""
    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    names: list[str]
    fixed_split: list[str | None] = field(default_factory=list)  # a split name, or None = assign at random


# ---------------------------------------------------------------- reading files

@functools.cache
def image_suffixes() -> dict[str, str]:
    """File suffix (lower case, with the dot) -> Pillow format, for every image format Pillow can
    open (do not modify the returned dict: it is shared)."""
    Image.init()
    return {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt not in NOT_IMAGE_FORMATS}


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this image ({e}); replace or remove the file") from e


def read_index_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            lossy = im.format in LOSSY_MASK_FORMATS or (im.format == "WEBP" and _is_lossy_webp(path))
            if lossy:
                raise InputError(f"{path}: mask stored as {im.format}{' (lossy)' if im.format == 'WEBP' else ''}, "
                                 "whose compression changes pixel values, so class indices come out wrong at "
                                 "edges; save the masks losslessly (PNG) from the original annotation")
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise InputError(f"{path}: mask has mode {im.mode}; expected a single-channel class-index PNG "
                                 "(pixel value = class index)")
            return np.asarray(im).astype(np.int64)
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


def _list_images(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """The files of `folder` that Pillow can open (by suffix), sorted; hidden files are left out.
    Other entries (files of other types, subfolders) are appended to `skipped` when given."""
    images = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in image_suffixes():
            images.append(p)
        elif skipped is not None:
            skipped.append(p)
    return images


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    """Files by name stem (images and masks are matched by stem); two files with one stem are an error."""
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise InputError(f"{out[p.stem]} and {p}: two {what} with the name stem {p.stem!r}; images and masks "
                             "are matched by the stem, so keep one of the two (remove or rename the other)")
        out[p.stem] = p
    return out


def _require_dir(path: Path, key: str, what: str) -> None:
    if not path.is_dir():
        raise InputError(f"{path}: folder not found ({key}); {what}")


def few_names(paths: list, n: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _warn_skipped(skipped: list[Path], key: str) -> None:
    if skipped:
        log.warning("%s: skipped %d entries that are not image files Pillow reads (by suffix): %s",
                    key, len(skipped), few_names(skipped))


# ---------------------------------------------------------------- sources

def load_demo(cfg: dict) -> RawData:
    h, w = cfg["size"]
    if h != w:
        raise InputError(f"datasets.{cfg['name']}.size: the demo source makes square images; got {h}x{w}")
    images, masks = synthetic.make_demo(cfg["n_images"], h, cfg["seed"])
    return RawData(list(images), list(masks), [f"demo_{i:05d}" for i in range(len(images))], [None] * len(images))


def load_folder(cfg: dict) -> RawData:
    root = Path(cfg["path"])
    key = f"datasets.{cfg['name']}.path"
    _require_dir(root, key, "set it to a folder holding images/ and masks/ (and optionally unlabeled/)")
    _require_dir(root / "images", key, "put the labeled images in images/ and their class-index PNG masks in masks/")
    _require_dir(root / "masks", key, "put one class-index PNG per image in masks/, with the image's file name")
    skipped: list[Path] = []
    images = _by_stem(_list_images(root / "images", skipped), "images")
    masks = _by_stem(_list_images(root / "masks", skipped), "masks")
    unlabeled = _by_stem(_list_images(root / "unlabeled", skipped), "images") if (root / "unlabeled").is_dir() else {}
    _warn_skipped(skipped, key)
    _check_pairs(images, masks, unlabeled, root)
    binary_255 = bool(cfg.get("binary_255", False))
    raw = RawData([], [], [], [])
    mask_values: list[tuple[Path, frozenset[int]]] = []
    for stem, img_path in images.items():
        mask_path = masks[stem]
        image, mask = read_image(img_path), read_index_mask(mask_path)
        if binary_255:
            mask = np.where(mask == 255, 1, mask)
        if mask.shape != image.shape[:2]:
            raise InputError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]}; they must be the same size")
        _check_mask_values(mask, mask_path, len(cfg["class_names"]), cfg["ignore_index"], cfg["name"])
        mask_values.append((mask_path, frozenset(np.unique(mask).tolist())))
        raw.images.append(image), raw.masks.append(mask), raw.names.append(img_path.name)
    _check_binary_255(mask_values, cfg)
    for img_path in unlabeled.values():
        raw.images.append(read_image(img_path)), raw.masks.append(None), raw.names.append(img_path.name)
    if not raw.images:
        raise InputError(f"{root / 'images'}: no images found (looked for every format Pillow reads: "
                         ".png, .jpg, .tif, .bmp, .webp, ...)")
    raw.fixed_split = _fixed_splits(cfg, raw)
    return raw


def _check_pairs(images: dict[str, Path], masks: dict[str, Path], unlabeled: dict[str, Path], root: Path) -> None:
    """Every image in images/ has a mask, every mask an image in images/, and no name is both in
    images/ and unlabeled/."""
    for stem, img_path in images.items():
        if stem not in masks:
            raise InputError(f"{img_path}: no mask with this name in {root / 'masks'}; add one or move the image "
                             "to unlabeled/")
        if stem in unlabeled:
            raise InputError(f"{img_path} and {unlabeled[stem]}: the same image name in images/ and unlabeled/; "
                             "an image is either labeled or not: remove or rename one of the two")
    orphans = [p for stem, p in masks.items() if stem not in images]
    if orphans:
        where = ("its image is in unlabeled/: move the image to images/ to use the mask, or remove the mask"
                 if orphans[0].stem in unlabeled else f"add the image to {root / 'images'} or remove the mask")
        raise InputError(f"{orphans[0]}: no image with this name stem in {root / 'images'}; {where} "
                         f"({len(orphans)} masks without an image: {few_names([p.name for p in orphans])})")


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


def _check_binary_255(mask_values: list[tuple[Path, frozenset[int]]], cfg: dict) -> None:
    """Two classes, ignore_index 255 and masks holding 0 and 255 but never 1: the masks are 0/255
    binary masks, and reading 255 as 'not annotated' would lose every foreground pixel. An error,
    unless binary_255 maps 255 to class 1. Some masks with 255 and no 1 while others hold 1:
    ambiguous, a warning."""
    if len(cfg["class_names"]) != 2 or cfg["ignore_index"] != 255 or cfg.get("binary_255"):
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


def _fixed_splits(cfg: dict, raw: RawData) -> list[str | None]:
    """Splits from the optional split lists (one file name per line); unlabeled/ images are 'unlabeled'."""
    fixed: list[str | None] = [None if m is not None else "unlabeled" for m in raw.masks]
    index = {name: i for i, name in enumerate(raw.names)} | {Path(n).stem: i for i, n in enumerate(raw.names)}
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
            if split != "unlabeled" and raw.masks[i] is None:
                raise InputError(f"{list_path}:{line_no}: {name!r} has no mask, so it cannot be in split {split!r}")
            if i in listed and listed[i][0] != split:
                first_split, first_path, first_line = listed[i]
                raise InputError(f"{list_path}:{line_no}: {name!r} is also listed in {first_path}:{first_line} "
                                 f"(split {first_split!r}); an image belongs to one split: remove one of the two lines")
            listed.setdefault(i, (split, list_path, line_no))
            fixed[i] = split
    if cfg.get("split_lists"):  # with lists given, an unlisted labeled image is not used at all
        fixed = [s if s is not None else "unused" for s in fixed]
    return fixed


def load_suim(cfg: dict) -> RawData:
    root = Path(cfg["path"])
    expected = [root / "train_val" / "images", root / "train_val" / "masks", root / "TEST" / "images", root / "TEST" / "masks"]
    missing = [str(p) for p in expected if not p.is_dir()]
    if missing:
        raise InputError(
            f"SUIM not found: missing {', '.join(missing)} (datasets.{cfg['name']}.path = {root}). Download SUIM from "
            f"{SUIM_URL} (the train_val and TEST archives) and unpack both into {root} so that "
            f"{root}/train_val/images, {root}/train_val/masks, {root}/TEST/images and {root}/TEST/masks exist."
        )
    raw = RawData([], [], [], [])
    skipped: list[Path] = []
    for part, split in (("train_val", None), ("TEST", "test")):
        masks_by_stem = _by_stem(_list_images(root / part / "masks", skipped), "masks")
        images = _by_stem(_list_images(root / part / "images", skipped), "images")
        orphans = [p for stem, p in masks_by_stem.items() if stem not in images]
        if orphans:  # the distributed archive is as it is: the extra masks are not used, and said so
            log.warning("datasets.%s: %d masks in %s have no image and are not used: %s",
                        cfg["name"], len(orphans), root / part / "masks", few_names([p.name for p in orphans]))
        for img_path in images.values():
            mask_path = masks_by_stem.get(img_path.stem)
            if mask_path is None:
                raise InputError(f"{img_path}: no mask with this name in {root / part / 'masks'}")
            image = read_image(img_path)
            mask = nearest_palette_index(read_image(mask_path), SUIM_PALETTE)
            if mask.shape != image.shape[:2]:  # a few SUIM masks differ by some pixels: resize, as the authors do
                mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
            raw.images.append(image), raw.masks.append(mask), raw.names.append(f"{part}/{img_path.name}")
            raw.fixed_split.append(split)
    _warn_skipped(skipped, f"datasets.{cfg['name']}.path")
    return raw


SOURCES = {"demo": load_demo, "folder": load_folder, "suim": load_suim}
