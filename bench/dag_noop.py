"""Time Snakemake's no-op rerun (parse + DAG + up-to-date checks) of large targets.

    python bench/dag_noop.py [--workdir DIR] [--repeats 3]

Builds, in a work folder, a 5-generation experiment on the demo data and the demo comparison
(every method, variant and seed of config.yaml) with the training budget cut to a few steps
(the DAG, which is what a no-op rerun walks, has the same jobs as the real one), then times
`snakemake --cores 2 <target>` once nothing is left to do, `--repeats` times each, and prints
the median with the job count. Writes docs/results/dag_noop.md.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from report import markdown_table, publish

ROOT = Path(__file__).resolve().parent.parent
TINY_TRAIN = {"steps": 4, "eval_every": 2, "predict_batch_size": 256}
OVERLAY = {
    "experiments": {
        "demo5": {"dataset": "demo", "generations": 5, "model": {"alpha": 0.25}, "train": TINY_TRAIN,
                  "stage0": {"models": 4}, "students": {"models": 4}, "pseudo_labels": {"teachers": 3},
                  "selection": {"top_k": 3}},
    },
    "comparisons": {"demo": {"settings": {"model": {"alpha": 0.25}, "train": TINY_TRAIN,
                                          "overrides": [{"from_generation": 1, "train": TINY_TRAIN}]}}},
}
TARGETS = {"5-generation experiment (demo5)": "results/demo5/gen5/metrics.csv",
           "demo comparison (all methods, variants, seeds)": "results/demo/compare.csv"}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(ROOT / "config.yaml"), str(workdir / "overlay.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="reuse a work folder (default: a new temporary one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "dag_noop.md"))
    a = ap.parse_args(argv)
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="dag_noop_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(OVERLAY), encoding="utf-8")
    rows = []
    for name, target in TARGETS.items():
        planned = snakemake(workdir, "-n", "--forceall", target)
        jobs = re.search(r"^total\s+(\d+)", planned.stdout, re.M)
        start = time.perf_counter()
        built = snakemake(workdir, target)
        if built.returncode:
            raise SystemExit(f"building {target} failed:\n{built.stderr[-3000:]}")
        build_s = time.perf_counter() - start
        times = []
        for _ in range(a.repeats):
            start = time.perf_counter()
            rerun = snakemake(workdir, target)
            times.append(time.perf_counter() - start)
            if rerun.returncode or "Nothing to be done" not in rerun.stdout + rerun.stderr:
                raise SystemExit(f"the rerun of {target} was not a no-op:\n{rerun.stderr[-3000:]}")
        rows.append((name, target, jobs.group(1) if jobs else "?", build_s, times))
        print(f"{name}: {rows[-1][2]} jobs; no-op rerun median {statistics.median(times):.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    table = markdown_table(["target", "jobs", "no-op rerun, median s", "runs (s)"],
                           [[f"{name} (`{target}`)", jobs, f"{statistics.median(t):.2f}", ", ".join(f"{x:.2f}" for x in t)]
                            for name, target, jobs, _, t in rows])
    publish(table, a.out)
    print(f"work folder: {workdir}")


if __name__ == "__main__":
    main()
