"""What the CPU offers: its name and the feature flags the environment's instruction-set caps
leave usable (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), read from /proc/cpuinfo."""
from __future__ import annotations

import functools
import os
import platform

from .path_rule import has_native_bf16


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
    return has_native_bf16(cpu_flags() if flags is None else flags)
