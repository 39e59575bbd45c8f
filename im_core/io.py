"""Zarr stores, atomic output directories, JSON files and the error type for bad user input."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr


class InputError(Exception):
    """Bad user input: the message names the file or key and says what to do."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; move it to `path` only if the block succeeds.

    A job that fails half-way leaves no store at `path`, so nothing can mistake a partial
    store for a complete one.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        _remove(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One sample per chunk (1-D arrays: one chunk of up to 65536 values)."""
    return (1,) + tuple(shape[1:]) if len(shape) > 1 else (max(1, min(shape[0], 65536)),)


def write_array(group: zarr.Group, name: str, data: np.ndarray, dims: tuple[str, ...]) -> zarr.Array:
    """Write `data` chunked one sample per chunk, with named dimensions for xarray and viewers."""
    return group.create_array(name, data=data, chunks=_chunks(data.shape), dimension_names=dims)


def create_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype, dims: tuple[str, ...]) -> zarr.Array:
    """An empty array laid out as `write_array` lays one out, to be filled chunk by chunk."""
    return group.create_array(name, shape=tuple(shape), dtype=dtype, chunks=_chunks(tuple(shape)),
                              dimension_names=dims, fill_value=0)


def open_store(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    path = Path(path)
    if mode == "r" and not path.exists():
        raise InputError(f"{path}: store not found; build it first (snakemake builds it as a dependency)")
    return zarr.open_group(str(path), mode=mode)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
