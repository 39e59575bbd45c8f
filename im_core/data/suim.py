"""SUIM as its authors distribute it (Islam et al., "Semantic Segmentation of Underwater Imagery:
Dataset and Benchmark", IROS 2020): train_val/ and TEST/, each with images/ and RGB masks/."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError, few_names
from .folder import by_key, warn_skipped
from .images import image_header, intensity_rule, nearest_palette_index, read_image
from .items import Item

log = logging.getLogger("im_core.data")

SUIM_CLASSES = ["background", "divers", "plants", "wrecks", "robots", "reefs", "fish", "sea_floor"]
SUIM_PALETTE = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255), (255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]
SUIM_URL = "https://irvlab.cs.umn.edu/resources/suim-dataset"


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
    intensity = intensity_rule(cfg.get("intensity_range"), f"datasets.{cfg['name']}.intensity_range")
    for part, split in (("train_val", None), ("TEST", "test")):
        masks_by_stem = by_key(root / part / "masks", "{stem}.*", "masks", False, skipped)
        images = by_key(root / part / "images", "{stem}.*", "images", False, skipped)
        orphans = [p for stem, p in masks_by_stem.items() if stem not in images]
        if orphans:  # the distributed archive is as it is: the extra masks are not used, and said so
            log.warning("datasets.%s: %d masks in %s have no image and are not used: %s",
                        cfg["name"], len(orphans), root / part / "masks", few_names([p.name for p in orphans]))
        for stem, img_path in images.items():
            mask_path = masks_by_stem.get(stem)
            if mask_path is None:
                raise InputError(f"{img_path}: no mask with this name in {root / part / 'masks'}")
            h, w, _ = image_header(img_path)
            items.append(Item(f"{part}/{img_path.name}", h, w, False,
                              functools.partial(read_image, img_path, intensity=intensity),
                              functools.partial(_read_suim_mask, mask_path, (h, w)), split, str(mask_path)))
    warn_skipped(skipped, f"datasets.{cfg['name']}.path")
    return items


def _read_suim_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = nearest_palette_index(read_image(path), SUIM_PALETTE)
    if mask.shape != shape:  # a few SUIM masks differ by some pixels: resize, as the authors do
        mask = np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.NEAREST))
    return mask.astype(np.int64)
