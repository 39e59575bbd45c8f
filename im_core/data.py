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

import functools
import logging
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .io import InputError, atomic_output, open_store, write_array
from . import synthetic

log = logging.getLogger("im_core.data")

SPLITS = ("labeled", "unlabeled", "val", "test")
TRAINING_SPLITS = ("labeled", "unlabeled")  # the splits that get random crops (crops_per_image)
# Pillow formats whose compression changes pixel values: a class-index mask must not be stored in
# them (WebP is refused only when the file is lossy, see `_is_lossy_webp`)
LOSSY_MASK_FORMATS = ("JPEG", "MPO", "JPEG2000", "AVIF")
NOT_IMAGE_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG")  # data and video containers Pillow only identifies
UPSCALE_WARN = 4.0  # an image (or crop) enlarged more than this on a side to reach `size` is warned about
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


def _few(paths: list, n: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _warn_skipped(skipped: list[Path], key: str) -> None:
    if skipped:
        log.warning("%s: skipped %d entries that are not image files Pillow reads (by suffix): %s",
                    key, len(skipped), _few(skipped))


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
                         f"({len(orphans)} masks without an image: {_few([p.name for p in orphans])})")


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
                    "binary_255: true, which reads every 255 as class 1)", cfg["name"], len(suspicious), _few(suspicious))


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
                        cfg["name"], len(orphans), root / part / "masks", _few([p.name for p in orphans]))
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
                    UPSCALE_WARN, size[0], size[1], _few([f"{n} ({f:.1f}x)" for n, f in upscaled]))


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
