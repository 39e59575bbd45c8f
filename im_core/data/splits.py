"""The four splits of a data store and how images are drawn into them; the development set."""
from __future__ import annotations

from collections.abc import Collection

import numpy as np

from ..errors import InputError

SPLITS = ("labeled", "unlabeled", "val", "test")
TRAINING_SPLITS = ("labeled", "unlabeled")  # the splits that get random crops (crops_per_image)


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
