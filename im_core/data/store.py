"""The data store of a data set, built from its source (sources.py): `prepare` streams the images in.

The data store holds every image of the data set at one size:
  images    N x H x W x C uint8 (C = 3 for RGB, 1 for grayscale data)
  masks     N x H x W uint8 class indices (N x C x H x W 0/1 for multi-label); `ignore_index`
            where unknown, and everywhere for images that came without a mask
  split     N uint8, codes in attrs["split_codes"] (labeled, unlabeled, val, test)
  has_mask  N bool
attrs: class_names, palette, ignore_index, task, names (file names), size, channels.
The masks of the unlabeled split are kept for diagnostics (scoring pseudo-labels) and for the
FDT baseline; `training_arrays` is the only reader used for training and returns them only
when asked for all labels (read.py). Validation and test images are stored whole; random crops
(`crops_per_image`) are for the training splits only.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError, few_names
from ..io import atomic_output, create_array, open_store, write_array
from .images import reading_images, resize_pair
from .items import Item
from .masks import check_binary_255
from .sources import SOURCES
from .splits import SPLITS, TRAINING_SPLITS, assign_splits

log = logging.getLogger("im_core.data")

UPSCALE_WARN = 4.0  # an image (or crop) enlarged more than this on a side to reach `size` is warned about


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


def upscale_factor(shape: tuple[int, ...], size: tuple[int, int]) -> float:
    """How many times an image (or crop) of `shape` is enlarged on its more enlarged side to reach `size`."""
    return max(size[0] / shape[0], size[1] / shape[1])


def _warn_upscaled(upscaled: list[tuple[str, float]], cfg: dict, size: tuple[int, int]) -> None:
    if upscaled:
        log.warning("datasets.%s: %d images (or crops) are enlarged more than %gx to reach size %dx%d, so they "
                    "hold little detail: %s; check the data or choose a smaller size", cfg["name"], len(upscaled),
                    UPSCALE_WARN, size[0], size[1], few_names([f"{n} ({f:.1f}x)" for n, f in upscaled]))


def store_size(cfg: dict, items: list[Item]) -> tuple[int, int]:
    """The data set's `size`, or the images' one size where all share it (from the file headers)."""
    if cfg.get("size"):
        size = tuple(cfg["size"])
    else:
        shapes = {(it.height, it.width) for it in items}
        if len(shapes) > 1:
            raise InputError(f"datasets.{cfg['name']}.size: images have {len(shapes)} different sizes; set size: [H, W]")
        size = shapes.pop()
    if size[0] % 16 or size[1] % 16:
        raise InputError(f"datasets.{cfg['name']}.size: {size[0]}x{size[1]} is not a multiple of 16 on both sides "
                         "(the U-Net halves the size four times)")
    return size


def image_channels(cfg: dict, items: list[Item]) -> int:
    """Input channels of the store: `channels` (1 or 3), or with auto 1 where every image is
    grayscale (from the file headers) and 3 otherwise."""
    setting = cfg.get("channels", "auto")
    if setting != "auto":
        return int(setting)
    return 1 if all(it.grayscale for it in items) else 3


@dataclass
class Entry:
    """One image of the store: its item, the crop box (None = whole image) and the split."""
    item: int
    box: tuple[int, int, int] | None
    split: str
    name: str


def store_entries(items: list[Item], split_names, cfg: dict) -> list[Entry]:
    """The store's images in order: every used item whole, or its `crops_per_image` random crops
    for the training splits (drawn in item order from the data set's seed, from the headers)."""
    rng = np.random.default_rng(cfg["seed"] + 1)
    crops = cfg.get("crops_per_image", 0)
    entries = []
    for i, (item, split) in enumerate(zip(items, split_names)):
        if split == "unused":
            continue
        if crops and split in TRAINING_SPLITS:
            boxes = _crop_boxes(rng, item.height, item.width, crops, cfg.get("crop_min_side", 256), cfg.get("crop_max_side"))
            entries += [Entry(i, box, split, f"{item.name}#crop{k}") for k, box in enumerate(boxes)]
        else:
            entries.append(Entry(i, None, split, item.name))
    return entries


def _load_item(item: Item, boxes: list, size: tuple[int, int], channels: int, label_dims: tuple[int, ...],
               ignore: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], frozenset[int] | None]:
    """Read one item and cut its entries (whole or crops) at the store's size; with the set of
    its mask's values (None for multi-label and unlabeled images)."""
    image = item.read_image(channels)
    mask = item.read_mask() if item.read_mask is not None else None
    values = None
    if mask is not None:
        if mask.shape[-2:] != image.shape[:2]:
            raise InputError(f"{item.mask_label}: mask is {mask.shape[-1]}x{mask.shape[-2]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]} ({item.name}); they must be the same size")
        values = frozenset(np.unique(mask).tolist()) if mask.ndim == 2 else None
    out = []
    for box in boxes:
        im, m = image, mask
        if box is not None:
            t, l, s = box
            im, m = image[t:t + s, l:l + s], None if mask is None else mask[..., t:t + s, l:l + s]
        im, m = resize_pair(im, m, size)
        out.append((im, np.full((*label_dims, *size), ignore, np.uint8) if m is None else m.astype(np.uint8)))
    return out, values


