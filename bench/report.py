"""What every benchmark script does with its result: a Markdown table, printed and written."""
from __future__ import annotations

import datetime
import os
import re
from pathlib import Path


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def publish(text: str, out: str | Path) -> None:
    """Print `text` and write it to `out` (folders made as needed)."""
    out = Path(out)
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written: {out}")


def usable_flags() -> list[str]:
    """The instruction sets that decide the kernels' speed and that the kernels may use here
    (after any instruction-set cap of the environment)."""
    from im_core.runtime.cpu import cpu_flags
    flags = cpu_flags()
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]


def run_stamp() -> str:
    """The date and the machine a benchmark ran on, for the line that says how its table was made:
    the CPU's name, its cores, the instruction sets the kernels may use (after any cap), the GPU."""
    import torch
    from im_core.runtime.cpu import cpu_name
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"{datetime.date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} cores "
            f"({', '.join(usable_flags()) or 'no avx2'}), GPU: {gpu}")


def timed_run_line(command: str, wall: float) -> str:
    """The line a Snakemake run's table starts with (what `recorded_run` reads back)."""
    return f"`{command}`: wall time {wall:.0f} s (jobs already up to date are not rerun), {run_stamp()}"


def recorded_run(out: Path) -> str | None:
    """The command, wall time, date and machine an earlier run wrote at the top of `out`, so that
    --summarize-only rewrites the tables without losing the timing of the run that made them."""
    if not out.exists():
        return None
    match = re.search(r"^(`snakemake [^`]+`: wall time \d+ s \([^)]*\)(?:, [^;\n]*)?)", out.read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else None
