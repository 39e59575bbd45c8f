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
Where CPUs disagree (channels-last at 32 px), a training job on a CPU follows the step's timings
on this machine instead (`path_timings`, `faster_measured`) when a path beats the rule's by
`MEASURED_MARGIN`. Runs on a CPU repeat bit for bit; on CUDA, `deterministic` asks PyTorch for deterministic
algorithms (and turns cuDNN's autotuning off), since atomics-based kernels vary from run to run.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import platform
from dataclasses import asdict, dataclass, replace

import torch

from .io import glibc, share_one_heap

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# a measured path replaces the rule's only if it trains this much faster: timings of one machine
# vary by several per cent from run to run, and a near tie must not flip a choice between runs
MEASURED_MARGIN = 1.1
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# oneDNN's instruction-set levels, lowest first (ONEDNN_MAX_CPU_ISA names), and the CPU flags a
# level below each threshold takes away from what oneDNN and ATen may use
_ONEDNN_ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                      "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX",
                      "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16")
_ISA_THRESHOLDS = (("AVX512_CORE", ("avx512",)), ("AVX512_CORE_BF16", ("avx512_bf16",)),
                   ("AVX10_1_512_AMX", ("amx",)))


def capped_flags(flags: frozenset[str], onednn_max_isa: str | None = None, aten_capability: str | None = None
                 ) -> frozenset[str]:
    """`flags` less what an instruction-set cap forbids: ONEDNN_MAX_CPU_ISA (oneDNN's convolutions
    and matmuls) and ATEN_CPU_CAPABILITY (ATen's vectorized kernels). With the caps a CPU with AMX
    runs as an AVX2-only one, and `auto` must then choose as it would there."""
    removed: set[str] = set()
    isa = (onednn_max_isa or "").strip().upper()
    if isa and isa not in ("ALL", "DEFAULT"):
        level = _ONEDNN_ISA_LEVELS.index(isa) if isa in _ONEDNN_ISA_LEVELS else len(_ONEDNN_ISA_LEVELS)
        for threshold, prefixes in _ISA_THRESHOLDS:
            if level < _ONEDNN_ISA_LEVELS.index(threshold):
                removed.update(f for f in flags if f.startswith(prefixes))
    if (aten_capability or "").strip().lower() in ("default", "avx2"):
        removed.update(f for f in flags if f.startswith("avx512"))
    return flags - removed


@functools.lru_cache(maxsize=1)
def cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field ("flags", "model name"), or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == name), None)
    except OSError:
        return None


def cpu_name() -> str:
    return cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none) that the instruction-set
    caps of the environment leave usable."""
    flags = frozenset((cpuinfo_field("flags") or "").split())
    return capped_flags(flags, os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
                        os.environ.get("ATEN_CPU_CAPABILITY"))


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def start_job(threads: int) -> None:
    """Per-process set-up of a training or prediction job: its thread count, and heap memory kept
    for reuse (`keep_freed_memory`)."""
    torch.set_num_threads(max(1, threads))
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap: no mmap for large blocks, no trimming, and one
    heap for every thread (`io.share_one_heap`, since each thread's heap would keep its own peak).

    By default glibc serves large blocks (up to 32 MB, the size of a batch's activations) with
    mmap and gives them back on free, so every new activation tensor of every step faults its
    pages in again: a 32 MB elementwise product took 12 ms that way and 2 ms from the heap, and
    the training step ran up to 1.5x faster at 128-256 px (bench/throughput.py). The price is that
    a process holds on to its peak memory until it ends. Call it before any thread starts. False
    where the C library is not glibc."""
    libc = glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return (bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
            and share_one_heap())


_gpu_claim = None  # the open lock file that holds this process's GPU slot (released when it ends)


def pick_device() -> torch.device:
    """CUDA where there is a GPU, else the CPU. On a machine with several GPUs visible, the
    process claims one (`claim_gpu`) and makes it the current device, so that the jobs of a local
    run spread over the GPUs instead of all landing on the first."""
    global _gpu_claim
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count > 1 and _gpu_claim is None:
        index, _gpu_claim = claim_gpu([_gpu_key(i) for i in range(count)])
        torch.cuda.set_device(index)
    return torch.device("cuda")


def _gpu_key(index: int) -> str:
    """A name for a visible GPU that holds across processes with other CUDA_VISIBLE_DEVICES."""
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return str(uuid) if uuid is not None else str(index)


