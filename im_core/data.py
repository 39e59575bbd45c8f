"""Data sources (demo, folder, suim) -> one zarr store per data set, and the training sample set.

The data store holds every image of the data set at one size:
  images    N x H x W x 3 uint8
  masks     N x H x W uint8 class indices (N x C x H x W 0/1 for multi-label); `ignore_index`
            where unknown, and everywhere for images that came without a mask
  split     N uint8, codes in attrs["split_codes"] (labeled, unlabeled, val, test)
  has_mask  N bool
attrs: class_names, palette, ignore_index, task, names (file names), source settings.
The masks of the unlabeled split are kept for diagnostics (scoring pseudo-labels) and for the
FDT baseline; `training_arrays` is the only reader used for training and returns them only
when asked for all labels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .io import InputError, atomic_output, open_store, write_array
from . import synthetic

SPLITS = ("labeled", "unlabeled", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
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

def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this image ({e}); replace or remove the file") from e


def read_index_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise InputError(f"{path}: mask has mode {im.mode}; expected a single-channel class-index PNG "
                                 "(pixel value = class index)")
            return np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read this mask ({e}); replace or remove the file") from e


def nearest_palette_index(rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """Map each RGB pixel to the index of the nearest palette colour (squared distance)."""
    pal = np.asarray(palette, dtype=np.int32)
    diff = rgb.reshape(-1, 1, 3).astype(np.int32) - pal[None]
    return (diff**2).sum(-1).argmin(1).reshape(rgb.shape[:2]).astype(np.uint8)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _require_dir(path: Path, key: str, what: str) -> None:
    if not path.is_dir():
        raise InputError(f"{path}: folder not found ({key}); {what}")


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
    raw = RawData([], [], [], [])
    masks_by_stem = {p.stem: p for p in _list_images(root / "masks")}
    for img_path in _list_images(root / "images"):
        mask_path = masks_by_stem.get(img_path.stem)
        if mask_path is None:
            raise InputError(f"{img_path}: no mask with this name in {root / 'masks'}; add one or move the image "
                             "to unlabeled/")
        image, mask = read_image(img_path), read_index_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise InputError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]}; they must be the same size")
        _check_mask_values(mask, mask_path, len(cfg["class_names"]), cfg["ignore_index"])
        raw.images.append(image), raw.masks.append(mask), raw.names.append(img_path.name)
    if (root / "unlabeled").is_dir():
        for img_path in _list_images(root / "unlabeled"):
            raw.images.append(read_image(img_path)), raw.masks.append(None), raw.names.append(img_path.name)
    if not raw.images:
        raise InputError(f"{root / 'images'}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    raw.fixed_split = _fixed_splits(cfg, raw)
    return raw


def _check_mask_values(mask: np.ndarray, path: Path, num_classes: int, ignore_index: int) -> None:
    bad = (mask >= num_classes) & (mask != ignore_index) | (mask < 0)
    if bad.any():
        values = sorted(set(np.unique(mask[bad]).tolist()))[:10]
        raise InputError(f"{path}: mask values {values} are outside the {num_classes} classes 0..{num_classes - 1} "
                         f"and are not the ignore index {ignore_index}; fix the mask or the data set's class_names "
                         "/ ignore_index")


def _fixed_splits(cfg: dict, raw: RawData) -> list[str | None]:
    """Splits from the optional split lists (one file name per line); unlabeled/ images are 'unlabeled'."""
    fixed: list[str | None] = [None if m is not None else "unlabeled" for m in raw.masks]
    index = {name: i for i, name in enumerate(raw.names)} | {Path(n).stem: i for i, n in enumerate(raw.names)}
    for split, list_path in (cfg.get("split_lists") or {}).items():
        list_path = Path(list_path)
        if not list_path.is_file():
            raise InputError(f"{list_path}: split list not found (datasets.{cfg['name']}.split_lists.{split})")
        for line_no, line in enumerate(list_path.read_text().splitlines(), 1):
            name = line.strip()
            if not name:
                continue
            i = index.get(name, index.get(Path(name).stem))
            if i is None:
                raise InputError(f"{list_path}:{line_no}: {name!r} is not an image of {cfg['path']}")
            if split != "unlabeled" and raw.masks[i] is None:
                raise InputError(f"{list_path}:{line_no}: {name!r} has no mask, so it cannot be in split {split!r}")
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
    for part, split in (("train_val", None), ("TEST", "test")):
        masks_by_stem = {p.stem: p for p in _list_images(root / part / "masks")}
        for img_path in _list_images(root / part / "images"):
            mask_path = masks_by_stem.get(img_path.stem)
            if mask_path is None:
                raise InputError(f"{img_path}: no mask with this name in {root / part / 'masks'}")
            image = read_image(img_path)
            mask = nearest_palette_index(read_image(mask_path), SUIM_PALETTE)
            if mask.shape != image.shape[:2]:  # a few SUIM masks differ by some pixels: resize, as the authors do
                mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
            raw.images.append(image), raw.masks.append(mask), raw.names.append(f"{part}/{img_path.name}")
            raw.fixed_split.append(split)
    return raw


SOURCES = {"demo": load_demo, "folder": load_folder, "suim": load_suim}


# ---------------------------------------------------------------- splits and resizing

def assign_splits(fixed: list[str | None], cfg: dict) -> np.ndarray:
    """Split names per image. Fixed entries stay; the rest: test, then val, then labeled/unlabeled."""
    rng = np.random.default_rng(cfg["seed"])
    out = np.array([s or "" for s in fixed], dtype=object)
    free = rng.permutation(np.flatnonzero(out == ""))
    n = len(free)
    n_test = 0 if "test" in set(fixed) else int(round(cfg["test_fraction"] * n))
    n_val = 0 if "val" in set(fixed) else int(round(cfg["val_fraction"] * n))
    out[free[:n_test]] = "test"
    out[free[n_test:n_test + n_val]] = "val"
    pool = free[n_test + n_val:]
    n_labeled = max(1, int(round(cfg["labeled_fraction"] * len(pool)))) if len(pool) else 0
    out[pool[:n_labeled]] = "labeled"
    out[pool[n_labeled:]] = "unlabeled"
    for split in ("labeled", "val"):
        if not (out == split).any():
            raise InputError(f"datasets.{cfg['name']}: split {split!r} is empty; add images or raise its fraction")
    return out


def _crop_boxes(rng: np.random.Generator, h: int, w: int, count: int, min_side: int) -> list[tuple[int, int, int]]:
    """`count` random square crops (top, left, side), side in [min_side, min(h, w)]."""
    boxes = []
    for _ in range(count):
        side = int(rng.integers(min(min_side, min(h, w)), min(h, w) + 1))
        boxes.append((int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side))
    return boxes


def _resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = size
    if image.shape[:2] != (h, w):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST))
    return image, mask


def prepare(cfg: dict, out: str | os.PathLike) -> dict:
    """Build the data store for one data set entry of the config. Returns a summary."""
    raw = SOURCES[cfg["source"]](cfg)
    if len(raw.fixed_split) != len(raw.images):
        raw.fixed_split = [None] * len(raw.images)
    split_names = assign_splits(raw.fixed_split, cfg)
    size = tuple(cfg["size"]) if cfg.get("size") else None
    if size is None:
        shapes = {im.shape[:2] for im in raw.images}
        if len(shapes) > 1:
            raise InputError(f"datasets.{cfg['name']}.size: images have {len(shapes)} different sizes; set size: [H, W]")
        size = shapes.pop()
    if size[0] % 16 or size[1] % 16:
        raise InputError(f"datasets.{cfg['name']}.size: {size[0]}x{size[1]} is not a multiple of 16 on both sides "
                         "(the U-Net halves the size four times)")
    ignore = cfg["ignore_index"]
    rng = np.random.default_rng(cfg["seed"] + 1)
    images, masks, has_mask, names, splits = [], [], [], [], []
    for image, mask, name, split in zip(raw.images, raw.masks, raw.names, split_names):
        if split == "unused":
            continue
        crops = cfg.get("crops_per_image", 0)
        boxes = _crop_boxes(rng, *image.shape[:2], crops, cfg.get("crop_min_side", 256)) if crops else [None]
        for k, box in enumerate(boxes):
            im, m = image, mask
            if box is not None:
                t, l, s = box
                im, m = image[t:t + s, l:l + s], None if mask is None else mask[t:t + s, l:l + s]
            im, m = _resize_pair(im, m, size)
            images.append(im)
            masks.append(np.full(size, ignore, np.uint8) if m is None else m.astype(np.uint8))
            has_mask.append(m is not None)
            names.append(name if box is None else f"{name}#crop{k}")
            splits.append(SPLITS.index(split))
    class_names = list(cfg["class_names"])
    palette = [list(c) for c in cfg["palette"]]
    with atomic_output(out) as tmp:
        group = open_store(tmp, mode="w")
        write_array(group, "images", np.stack(images), ("image", "y", "x", "channel"))
        write_array(group, "masks", np.stack(masks), ("image", "y", "x"))
        write_array(group, "split", np.array(splits, np.uint8), ("image",))
        write_array(group, "has_mask", np.array(has_mask, bool), ("image",))
        group.attrs.update({
            "kind": "im_core.data", "dataset": cfg["name"], "source": cfg["source"], "task": cfg["task"],
            "class_names": class_names, "palette": palette, "ignore_index": ignore,
            "split_codes": {name: i for i, name in enumerate(SPLITS)}, "names": names, "size": list(size),
        })
    counts = {s: int((np.array(splits) == i).sum()) for i, s in enumerate(SPLITS)}
    return {"images": len(images), "size": list(size), "splits": counts}


# ---------------------------------------------------------------- reading the store for training

@dataclass
class SplitArrays:
    images: np.ndarray   # N x H x W x 3 uint8
    masks: np.ndarray    # N x H x W (or N x C x H x W) uint8
    index: np.ndarray    # positions in the data store


def label_shape(task: str, num_classes: int, size: tuple[int, int]) -> tuple[int, ...]:
    """The shape of one image's labels: H x W, or C x H x W for multi-label."""
    return (num_classes, *size) if task == "multilabel" else tuple(size)


