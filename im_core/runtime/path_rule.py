"""Which numerical path a job on a CPU takes: a rule of the CPU's flags and the image size, never
a clock (torch-free, so the workflow decides it when it plans the jobs).

Different paths train different models (fp32 contiguous and channels-last reached dev mIoU 0.178
and 0.189 from one gen0 job), so a path that followed a timing would make a rerun from scratch
land, by the machine's load of the moment, on other numbers: three back-to-back timings on one
AMD EPYC (Zen 4) ranked fp32 contiguous / channels-last 434/346, then 354/441, then 895/845
images/s. The rule below is what the measurements on several CPUs agreed on (docs/speed.md, "The
numerical path"):
- bf16 autocast where the CPU computes bf16 natively (AMX or AVX-512 BF16: 1.3-1.9x fp32); never
  where it is emulated (AVX2: 7-15x slower);
- channels-last in bf16 and wherever AVX-512 is (1.4-2x in fp32), and on AVX2-only CPUs from 64 px
  (below that it ran 0.9x on an AMD EPYC and 1.2x on a capped Intel Xeon: contiguous, the safe side).

Timings (`im-core time-paths`) only advise: `recommend` names a path that beats the rule's by
`VETO_MARGIN` in every round, for the user to pin with `compute.numeric_path` (a pin is a
setting, so it is part of every job's params and of its fingerprint).
"""
from __future__ import annotations

from typing import Mapping, Sequence

PathKey = tuple[str, bool]            # (precision, channels_last)
# the order a tie is resolved in: the cheaper numerics first, contiguous before channels-last
PATH_ORDER: tuple[PathKey, ...] = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
# a measured path is worth recommending over the rule's only if its slowest round beats the rule
# path's fastest by this much: the run-to-run spread of one machine's ratios reached 1.25x
# (the EPYC timings above), so a margin of 1.5x is not crossed by noise of that size
VETO_MARGIN = 1.5
# the image side from which an AVX2-only CPU runs fp32 channels-last faster
AVX2_CHANNELS_LAST_FROM = 64


def has_native_bf16(flags: frozenset[str]) -> bool:
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def rule_precision(requested: str, flags: frozenset[str]) -> str:
    """A CPU's precision: the requested one, or for `auto` bf16 where it is native, else fp32."""
    if requested != "auto":
        return requested
    return "bf16" if has_native_bf16(flags) else "fp32"


def rule_channels_last(requested: str | bool, precision: str, flags: frozenset[str],
                       image_size: Sequence[int] | None) -> str | bool:
    """A CPU's memory format: the requested one, or for `auto` the rule; "auto" where the rule
    needs the image size and it is not known yet (the job settles it from its data store, by
    this same rule)."""
    if requested != "auto":
        return bool(requested)
    if precision == "bf16" or "avx512f" in flags:
        return True
    if image_size is None:
        return "auto"
    return min(image_size) >= AVX2_CHANNELS_LAST_FROM


def plan_cpu_path(precision: str, channels_last: str | bool, flags: frozenset[str],
                  image_size: Sequence[int] | None) -> tuple[str, str | bool]:
    """(precision, channels_last) of a CPU job that asks for these (each may be `auto`)."""
    chosen = rule_precision(precision, flags)
    return chosen, rule_channels_last(channels_last, chosen, flags, image_size)


def path_label(key: PathKey) -> str:
    """fp32, fp32+cl, bf16, bf16+cl."""
    return f"{key[0]}{'+cl' if key[1] else ''}"


def describe(path: Mapping | None) -> str:
    """A recorded path (NumericPath.as_dict) in a table: "bf16+cl, 2 threads", "bf16+cl (cuda)";
    "" where none was recorded."""
    if not path:
        return ""
    name = path_label((path["precision"], bool(path["channels_last"])))
    device = str(path.get("device", "cpu")).split(":")[0]
    if device != "cpu":
        return f"{name} ({device})"
    threads = path.get("threads")
    return f"{name}, {threads} thread{'s' if threads != 1 else ''}" if threads else name


def recommend(rule: PathKey, rounds: Mapping[PathKey, Sequence[float]], margin: float = VETO_MARGIN) -> PathKey:
    """The path to pin given timed rounds (images/s per round of each path): starting from the
    rule's path, each path in `PATH_ORDER` takes the place of the one chosen so far where its
    slowest round beats that one's fastest by `margin`. A ranking that noise can flip never
    clears the margin, so the answer is the same from one timing to the next."""
    chosen = rule
    if not rounds.get(rule):
        return rule
    for key in PATH_ORDER:
        if rounds.get(key) and min(rounds[key]) >= margin * max(rounds[chosen]):
            chosen = key
    return chosen