def claim_gpu(gpus: list[str], lock_dir: str | None = None) -> tuple[int, object]:
    """The index of the GPU with the fewest jobs on it, and the open file whose lock marks this
    process as one of them (the operating system drops the lock when the process ends, killed or
    not). Slot k of every GPU is taken before slot k + 1 of any, so jobs spread evenly."""
    import fcntl
    import tempfile
    lock_dir = lock_dir or os.path.join(tempfile.gettempdir(), f"im-core-gpus-{os.getuid()}")
    os.makedirs(lock_dir, exist_ok=True)
    for slot in itertools.count():
        for index, gpu in enumerate(gpus):
            f = open(os.path.join(lock_dir, f"{gpu}.{slot}"), "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            return index, f


@dataclass(frozen=True)
class NumericPath:
    device: str
    precision: str          # fp32, bf16 or fp16 (autocast dtype)
    channels_last: bool
    compile: bool = False
    deterministic: bool = False
    cuda_graph: bool = False  # training forward/backward replayed as CUDA graphs (cuda_graphs.py)

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
    return "bf16" if cpu_has_native_bf16(flags) else "fp32"


def resolve_channels_last(requested: str | bool, device: torch.device, image_size: tuple[int, int],
                          precision: str = "fp32", flags: frozenset[str] | None = None) -> bool:
    if requested != "auto":
        return bool(requested)
    if device.type == "cuda" or precision == "bf16":
        return True
    flags = cpu_flags() if flags is None else flags
    return "avx512f" in flags or min(image_size) >= 64


def choose_path(settings: dict, image_size: tuple[int, int], device: torch.device | None = None,
                flags: frozenset[str] | None = None,
                measured: dict[tuple[str, bool], float] | None = None) -> NumericPath:
    """The path for one job from the train settings' `precision`, `channels_last` and `compile`;
    on a CPU with `measured` training images/s per (precision, channels_last) of this machine
    (`path_timings`), the `auto` settings follow the measurement (`faster_measured`)."""
    device = device or pick_device()
    deterministic = bool(settings.get("deterministic", False))
    if deterministic:
        use_deterministic_algorithms()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(settings.get("precision", "auto"), device, flags)
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is for CUDA; on a CPU use bf16 (where it is native) or fp32")
    channels_last = resolve_channels_last(settings.get("channels_last", "auto"), device, image_size, precision, flags)
    compile_model = bool(settings.get("compile", False))
    cuda_graph = (device.type == "cuda" and settings.get("cuda_graphs", "auto") in ("auto", True)
                  and not compile_model and graph_eligible(settings))
    rule = NumericPath(device=str(device), precision=precision, channels_last=channels_last,
                       compile=compile_model, deterministic=deterministic, cuda_graph=cuda_graph)
    return faster_measured(rule, settings, measured) if measured and device.type == "cpu" else rule


def graph_eligible(settings: dict) -> bool:
    """Whether a training step of these settings calls the model's forward once per batch, as a
    CUDA graph needs (its outputs are overwritten at the next replay): the supervised trainer
    without GIST/RIST's feature consistency (which runs the model through another method)."""
    return settings.get("trainer", "supervised") == "supervised" and not settings.get("feature_consistency")


def faster_measured(rule: NumericPath, settings: dict, measured: dict[tuple[str, bool], float]) -> NumericPath:
    """The measured path that trains fastest among those the settings allow (an explicit
    precision or memory format stays), if it beats the rule's path by `MEASURED_MARGIN`; else
    the rule's path (also where the rule's path was not measured)."""
    wanted_precision, wanted_layout = settings.get("precision", "auto"), settings.get("channels_last", "auto")
    allowed = {key: rate for key, rate in measured.items()
               if wanted_precision in ("auto", key[0]) and (wanted_layout == "auto" or bool(wanted_layout) == key[1])}
    rule_rate = allowed.get((rule.precision, rule.channels_last))
    if not rule_rate:
        return rule
    fastest = max(allowed, key=allowed.get)
    if allowed[fastest] < MEASURED_MARGIN * rule_rate:
        return rule
    return replace(rule, precision=fastest[0], channels_last=fastest[1])


def use_deterministic_algorithms() -> None:
    """Deterministic kernels where PyTorch has them (a warning, not an error, for an op that has
    none); cuBLAS needs its workspace setting before its first use."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
