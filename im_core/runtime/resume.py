"""Resumable training state: what a killed training job needs to go on where it stopped.

At every validation the training loop writes the whole state (weights, optimizer, gradient
scaler, every random generator, the position in the epoch, the best weights so far and the
history) next to its output, as `.<output>.resume`. A rerun of the same job continues from it
and ends with the same weights as an uninterrupted run. The state carries a fingerprint of
everything the job's result depends on (settings, input stores, the im_core code); a state
with another fingerprint is never resumed, and it is removed once the job's output exists.

A finished job also leaves `.<output>.done`, a hard link to its output (no extra space): when
Snakemake removes the output of a job that finished after Snakemake was interrupted (it treats
it as incomplete), the rerun of the same job with the same fingerprint restores it instead of
training again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..code_versions import code_version
from ..errors import InputError
from ..io import atomic_output, check_claim, remove_partials
from .safe_load import read_torch_file

log = logging.getLogger("im_core.resume")


def resume_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.resume")


def input_identity(path: str | os.PathLike) -> list:
    """What changes when an input is rebuilt: modification time and size of a file, or of a
    zarr store's root metadata (rewritten whenever the store is)."""
    p = Path(path)
    target = p / "zarr.json" if p.is_dir() else p
    st = target.stat()
    return [str(p), st.st_mtime_ns, st.st_size]


def fingerprint(settings: dict, inputs: list[str | os.PathLike], **job: Any) -> str:
    """A digest of the job's settings, its inputs' identities, its other arguments and the
    training step's code version (code_versions.py)."""
    text = json.dumps({"settings": settings, "inputs": [input_identity(p) for p in inputs], "job": job,
                       "code": code_version("train")}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def random_states() -> dict:
    """The global generators' states as tensors and plain values (numpy's key as a tensor), so
    that the resume state loads with weights_only=True."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    random.setstate(states["python"])
    kind, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, state: dict) -> None:
    """Write the state so that a kill at any moment leaves the previous state or the new one."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load(path: Path, expected_fingerprint: str) -> dict | None:
    """The saved state if it belongs to this job (same fingerprint); otherwise None, and a
    state of other settings or inputs is removed so that it is never resumed later."""
    remove_partials(path)  # of a save a kill interrupted
    if not path.exists():
        return None
    try:
        state = read_torch_file(path, "cpu", "resume state")
    except InputError as e:  # a truncated file from a kill during an older torch.save, or not ours
        log.warning("%s; removed, starting from step 0", e)
        path.unlink(missing_ok=True)
        return None
    if state.get("fingerprint") != expected_fingerprint:
        log.info("%s: resume state of other settings, inputs or code; removed, starting from step 0", path)
        path.unlink(missing_ok=True)
        return None
    return state


def done_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.done")


def record_done(out: str | os.PathLike) -> None:
    """Link the finished output as `.<output>.done` (where the file system has no hard links,
    nothing is recorded and an interrupted run trains again)."""
    try:
        _hard_link(out, done_path(out))
    except OSError as e:
        log.info("%s: not recorded as done (%s)", out, e)


def restore_done(out: str | os.PathLike, expected_fingerprint: str) -> dict | None:
    """The checkpoint of an earlier finished run of this job (same fingerprint), put back at
    `out`; None where there is none. A record of other settings, inputs or code is removed."""
    done = done_path(out)
    if not done.exists():
        return None
    try:
        ckpt = read_torch_file(done, "cpu", "record of a finished job")
    except InputError as e:  # an unreadable record is only a missed shortcut
        log.warning("%s; removed", e)
        ckpt = {}
    if ckpt.get("fingerprint") != expected_fingerprint:
        done.unlink(missing_ok=True)
        return None
    check_claim(out)
    _hard_link(done, out)
    os.utime(out)  # written by this job, as far as Snakemake's modification times go
    return ckpt


def _hard_link(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make `target` a hard link to `source`, replacing it in one step."""
    target = Path(target)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