def prepare(cfg: dict, out: str | os.PathLike, threads: int = 1, window: int = 64) -> dict:
    """Build the data store for one data set entry of the config, streaming: the images are
    listed from their headers, then read, cut and written `window` items at a time (decoded by
    `threads` threads), so memory stays flat in the number of images. Returns a summary.

    With crops_per_image, only the training splits (labeled, unlabeled) are cropped; validation
    and test images are stored whole, resized to `size`, so they are evaluated whole. Images are
    read by the rules of images.py: bit depth (`intensity_range`), EXIF orientation, and the
    pixel limit `max_image_pixels` (an image over it is an error naming the file)."""
    with reading_images(cfg.get("max_image_pixels"), f"datasets.{cfg['name']}.max_image_pixels"):
        return _prepare(cfg, out, threads, window)


def _prepare(cfg: dict, out: str | os.PathLike, threads: int, window: int) -> dict:
    items = SOURCES[cfg["source"]](cfg)
    split_names = assign_splits([it.split for it in items], cfg)
    size = store_size(cfg, items)
    channels = image_channels(cfg, items)
    entries = store_entries(items, split_names, cfg)
    upscaled = [(e.name, f) for e in entries
                if (f := upscale_factor((e.box[2],) * 2 if e.box else (items[e.item].height, items[e.item].width), size))
                > UPSCALE_WARN]
    _warn_upscaled(upscaled, cfg, size)
    ignore = cfg["ignore_index"]
    multilabel = cfg["task"] == "multilabel"
    label_dims = (len(cfg["class_names"]),) if multilabel else ()
    by_item: dict[int, list[int]] = {}
    for pos, e in enumerate(entries):
        by_item.setdefault(e.item, []).append(pos)
    mask_values: list[tuple[str, frozenset[int]]] = []
    with atomic_output(out) as tmp, ThreadPoolExecutor(max(1, threads)) as pool:
        group = open_store(tmp, mode="w")
        n = len(entries)
        images = create_array(group, "images", (n, *size, channels), np.uint8, ("image", "y", "x", "channel"))
        masks = create_array(group, "masks", (n, *label_dims, *size), np.uint8,
                             ("image", "label", "y", "x") if multilabel else ("image", "y", "x"))
        order = list(by_item)
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            loaded = pool.map(lambda i: _load_item(items[i], [entries[p].box for p in by_item[i]], size, channels,
                                                   label_dims, ignore), chunk)
            pairs = []
            for i, (item_pairs, values) in zip(chunk, loaded):
                pairs += item_pairs
                if values is not None:
                    mask_values.append((items[i].mask_label, values))
            first = by_item[chunk[0]][0]  # the entries of consecutive items are consecutive in the store
            images[first:first + len(pairs)] = np.stack([p[0] for p in pairs])
            masks[first:first + len(pairs)] = np.stack([p[1] for p in pairs])
        check_binary_255(mask_values, cfg)
        write_array(group, "split", np.array([SPLITS.index(e.split) for e in entries], np.uint8), ("image",))
        write_array(group, "has_mask", np.array([items[e.item].read_mask is not None for e in entries], bool), ("image",))
        group.attrs.update({
            "kind": "im_core.data", "dataset": cfg["name"], "source": cfg["source"], "task": cfg["task"],
            "class_names": list(cfg["class_names"]), "palette": [list(c) for c in cfg["palette"]],
            "ignore_index": ignore, "split_codes": {name: i for i, name in enumerate(SPLITS)},
            "names": [e.name for e in entries], "size": list(size), "channels": channels,
        })
    counts = {s: sum(e.split == s for e in entries) for s in SPLITS}
    return {"images": len(entries), "size": list(size), "channels": channels, "splits": counts}
