"""The data store of a data set (from its source, see sources.py) and what training reads of it.

The data store holds every image of the data set at one size:
  images    N x H x W x 3 uint8
  masks     N x H x W uint8 class indices (N x C x H x W 0/1 for multi-label); `ignore_index`
            where unknown, and everywhere for images that came without a mask
  split     N uint8, codes in attrs["split_codes"] (labeled, unlabeled, val, test)
  has_mask  N bool
attrs: class_names, palette, ignore_index, task, names (file names), source settings.
The masks of the unlabeled split are kept for diagnostics (scoring pseudo-labels) and for the
FDT baseline; `training_arrays` is the only reader used for training and returns them only
when asked for all labels. Validation and test images are stored whole; random crops
(`crops_per_image`) are for the training splits only.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .io import InputError, atomic_output, open_store, write_array
from .sources import SOURCES, few_names

log = logging.getLogger("im_core.data")

SPLITS = ("labeled", "unlabeled", "val", "test")
TRAINING_SPLITS = ("labeled", "unlabeled")  # the splits that get random crops (crops_per_image)
UPSCALE_WARN = 4.0  # an image (or crop) enlarged more than this on a side to reach `size` is warned about


# ---------------------------------------------------------------- splits and resizing

def split_sizes(n_free: int, cfg: dict, fixed: Collection[str] = ()) -> dict[str, int]:
    """How many of `n_free` images without a fixed split go to each split: test_fraction of them
    to test and val_fraction to val (none where some image is fixed to that split), then
    labeled_fraction of the rest (at least one) to labeled and the others to unlabeled."""
    n_test = 0 if "test" in fixed else int(round(cfg["test_fraction"] * n_free))
    n_val = 0 if "val" in fixed else min(int(round(cfg["val_fraction"] * n_free)), n_free - n_test)
    pool = n_free - n_test - n_val
    n_labeled = max(1, int(round(cfg["labeled_fraction"] * pool))) if pool else 0
    return {"labeled": n_labeled, "unlabeled": pool - n_labeled, "val": n_val, "test": n_test}


SPLIT_ADVICE = {
    "labeled": "raise datasets.{name}.labeled_fraction or lower val_fraction/test_fraction",
    "unlabeled": ("lower datasets.{name}.labeled_fraction (below 1) or add unlabeled images (folder source: "
                  "unlabeled/); every experiment predicts the unlabeled split and self-training learns from it"),
    "val": "raise datasets.{name}.val_fraction; models are selected on it",
    "test": "raise datasets.{name}.test_fraction; the results are measured on it",
}


def empty_split_message(counts: dict[str, int], cfg: dict, allow_empty_unlabeled: bool = False,
                        detail: str | None = None) -> str | None:
    """The error for the first split the experiments need that got no image (None when all got
    some); `detail` replaces the images per split in the message."""
    for split in SPLITS:
        if counts.get(split, 0) == 0 and not (split == "unlabeled" and allow_empty_unlabeled):
            detail = detail or "images per split: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
            advice = SPLIT_ADVICE[split].format(name=cfg["name"])
            if cfg.get("split_lists"):
                advice += f", or list images in datasets.{cfg['name']}.split_lists.{split}"
            return f"datasets.{cfg['name']}: split {split!r} would be empty ({detail}); {advice}"
    return None


def assign_splits(fixed: list[str | None], cfg: dict) -> np.ndarray:
    """Split names per image. Fixed entries stay; the rest: test, then val, then labeled/unlabeled.

    Every split must get an image. The one exception is unlabeled with labeled_fraction 1 and no
    split lists, which asks for every training image labeled (bench/demo_gap.py's FDT store); the
    workflow's config check refuses that, since every experiment predicts the unlabeled split."""
    rng = np.random.default_rng(cfg["seed"])
    out = np.array([s or "" for s in fixed], dtype=object)
    free = rng.permutation(np.flatnonzero(out == ""))
    sizes = split_sizes(len(free), cfg, set(s for s in fixed if s))
    n_test, n_val, n_labeled = sizes["test"], sizes["val"], sizes["labeled"]
    out[free[:n_test]] = "test"
    out[free[n_test:n_test + n_val]] = "val"
    pool = free[n_test + n_val:]
    out[pool[:n_labeled]] = "labeled"
    out[pool[n_labeled:]] = "unlabeled"
    counts = {s: int((out == s).sum()) for s in SPLITS}
    all_labeled = cfg["labeled_fraction"] >= 1 and not cfg.get("split_lists")
    message = empty_split_message(counts, cfg, allow_empty_unlabeled=all_labeled)
    if message:
        raise InputError(message)
    return out


def _crop_boxes(rng: np.random.Generator, h: int, w: int, count: int, min_side: int,
                max_side: int | None = None) -> list[tuple[int, int, int]]:
    """`count` random square crops (top, left, side), the side drawn in [min_side, max_side]; an
    image whose short side is shorter than max_side bounds the side by its short side (and
    min_side too, where the short side is shorter than that)."""
    short = min(h, w)
    hi = short if max_side is None else min(max_side, short)
    lo = min(min_side, hi)
    boxes = []
    for _ in range(count):
        side = int(rng.integers(lo, hi + 1))
        boxes.append((int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side))
    return boxes


def _resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = size
    if image.shape[:2] != (h, w):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST))
    return image, mask


