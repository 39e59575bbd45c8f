"""The numerical path a job runs on: device, precision, memory format, compilation.

`choose_path` resolves the `auto` settings from what the machine offers; the result is logged
and recorded in every checkpoint. Measured (bench/throughput.py) on the project's U-Net:
- channels-last pays on CUDA; in fp32 on CPUs with AVX-512 at every size (1.4-2x) and on
  AVX2-only CPUs from about 64 px (below that it was 0.9x there); in bf16 at every size, once
  the few-channel layers' batch norm has its own kernel (batchnorm.py);
- bf16 autocast pays only where the CPU computes bf16 natively (AMX or AVX-512 BF16: 1.3-1.9x
  here); where it is emulated (AVX2) it ran 7-15x slower, so `auto` never picks it there;
- on CUDA, autocast in bf16 (fp16 with a gradient scaler on GPUs without bf16) and cuDNN
  autotuning;
- on CUDA, the training forward and backward replayed as CUDA graphs (cuda_graphs.py), where a
  step calls the model once per batch: at these sizes the GPU otherwise waits on kernel launches;
- torch.compile gained under 10 % after 20-45 s of compiling, so it is an option, off by default;
- `start_job` keeps freed memory in the heap, which spares every step's activations their page
  faults.
On a CPU the path is a rule of the CPU's flags and the image size (path_rule.py), never a
timing, and the workflow settles it when it plans the jobs, so it is part of each job's params.
A CPU job's numbers also depend on its thread count (oneDNN splits its sums by thread), so the
threads are part of the path too. Runs on a CPU repeat bit for bit; on CUDA, `deterministic`
asks PyTorch for deterministic algorithms (and turns cuDNN's autotuning off), since
atomics-based kernels vary from run to run.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, replace

import torch

from ..settings import NumericRequest
from .cpu import cpu_flags
from .devices import pick_device
from .path_rule import describe, rule_channels_last, rule_precision

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class NumericPath:
    device: str
    precision: str          # fp32, bf16 or fp16 (autocast dtype)
    channels_last: bool
    compile: bool = False
    deterministic: bool = False
    cuda_graph: bool = False  # training forward/backward replayed as CUDA graphs (cuda_graphs.py)
    threads: int | None = None  # torch's threads on a CPU (they change the sums, so the numbers)

    @property
    def label(self) -> str:
        """fp32, fp32+cl, bf16+cl, ... (on a CPU with its threads: "bf16+cl, 2 threads")."""
        return describe(self.as_dict())

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.dtype)

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch N x C x H x W on the device, in the path's memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def data_device(self, nbytes: int) -> str:
        """Where the training set lives: on the GPU when it takes at most half of its free
        memory (batches are then cut and augmented there), else in host memory."""
        if torch.device(self.device).type != "cuda":
            return self.device
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return self.device if nbytes <= free // 2 else "cpu"

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(torch.device(self.device).type, enabled=self.precision == "fp16")

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_precision(requested: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return rule_precision(requested, cpu_flags() if flags is None else flags)


def resolve_channels_last(requested: str | bool, device: torch.device, image_size: tuple[int, int],
                          precision: str = "fp32", flags: frozenset[str] | None = None) -> bool:
    if requested != "auto":
        return bool(requested)
    if device.type == "cuda":
        return True
    return bool(rule_channels_last(requested, precision, cpu_flags() if flags is None else flags, image_size))


def choose_path(request: NumericRequest, image_size: tuple[int, int], device: torch.device | None = None,
                flags: frozenset[str] | None = None, graph_eligible: bool = False) -> NumericPath:
    """The path for one job from what its settings ask (`precision`, `channels_last`, `compile`,
    `deterministic`, `cuda_graphs`); `auto` follows the rules above (on a CPU, path_rule.py).
    `graph_eligible`: the job's training step calls the model's forward once per batch, as a
    CUDA graph needs (its outputs are overwritten at the next replay)."""
    device = device or pick_device()
    deterministic = bool(request.deterministic)
    if deterministic:
        use_deterministic_algorithms()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(request.precision, device, flags)
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is for CUDA; on a CPU use bf16 (where it is native) or fp32")
    channels_last = resolve_channels_last(request.channels_last, device, image_size, precision, flags)
    compile_model = bool(request.compile)
    cuda_graph = (device.type == "cuda" and request.cuda_graphs in ("auto", True) and not compile_model
                  and graph_eligible)
    return NumericPath(device=str(device), precision=precision, channels_last=channels_last,
                       compile=compile_model, deterministic=deterministic, cuda_graph=cuda_graph,
                       threads=torch.get_num_threads() if device.type == "cpu" else None)


def use_deterministic_algorithms() -> None:
    """Deterministic kernels where PyTorch has them (a warning, not an error, for an op that has
    none); cuBLAS needs its workspace setting before its first use."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
