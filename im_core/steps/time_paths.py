"""`im-core time-paths`: the project's training step timed on every numerical path this machine
offers (runtime/path_timings.py), beside the path the rule gives (runtime/path_rule.py), and the
path worth pinning with `compute.numeric_path` (path_rule.recommend). A diagnostic: no job
follows it."""
from __future__ import annotations

import dataclasses
import logging
import statistics
from typing import Callable

import torch

from ..data.augment import NO_AUGMENT
from ..data.batches import Batches, TrainingTensors
from ..data.training_set import training_set
from ..errors import InputError
from ..io import open_store, write_json
from ..models import build_model
from ..models.losses import output_channels
from ..runtime.cpu import cpu_flags, cpu_has_native_bf16
from ..runtime.devices import pick_device
from ..runtime.numeric_path import NumericPath
from ..runtime.path_rule import path_label, plan_cpu_path, recommend
from ..runtime.path_timings import ROUNDS, SECONDS_PER_ROUND, candidate_paths, machine, time_paths
from ..runtime.process import start_job
from ..trainers.optim import make_optimizer
from ..trainers.step import Objective, training_step

log = logging.getLogger("im_core.path_timings")

# flips and scale-crops, as the experiments' default augmentation has them
_AUGMENT = dataclasses.replace(NO_AUGMENT, hflip=True, scale=(0.5, 1.0))


def training_steps(store, arrays, path: NumericPath, alpha: float, batch_size: int,
                   seed: int = 0, model_args: dict | None = None) -> Callable[[], object]:
    """The project's training step on `path`, drawing batches from `arrays` (`training_set`
    of the store: its labeled split), for the 1x1 U-Net of width `alpha` or the model zoo's
    architecture `model_args` (name, encoder; random weights)."""
    task, num_classes = store.attrs["task"], len(store.attrs["class_names"])
    torch.manual_seed(seed)
    args = dict(model_args or {"alpha": alpha}, weights="none")
    model = path.model(build_model(arrays.images.shape[-1], output_channels(task, num_classes, False), **args))
    opt, scaler = make_optimizer(model, "adamw", lr=1e-3, weight_decay=1e-4), path.grad_scaler()
    data = TrainingTensors.from_arrays(arrays.images, arrays.labels, arrays.blocked, "cpu")
    stream = iter(Batches(data, batch_size, _AUGMENT, torch.Generator().manual_seed(seed)))
    objective = Objective(task, store.attrs["ignore_index"])
    model.train()
    return lambda: training_step(model, opt, scaler, path, *next(stream), objective)


def _layout(value: str | bool) -> str | bool:
    text = str(value).lower()
    if text not in ("auto", "true", "false"):
        raise InputError(f"--channels-last: auto, true or false, got {value!r}")
    return text if text == "auto" else text == "true"


def run(data: str, out: str | None, alpha: float, batch_size: int, threads: int = 1, rounds: int = ROUNDS,
        precision: str = "auto", channels_last: str | bool = "auto", model: str | None = None,
        encoder: str | None = None) -> dict:
    start_job(threads)
    store = open_store(data)
    size = list(store.attrs["size"])
    rule = plan_cpu_path(precision, _layout(channels_last), cpu_flags(), size)
    model_args = {"name": model, "encoder": encoder} if model and model != "unet1x1" else None
    record = {"machine": machine(), "threads": threads, "alpha": alpha, "model": model_args or "unet1x1",
              "batch_size": batch_size,
              "image_size": size, "rule": path_label(rule), "rates": [], "recommended": path_label(rule)}
    if pick_device().type == "cuda":
        log.info("CUDA: nothing to time, the jobs take the GPU's path")
    else:
        arrays = training_set(store, None)
        rates = time_paths(lambda path: training_steps(store, arrays, path, alpha, batch_size, model_args=model_args),
                           candidate_paths(cpu_has_native_bf16()), batch_size, rounds, SECONDS_PER_ROUND)
        by_key = {(path.precision, path.channels_last): values for path, values in rates.items()}
        record["rates"] = [{"path": path_label(key), "precision": key[0], "channels_last": key[1],
                            "images_per_second": [round(r, 2) for r in values],
                            "median": round(statistics.median(values), 2)} for key, values in by_key.items()]
        record["recommended"] = path_label(recommend(rule, by_key))
        for row in record["rates"]:
            log.info("%-8s %7.1f images/s (rounds: %s)%s", row["path"], row["median"], row["images_per_second"],
                     "  <- the rule's path" if row["path"] == record["rule"] else "")
        log.info("the rule's path: %s; worth pinning: %s", record["rule"],
                 "nothing (no path beats the rule's clearly in every round)" if record["recommended"] == record["rule"]
                 else f"{record['recommended']} (compute.numeric_path)")
    if out:
        write_json(out, record)
    return {"rule": record["rule"], "recommended": record["recommended"],
            "rates": {r["path"]: r["median"] for r in record["rates"]}}