def upscale_factor(shape: tuple[int, ...], size: tuple[int, int]) -> float:
    """How many times an image (or crop) of `shape` is enlarged on its more enlarged side to reach `size`."""
    return max(size[0] / shape[0], size[1] / shape[1])


def _warn_upscaled(upscaled: list[tuple[str, float]], cfg: dict, size: tuple[int, int]) -> None:
    if upscaled:
        log.warning("datasets.%s: %d images (or crops) are enlarged more than %gx to reach size %dx%d, so they "
                    "hold little detail: %s; check the data or choose a smaller size", cfg["name"], len(upscaled),
                    UPSCALE_WARN, size[0], size[1], few_names([f"{n} ({f:.1f}x)" for n, f in upscaled]))


def prepare(cfg: dict, out: str | os.PathLike) -> dict:
    """Build the data store for one data set entry of the config. Returns a summary.

    With crops_per_image, only the training splits (labeled, unlabeled) are cropped; validation
    and test images are stored whole, resized to `size`, so they are evaluated whole."""
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
    crops = cfg.get("crops_per_image", 0)
    images, masks, has_mask, names, splits = [], [], [], [], []
    upscaled: list[tuple[str, float]] = []
    for image, mask, name, split in zip(raw.images, raw.masks, raw.names, split_names):
        if split == "unused":
            continue
        boxes = [None]
        if crops and split in TRAINING_SPLITS:
            boxes = _crop_boxes(rng, *image.shape[:2], crops, cfg.get("crop_min_side", 256), cfg.get("crop_max_side"))
        for k, box in enumerate(boxes):
            im, m = image, mask
            if box is not None:
                t, l, s = box
                im, m = image[t:t + s, l:l + s], None if mask is None else mask[t:t + s, l:l + s]
            entry = name if box is None else f"{name}#crop{k}"
            if upscale_factor(im.shape, size) > UPSCALE_WARN:
                upscaled.append((entry, upscale_factor(im.shape, size)))
            im, m = _resize_pair(im, m, size)
            images.append(im)
            masks.append(np.full(size, ignore, np.uint8) if m is None else m.astype(np.uint8))
            has_mask.append(m is not None)
            names.append(entry)
            splits.append(SPLITS.index(split))
    _warn_upscaled(upscaled, cfg, size)
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


def dev_positions(n_val: int, dev_images: int | str | None, seed: int, masks: np.ndarray | None = None,
                  num_classes: int = 0) -> np.ndarray:
    """Positions within the validation split of the development set, drawn once from `seed`
    (sorted): `dev_images` of them; or "per_class" (DST-CBC's valtiny), for each class in turn
    the first image in the drawn order that shows it and is not chosen yet (about one image per
    class; `masks` and `num_classes` needed); or all of them (None, or a cap not below the
    split's size)."""
    order = np.random.default_rng([seed, 5050]).permutation(n_val)
    if dev_images == "per_class":
        chosen = []
        for c in range(num_classes):
            shows = (masks[:, c] == 1).reshape(n_val, -1).any(1) if masks.ndim == 4 else (masks == c).reshape(n_val, -1).any(1)
            first = next((i for i in order if shows[i] and i not in chosen), None)
            if first is not None:
                chosen.append(first)
        return np.sort(np.array(chosen, dtype=np.int64))
    if not dev_images or dev_images >= n_val:
        return np.arange(n_val)
    return np.sort(order[:dev_images])


def read_dev(store, dev_images: int | str | None, seed: int) -> SplitArrays:
    """The development set: the validation split, or part of it (dev_positions)."""
    val = read_split(store, "val")
    keep = dev_positions(len(val.index), dev_images, seed, val.masks, len(store.attrs["class_names"]))
    return SplitArrays(val.images[keep], val.masks[keep], val.index[keep])


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
