"""An image of a data source, listed but not yet read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Item:
    """One image of a source, listed but not read: its name (as stored and shown), size and
    whether it is grayscale (from the file header), how to read it (`read_image(channels)` ->
    H x W x channels uint8) and its mask (`read_mask()` -> H x W class indices, or labels x H x W
    0/1 for multi-label; None = unlabeled), and the split it is fixed to (None = drawn)."""
    name: str
    height: int
    width: int
    grayscale: bool
    read_image: Callable[[int], np.ndarray]
    read_mask: Callable[[], np.ndarray] | None
    split: str | None = None
    mask_label: str = ""  # the mask's file (or files), for messages
