"""Split lists: text files naming, one per line, the images of a split (folder source)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .items import Item


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


def read_split_list(path: Path) -> list[str]:
    """A split list's lines: UTF-8, with a byte order mark (as some Windows editors write one) and
    CRLF or CR line ends taken off."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read this split list ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: split list is not UTF-8 text ({e.reason} at byte {e.start}); save it as "
                         "UTF-8, one image name per line") from e
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "").split("\n")


def fixed_splits(cfg: dict, items: list[Item]) -> None:
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
        for line_no, line in enumerate(read_split_list(list_path), 1):
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
