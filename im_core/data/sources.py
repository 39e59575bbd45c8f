"""Data sources by name: each lists a data set's images as `Item`s (name, size from the file
header, fixed split if any, and how to read the image and its mask) without decoding them.
`store.prepare` streams the items into the data store. Adding a source is a loader here (or in a
module of its own) and its entry in `SOURCES`, plus its name in the schema's `source` enum.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import synthetic, synthetic_cells
from .folder import load_folder
from .images import to_channels
from .items import Item
from .suim import load_suim


def _array_items(images: np.ndarray, masks: np.ndarray, prefix: str) -> list[Item]:
    """Items over arrays already in memory (the synthetic sources)."""
    gray = images.shape[-1] == 1

    def item(i: int) -> Item:
        return Item(f"{prefix}_{i:05d}", images.shape[1], images.shape[2], gray,
                    lambda channels: to_channels(images[i], channels), lambda: masks[i].astype(np.int64))
    return [item(i) for i in range(len(images))]


def load_demo(cfg: dict) -> list[Item]:
    h, w = cfg["size"]
    if h != w:
        raise InputError(f"datasets.{cfg['name']}.size: the demo source makes square images; got {h}x{w}")
    return _array_items(*synthetic.make_demo(cfg["n_images"], h, cfg["seed"]), "demo")


def load_demo_cells(cfg: dict) -> list[Item]:
    h, w = cfg["size"]
    if h != w:
        raise InputError(f"datasets.{cfg['name']}.size: the demo_cells source makes square images; got {h}x{w}")
    return _array_items(*synthetic_cells.make_cells(cfg["n_images"], h, cfg["seed"]), "cells")


SOURCES = {"demo": load_demo, "demo_cells": load_demo_cells, "folder": load_folder, "suim": load_suim}
