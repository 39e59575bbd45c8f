"""The model's forward and backward replayed as CUDA graphs during training.

At the project's sizes a GPU waits on Python more than it computes: one step of the U-Net
launches a few hundred small kernels (convolutions, batch norms, activations, their
gradients), each taking Python and the dispatcher longer to issue than the GPU takes to run.
`torch.cuda.make_graphed_callables` records them once and replays forward and backward as one
graph launch each. The batch pipeline, the loss, the optimizer step and validation stay eager.

A graph replays fixed shapes and overwrites its outputs at its next replay, so it is used only
where a training step calls the model once per batch (`runtime.graph_eligible`), and only for
batches of the recorded shape (another shape runs the eager forward). Recording runs a few
warm-up forwards, whose batch-norm statistics and random numbers are put back afterwards, so a
graphed run trains on the same batches with the same initial state as an eager one. Where
recording fails the job goes on eagerly, with a warning.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)

WARMUP_ITERATIONS = 3


def graph_training_forward(model: torch.nn.Module, example: torch.Tensor, dtype: torch.dtype | None) -> bool:
    """Make `model`'s training-mode forward (and its backward) replay a CUDA graph for inputs
    shaped like `example`, recorded under autocast to `dtype` (None: fp32). Evaluation-mode
    calls and other shapes run eagerly. False, with the model left eager, where recording failed."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng = torch.cuda.get_rng_state(example.device)
    eager = model.forward
    try:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
            torch.cuda.make_graphed_callables(model, (example,), num_warmup_iters=WARMUP_ITERATIONS)
    except (RuntimeError, AssertionError, TypeError, ValueError) as e:  # what torch raises for what it cannot record
        model.forward = eager
        log.warning("CUDA graph recording failed, training eagerly: %s: %s", type(e).__name__, e)
        return False
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        torch.cuda.set_rng_state(rng, example.device)
    model.forward = _by_shape(model.forward, eager, example)
    return True


def _by_shape(graphed: Callable, eager: Callable, example: torch.Tensor) -> Callable:
    shape, dtype = example.shape, example.dtype

    def forward(x: torch.Tensor) -> torch.Tensor:
        return graphed(x) if x.shape == shape and x.dtype == dtype else eager(x)
    return forward


class GraphOnFirstBatch:
    """The model's forward for `train.training_step`: records the graph at the first training
    batch (its shape is the one every later batch has), then calls the model."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None):
        self.model, self.dtype = model, dtype
        self.recorded: bool | None = None   # None until tried

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.recorded is None:
            self.recorded = graph_training_forward(self.model, x, self.dtype)
        return self.model(x)


def training_forward(model: torch.nn.Module, path) -> Callable:
    """What a training step calls as the model on `path` (a `runtime.NumericPath`): the model,
    or where the path has CUDA graphs, the model graphed at its first batch."""
    return GraphOnFirstBatch(model, path.dtype) if path.cuda_graph else model