def split_indices(store, split: str) -> np.ndarray:
    return np.flatnonzero(store["split"][:] == store.attrs["split_codes"][split])


def read_split(store, split: str, with_masks: bool = True) -> SplitArrays:
    idx = split_indices(store, split)
    images = store["images"].get_orthogonal_selection((idx,))
    masks = store["masks"].get_orthogonal_selection((idx,)) if with_masks else np.empty((0,), np.uint8)
    return SplitArrays(images, masks, idx)


def training_arrays(store, labels: str = "labeled") -> SplitArrays:
    """The ground truth training sees: the labeled split's, or with labels="all" (FDT, the
    upper-bound baseline) the unlabeled split's too, which must then have masks."""
    labeled = read_split(store, "labeled")
    if labels == "labeled":
        return labeled
    if labels != "all":
        raise ValueError(f"labels must be 'labeled' or 'all', got {labels!r}")
    unlabeled = read_split(store, "unlabeled")
    missing = int((~store["has_mask"].get_orthogonal_selection((unlabeled.index,))).sum())
    if missing:
        raise InputError(f"{store.store}: {missing} of {len(unlabeled.index)} unlabeled images have no mask, "
                         "so a model on all labels (stage0.labels: all, FDT) cannot be trained on this data set")
    return SplitArrays(np.concatenate([labeled.images, unlabeled.images]),
                       np.concatenate([labeled.masks, unlabeled.masks]),
                       np.concatenate([labeled.index, unlabeled.index]))
