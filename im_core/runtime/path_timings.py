"""The training step timed on each numerical path this machine offers: a diagnostic
(`im-core time-paths`, bench/numeric_paths.py) that says whether a path beats the rule's clearly
enough to pin it (path_rule.recommend). No job's path follows a timing: timings of one machine
vary with its load (path_rule.py has the numbers), and different paths train different models.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from .cpu import cpu_name
from .numeric_path import NumericPath

log = logging.getLogger("im_core.path_timings")

ROUNDS = 5
SECONDS_PER_ROUND = 0.3


def machine() -> dict:
    """What a timing holds for: the CPU, the kernels torch dispatches to on it, torch's version."""
    return {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


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
