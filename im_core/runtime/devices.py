"""Which device a job runs on: CUDA where there is a GPU (one claimed per process where there are
several), else the CPU."""
from __future__ import annotations

import itertools
import os

import torch

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
