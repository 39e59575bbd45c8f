"""The `time_numeric_paths` job: the project's training step timed on every numerical path this
machine offers (runtime/path_timings.py says why and how), written as JSON for the training
jobs of one data set, model width and batch size."""
from __future__ import annotations

import dataclasses
import logging
import statistics
from typing import Callable

import torch

from ..data.augment import NO_AUGMENT
from ..data.batches import Batches, TrainingTensors
from ..data.training_set import training_set
from ..io import open_store, write_json
from ..models import build_model
from ..models.losses import output_channels
from ..runtime.cpu import cpu_has_native_bf16
from ..runtime.devices import pick_device
from ..runtime.numeric_path import NumericPath
from ..runtime.path_timings import ROUNDS, SECONDS_PER_ROUND, candidate_paths, machine, rate_label, time_paths
from ..runtime.process import start_job
from ..trainers.optim import make_optimizer
from ..trainers.step import Objective, training_step

log = logging.getLogger("im_core.path_timings")

# flips and scale-crops, as the experiments' default augmentation has them
_AUGMENT = dataclasses.replace(NO_AUGMENT, hflip=True, scale=(0.5, 1.0))


def training_steps(store, arrays, path: NumericPath, alpha: float, batch_size: int,
                   seed: int = 0) -> Callable[[], object]:
    """The project's training step on `path`, drawing batches from `arrays` (`training_set`
    of the store: its labeled split)."""
    task, num_classes = store.attrs["task"], len(store.attrs["class_names"])
    torch.manual_seed(seed)
    model = path.model(build_model(arrays.images.shape[-1], output_channels(task, num_classes, False), alpha))
    opt, scaler = make_optimizer(model, "adamw", lr=1e-3, weight_decay=1e-4), path.grad_scaler()
    data = TrainingTensors.from_arrays(arrays.images, arrays.labels, arrays.blocked, "cpu")
    stream = iter(Batches(data, batch_size, _AUGMENT, torch.Generator().manual_seed(seed)))
    objective = Objective(task, store.attrs["ignore_index"])
    model.train()
    return lambda: training_step(model, opt, scaler, path, *next(stream), objective)


def run(data: str, out: str, alpha: float, batch_size: int, threads: int = 1) -> dict:
    start_job(threads)
    store = open_store(data)
    record = {"machine": machine(), "threads": threads, "alpha": alpha, "batch_size": batch_size,
              "image_size": list(store.attrs["size"]), "rates": []}
    if pick_device().type == "cuda":
        log.info("CUDA: nothing to time, the training jobs take the rule's path")
    else:
        arrays = training_set(store, None)
        rates = time_paths(lambda path: training_steps(store, arrays, path, alpha, batch_size),
                           candidate_paths(cpu_has_native_bf16()), batch_size, ROUNDS, SECONDS_PER_ROUND)
        record["rates"] = [{"precision": path.precision, "channels_last": path.channels_last,
                            "images_per_second": [round(r, 2) for r in values],
                            "median": round(statistics.median(values), 2)} for path, values in rates.items()]
        for row in record["rates"]:
            log.info("%s%s: %.1f images/s (rounds: %s)", row["precision"], ", channels-last" if row["channels_last"] else "",
                     row["median"], row["images_per_second"])
    write_json(out, record)
    return {"rates": {rate_label(r["precision"], r["channels_last"]): r["median"] for r in record["rates"]}}
