"""Data set entries of the config: the defaults that depend on the source (class names, palette,
task, size), and what can be checked without reading an image."""
from __future__ import annotations

from pathlib import Path

from ..data import synthetic, synthetic_cells
from ..data.images import intensity_rule
from ..data.split_lists import split_list_missing
from ..data.splits import empty_split_message, split_sizes
from ..data.suim import SUIM_CLASSES, SUIM_PALETTE
from ..errors import InputError

_DEFAULT_COLOURS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def resolve_dataset(name: str, ds: dict, where: str = "config") -> dict:
    """Fill the source-dependent defaults: class names, palette, task, size."""
    ds = dict(ds, name=name)
    if ds["source"] == "demo":
        ds.setdefault("class_names", list(synthetic.CLASS_NAMES))
        ds.setdefault("palette", [list(c) for c in synthetic.PALETTE])
        ds.setdefault("size", [32, 32])
    elif ds["source"] == "demo_cells":
        ds.setdefault("class_names", list(synthetic_cells.LABEL_NAMES))
        ds.setdefault("palette", [list(c) for c in synthetic_cells.PALETTE])
        ds.setdefault("size", [48, 48])
        ds.setdefault("task", "multilabel")
    elif ds["source"] == "suim":
        ds.setdefault("class_names", list(SUIM_CLASSES))
        ds.setdefault("palette", [list(c) for c in SUIM_PALETTE])
        ds.setdefault("size", [256, 256])
    ds.setdefault("task", "multiclass")
    n = len(ds["class_names"])
    ds.setdefault("palette", [list(_DEFAULT_COLOURS[i % len(_DEFAULT_COLOURS)]) for i in range(n)])
    if len(ds["palette"]) != n:
        raise InputError(f"{where}: datasets.{name}.palette: {len(ds['palette'])} colours for {n} classes")
    if ds["task"] == "binary" and n != 2:
        raise InputError(f"{where}: datasets.{name}.class_names: a binary task has exactly 2 classes, got {n}")
    if ds["source"] == "demo_cells" and ds["task"] != "multilabel":
        raise InputError(f"{where}: datasets.{name}.task: the demo_cells source makes multi-label data (task: multilabel)")
    return ds


def _multiple_of_16(v: int) -> int:
    """The next multiple of 16 from v up."""
    return -(-v // 16) * 16


def dataset_problems(ds: dict, where: str = "config") -> list[str]:
    """What is wrong with a resolved data set entry, as far as it shows without reading images:
    class names given twice, size, ignore_index, binary_255, crop sides, split lists, and splits the fractions leave empty."""
    key = f"{where}: datasets.{ds['name']}"
    n = len(ds["class_names"])
    errors = []
    twice = sorted({c for c in ds["class_names"] if ds["class_names"].count(c) > 1})
    if twice:
        what = "label" if ds["task"] == "multilabel" else "class"
        errors.append(f"{key}.class_names: {', '.join(map(repr, twice))} given more than once; give each {what} a "
                      f"name of its own (the metrics have a column per {what})")
    if ds.get("size"):
        h, w = ds["size"]
        if h % 16 or w % 16:
            errors.append(f"{key}.size: {h}x{w} is not a multiple of 16 on both sides (the U-Net halves the size "
                          f"four times); use e.g. [{_multiple_of_16(h)}, {_multiple_of_16(w)}]")
        if ds["source"] in ("demo", "demo_cells") and h != w:
            errors.append(f"{key}.size: the {ds['source']} source makes square images; got {h}x{w}")
    ignore = ds.get("ignore_index", 255)
    if ds["task"] == "multilabel" and ignore < 2:
        errors.append(f"{key}.ignore_index: {ignore} is a label value (multi-label masks hold 0 and 1 per label); "
                      "use 255")
    elif 0 <= ignore < n:
        errors.append(f"{key}.ignore_index: {ignore} is the index of class {ds['class_names'][ignore]!r} "
                      f"(classes 0..{n - 1}), so that class's pixels would be ignored; use a value of {n} or more "
                      "(255 is usual)")
    if ds.get("binary_255"):
        if ds["source"] != "folder":
            errors.append(f"{key}.binary_255: applies to the folder source only (source is {ds['source']!r})")
        elif n != 2:
            errors.append(f"{key}.binary_255: maps mask value 255 to class 1 of a 2-class data set; this one has {n} classes")
    try:
        intensity_rule(ds.get("intensity_range"), f"{key}.intensity_range")
    except InputError as e:
        errors.append(str(e))
    if ds.get("crops_per_image") and ds.get("crop_min_side", 256) > ds.get("crop_max_side", 512):
        errors.append(f"{key}.crop_min_side: {ds['crop_min_side']} is larger than crop_max_side {ds['crop_max_side']}")
    lists = ds.get("split_lists") or {}
    if lists and ds["source"] != "folder":
        errors.append(f"{key}.split_lists: applies to the folder source only (source is {ds['source']!r}"
                      + ("; SUIM's test split is its TEST folder)" if ds["source"] == "suim" else ")"))
    elif lists and Path(ds["path"]).is_dir():  # a missing folder is the data job's error (other targets may run)
        errors += [f"{where}: {m}" for split in lists if (m := split_list_missing(ds, split))]
    errors += [f"{where}: {m}" for m in _empty_splits_up_front(ds)]
    return errors


def _empty_splits_up_front(ds: dict) -> list[str]:
    """Splits that will get no image, as far as the config tells: exactly for the demo source (its
    image count is known), from the fractions and split lists for the others."""
    if not all(k in ds for k in ("labeled_fraction", "val_fraction", "test_fraction")):
        return []
    name = ds["name"]
    lists = ds.get("split_lists") or {}
    unlabeled_folder = Path(ds.get("path", "")) / (ds.get("layout") or {}).get("unlabeled", "unlabeled")
    has_unlabeled_folder = ds["source"] == "folder" and unlabeled_folder.is_dir()
    if ds["source"] in ("demo", "demo_cells"):
        message = empty_split_message(split_sizes(ds["n_images"], ds), ds)
        return [message] if message else []
    if ds["source"] == "folder" and lists:
        # with split lists every labeled image's split is the list's: a split without a list stays empty
        missing = [s for s in ("labeled", "val", "test") if s not in lists]
        if missing:
            return [f"datasets.{name}.split_lists: no {missing[0]!r} list, so split {missing[0]!r} would be empty "
                    f"(with split lists, labeled images in no list are not used); add datasets.{name}.split_lists."
                    f"{missing[0]}"]
        if "unlabeled" not in lists and not has_unlabeled_folder and Path(ds["path"]).is_dir():
            return [f"datasets.{name}.split_lists: no 'unlabeled' list and no folder {unlabeled_folder}, "
                    f"so split 'unlabeled' would be empty; add datasets.{name}.split_lists.unlabeled or that folder"]
        return []
    fixed = {"test"} if ds["source"] == "suim" else set()
    counts = split_sizes(10**6, ds, fixed)  # any number of images: what the fractions alone leave empty
    if ds["source"] == "suim":
        counts["test"] = 1  # SUIM's TEST folder
    if has_unlabeled_folder:
        counts["unlabeled"] += 1
    keys = ("labeled_fraction", "val_fraction") + (("test_fraction",) if ds["source"] != "suim" else ())
    detail = "whatever the number of images: " + ", ".join(f"{k} {ds[k]}" for k in keys)
    message = empty_split_message(counts, ds, detail=detail)
    return [message] if message else []
