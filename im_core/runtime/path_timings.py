"""The training step timed on each numerical path this machine offers, so that `auto` follows a
measurement of this machine rather than a rule measured on others.

`numeric_path.choose_path` settles `precision: auto` and `channels_last: auto` by rules measured on a
few CPUs, and CPUs disagree: at 32 px in fp32, channels-last ran 0.9x on an AMD EPYC with AVX2
and 1.2x on an Intel Xeon capped at AVX2. The `time_numeric_paths` job times the project's
training step (batches from the data store's labeled split, augmentation, loss, optimizer step)
on every candidate path: fp32 and, where the CPU computes it natively, bf16, each contiguous and
channels-last, with the data set's images and the experiment's model width, batch size and
threads. The candidates alternate round by round and each keeps its median. The training jobs
read the file (`load_rates`) and take the fastest path their settings allow, but only if it beats
the rule's path by `numeric_path.MEASURED_MARGIN`: a near tie keeps the rule's path, so remeasuring
does not flip a choice, and with it the numbers. On CUDA nothing is timed (the rule's path:
autocast, channels-last, cuDNN autotuning).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from ..errors import InputError
from ..io import read_json
from .cpu import cpu_name
from .numeric_path import NumericPath

log = logging.getLogger("im_core.path_timings")

ROUNDS = 3
SECONDS_PER_ROUND = 0.3


def machine() -> dict:
    """What a timing holds for: the CPU, the kernels torch dispatches to on it, torch's version."""
    return {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def rate_label(precision: str, channels_last: bool) -> str:
    """A timed path's name in summaries, checkpoints and tables: fp32, fp32+cl, bf16, bf16+cl."""
    return f"{precision}{'+cl' if channels_last else ''}"


def candidate_paths(native_bf16: bool) -> list[NumericPath]:
    """The CPU paths worth timing: fp32, and bf16 where it is native (emulated, it ran 7-15x
    slower), each in contiguous and channels-last memory."""
    precisions = ("fp32", "bf16") if native_bf16 else ("fp32",)
    return [NumericPath("cpu", precision, channels_last) for precision in precisions for channels_last in (False, True)]


def images_per_second(step: Callable[[], object], images_per_call: int, seconds: float) -> float:
    """Calls of `step` for about `seconds` (at least two), as images per second (on a GPU, with
    the queued work finished before the clock is read)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        step()
        calls += 1
    sync()
    return calls * images_per_call / (time.perf_counter() - start)


def time_paths(step_on: Callable[[NumericPath], Callable[[], object]], paths: list[NumericPath], batch_size: int,
               rounds: int = ROUNDS, seconds: float = SECONDS_PER_ROUND) -> dict[NumericPath, list[float]]:
    """Images/s of the training step `step_on(path)` builds for each path, once per round, the
    paths alternating within a round so that each sees the same machine state."""
    steps = {path: step_on(path) for path in paths}
    for step in steps.values():  # warm-up: oneDNN's kernels are built on first use
        step()
        step()
    rates: dict[NumericPath, list[float]] = {path: [] for path in paths}
    for _ in range(rounds):
        for path, step in steps.items():
            rates[path].append(images_per_second(step, batch_size, seconds))
    return rates


def load_rates(path: str) -> dict[tuple[str, bool], float] | None:
    """(precision, channels_last) -> median images/s from a `run` file, or None (with a warning)
    where it was timed on another machine or torch: a choice holds only where it was measured."""
    record = read_json(path)
    try:
        timed_on, rows = record["machine"], record["rates"]
        rates = {(row["precision"], bool(row["channels_last"])): float(row["median"]) for row in rows}
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: not a file of numerical-path timings ({type(e).__name__}: {e})") from e
    here = machine()
    if timed_on != here:
        log.warning("%s was timed on %s, this job runs on %s: taking the rule's path", path, timed_on, here)
        return None
    return rates or None
