"""The folder source: images/ and masks/ (and unlabeled/) in a configurable layout.

The `layout` covers the layouts public sets come in: where images and masks are, how a mask's
file name follows from its image's (`{stem}_segmentation.png`), what a mask value means (class
index, a value map, a void value, a palette colour) and, for multi-label data, one 0/255 mask
folder per label or one multi-channel mask per image. Listing pairs images with masks by name
and checks what a listing shows: missing folders, masks without images, duplicate names.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable

from ..errors import InputError, few_names
from .images import Intensity, image_header, image_suffixes, intensity_rule, read_image
from .items import Item
from .masks import MASK_READERS
from .split_lists import fixed_splits

log = logging.getLogger("im_core.data")

LAYOUT_DEFAULTS = {"images": "images", "masks": "masks", "unlabeled": "unlabeled", "image_name": "{stem}.*",
                   "mask_name": "{stem}.*", "recursive": False, "mask_format": None, "value_map": None,
                   "void_value": None, "void_colour": None, "positive_value": 255,
                   "missing_masks": "error"}


def list_images(folder: Path, skipped: list[Path] | None = None, recursive: bool = False) -> list[Path]:
    """The files of `folder` (and its subfolders, with `recursive`) that Pillow can open (by
    suffix), sorted; hidden files and folders are left out. Other entries (files of other types,
    subfolders when not recursive) are appended to `skipped` when given.

    Recursive listing follows symbolic links to folders. Each folder is listed once, by its real
    path: a link back to a folder being listed (a loop) and a second way to a folder already
    listed are each named in a warning and not followed, so no image is listed twice."""
    images: list[Path] = []
    listed = {_real(folder): folder}

    def visit(directory: Path, ancestors: frozenset[Path]) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError as e:
            raise InputError(f"{directory}: cannot list this folder ({e}); fix its permissions or remove it") from e
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.is_file() and p.suffix.lower() in image_suffixes():
                images.append(p)
            elif recursive and p.is_dir():
                real = _real(p)
                if real in ancestors:
                    log.warning("%s: a link back to %s, which holds it (a loop); not followed again", p, listed[real])
                elif real in listed:
                    log.warning("%s: the same folder as %s (a link); its images are listed once, under %s",
                                p, listed[real], listed[real])
                else:
                    listed[real] = p
                    visit(p, ancestors | {real})
            elif skipped is not None:
                skipped.append(p)

    visit(folder, frozenset({_real(folder)}))
    return sorted(images)


def _real(folder: Path) -> Path:
    return Path(os.path.realpath(folder))


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


def by_key(folder: Path, pattern: str, what: str, recursive: bool, skipped: list[Path]) -> dict[str, Path]:
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


def warn_skipped(skipped: list[Path], key: str) -> None:
    if skipped:
        log.warning("%s: skipped %d entries that are not image files Pillow reads (by suffix) or do not fit "
                    "the layout's file name pattern: %s", key, len(skipped), few_names(skipped))


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
    images = by_key(images_dir, layout["image_name"], "images", recursive, skipped)
    unlabeled = (by_key(unlabeled_dir, layout["image_name"], "images", recursive, skipped)
                 if unlabeled_dir.is_dir() and unlabeled_dir != images_dir else {})
    if layout["mask_format"] == "label_folders":
        masks = _label_folder_masks(masks_dir, layout, cfg, recursive, skipped)
    else:
        masks = by_key(masks_dir, layout["mask_name"], "masks", recursive, skipped)
    warn_skipped(skipped, key)
    if layout["missing_masks"] == "unlabeled" and layout["mask_format"] != "label_folders":
        without = [k for k in images if k not in masks]  # e.g. VOC: JPEGImages holds every image, masks a few
        unlabeled.update({k: images.pop(k) for k in without if k not in unlabeled})
    _check_pairs(images, masks, unlabeled, images_dir, masks_dir, unlabeled_dir, allow_missing=layout["mask_format"] == "label_folders")
    if not images and not unlabeled:
        raise InputError(f"{images_dir}: no images found (looked for every format Pillow reads: .png, .jpg, .tif, "
                         f".bmp, .webp, ... named as layout.image_name: {layout['image_name']!r})")
    reader = MASK_READERS[layout["mask_format"]]
    intensity = intensity_rule(cfg.get("intensity_range"), f"{key}.intensity_range")
    items = [_file_item(key_, path, masks.get(key_), lambda shape, files=masks.get(key_):
                        functools.partial(reader, files, cfg, layout, shape), intensity)
             for key_, path in images.items()]
    items += [_file_item(key_, path, None, None, intensity) for key_, path in unlabeled.items()]
    if layout["mask_format"] == "label_folders":
        bare = [it.name for it, k in zip(items, images) if not masks.get(k)]
        if bare:
            log.warning("%s: %d labeled images have no mask in any label folder and are read as showing no label: %s",
                        key, len(bare), few_names(bare))
    fixed_splits(cfg, items)
    return items


def _file_item(key: str, path: Path, mask_files, mask_reader: Callable | None, intensity: Intensity) -> Item:
    """An image file's item; `mask_reader(shape)` gives its mask reader (None: unlabeled); the
    image is read by the data set's bit-depth rule `intensity`."""
    h, w, gray = image_header(path)
    name = f"{key.rpartition('/')[0]}/{path.name}" if "/" in key else path.name
    label = (few_names([str(p) for p in mask_files.values()]) if isinstance(mask_files, dict)
             else str(mask_files or ""))
    read_mask = mask_reader((h, w)) if mask_reader else None
    return Item(name, h, w, gray, functools.partial(read_image, path, intensity=intensity), read_mask, None, label)


def _label_folder_masks(masks_dir: Path, layout: dict, cfg: dict, recursive: bool, skipped: list[Path]
                        ) -> dict[str, dict[int, Path]]:
    """Image key -> {label index: mask file} over one folder per label (masks/<label>/...)."""
    out: dict[str, dict[int, Path]] = {}
    for index, label in enumerate(cfg["class_names"]):
        folder = masks_dir / label
        _require_dir(folder, f"datasets.{cfg['name']}.layout.masks", f"multi-label masks are one folder per label, "
                     f"named as class_names ({', '.join(cfg['class_names'])}); an image without a mask in a label's "
                     "folder shows none of that label, but every label's folder must exist (it may be empty)")
        for key, path in by_key(folder, layout["mask_name"], f"masks of label {label!r}", recursive, skipped).items():
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
