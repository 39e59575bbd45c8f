"""Run the configured comparison (IM, its variants and the baselines) of one or more data sets
through Snakemake and print each table.

    python bench/compare.py demo ph2 dsb2018 --cores 2

For each data set: `snakemake results/<data set>/compare.csv`, timed, then the table (method x
generation: test mIoU of the best-on-val model, data-set level and per image, the mean test mIoU
of the generation's models, val mIoU, IM fraction, pseudo-label accuracy; mean ± std where
several seeds are configured), written with the wall time and the summed job time to
docs/results/<data set>_compare.md. The real data sets are read from ../shared/data (see
config.yaml); a data set whose folder is missing is reported and skipped.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from im_core.steps.compare import format_by_generation, format_table  # noqa: E402


COLUMNS = ("test_miou", "test_miou_per_image", "test_miou_models_mean", "val_miou", "im_fraction", "pseudo_accuracy",
           "im_error_recall", "image_steps")


def format_differences(table: pd.DataFrame, reference: str = "ldt") -> str:
    """Markdown: each row's paired test-mIoU difference to `reference` (same seed), with its 95 %
    interval over seeds and whether it is resolved (compare.csv's diff_<reference> columns)."""
    column = f"diff_{reference}"
    if column not in table:
        return f"(no {reference} row: no paired differences)"
    lines = [f"| method | gen | seeds | − {reference} (95 % interval) |", "|---|---|---|---|"]
    for _, row in table.iterrows():
        mean, half = row[column], row[f"{column}_ci95"]
        if pd.isna(mean):
            continue
        over = " over test images" if row.get(f"{column}_over") == "images" else ""
        cell = (f"{mean:+.3f} (one seed)" if pd.isna(half) else
                f"{mean:+.3f} ± {half:.3f}{over}" + ("" if row[f"{column}_resolved"] else " (unresolved)"))
        lines.append(f"| {row['label']} | {row['generation']} | {row['seeds']} | {cell} |")
    return "\n".join(lines)


def total_job_seconds(benchmarks: Path, methods: list[str]) -> float:
    """Wall seconds of the jobs of the table's methods and variants, all seeds, from Snakemake's
    benchmark files under results/benchmarks/<data set>/compare/<method>/ (other experiments and
    rows no longer configured are not counted)."""
    files = [f for method in methods for f in (benchmarks / "compare" / method).rglob("*.tsv")]
    return sum(pd.read_csv(f, sep="\t")["s"].sum() for f in files)


def merge(base: dict, over: dict) -> dict:
    """`over` merged into `base` key by key (nested mappings too), as Snakemake merges config files."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--cores", default="all")
    ap.add_argument("--configfile", nargs="+", default=[str(REPO / "config.yaml")],
                    help="config files, later ones merged over earlier ones as Snakemake merges them")
    ap.add_argument("--directory", default=str(REPO), help="working directory holding results/")
    ap.add_argument("--summarize-only", action="store_true", help="read the existing tables; run nothing")
    args = ap.parse_args()
    config: dict = {}
    for path in args.configfile:
        with open(path, encoding="utf-8") as f:
            merge(config, yaml.safe_load(f) or {})
    status = 0
    for dataset in args.datasets:
        ds = config["datasets"].get(dataset)
        if ds is None or dataset not in config.get("comparisons", {}):
            print(f"{dataset}: no data set or no comparison of that name in {args.configfile}", file=sys.stderr)
            status = 2
            continue
        if ds.get("path") and not (Path(args.directory) / ds["path"]).exists():
            print(f"{dataset}: {ds['path']} not found (from {args.directory}); skipped", file=sys.stderr)
            status = 2
            continue
        target = f"results/{dataset}/compare.csv"
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", args.directory,
               "--configfile", *args.configfile, "--cores", str(args.cores), "--", target]
        if not args.summarize_only:
            print("$", " ".join(cmd), flush=True)
            started = time.time()
            subprocess.run(cmd, check=True)
            wall = time.time() - started
        table = pd.read_csv(Path(args.directory) / target)
        job_seconds = total_job_seconds(Path(args.directory) / "results" / "benchmarks" / dataset,
                                        list(table["method"].unique()))
        timing = ("not run (--summarize-only)" if args.summarize_only
                  else f"wall time {wall:.0f} s (jobs already up to date are not rerun)")
        text = (f"## {dataset}\n\n`snakemake --cores {args.cores} {target}`: {timing}; "
                f"the jobs of the table's rows, however many runs "
                f"made them: {job_seconds:.0f} s of job time\n\n"
                f"Test mIoU (data-set level) of the best-on-validation model:\n\n{format_by_generation(table, 'test_miou')}\n\n"
                f"Mean test mIoU of the generation's models:\n\n{format_by_generation(table, 'test_miou_models_mean')}\n\n"
                f"Paired differences to LDT (test mIoU, same seed):\n\n{format_differences(table)}\n\n"
                + (f"Share of the first teacher's wrong pixels inside the IM (error recall; where the unlabeled "
                   f"images have hidden masks):\n\n{format_by_generation(table, 'im_error_recall')}\n\n"
                   if "im_error_recall" in table else "") +
                f"All columns:\n\n{format_table(table, tuple(c for c in COLUMNS if c in table))}\n")
        out = REPO / "docs" / "results" / f"{dataset}_compare.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(text, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
