"""The `prepare_data` job: a data set's zarr store from its source (data/store.py)."""
from __future__ import annotations

import os

from ..data.store import prepare


def run(settings: dict, out: str | os.PathLike, threads: int = 1) -> dict:
    """`settings`: the data set's resolved config entry (config/datasets.py)."""
    return prepare(settings, out, threads=threads)
