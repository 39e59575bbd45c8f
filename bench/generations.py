"""Run an experiment to its last generation through Snakemake and report test mIoU by generation.

    python bench/generations.py demo            # the README's demo
    python bench/generations.py ph2 --cores 2   # IM on real images (../shared/data/ph2_lesion_256)

Prints, per generation: the test mIoU (data-set level and per image) of the model ranked
best on validation, the mean and std over the generation's models, and the IM fraction and
pseudo-label accuracy/coverage; writes the table to docs/results/<experiment>_generations.csv
with the wall time of the Snakemake run.
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


def summarize(results: Path, experiment: str, generations: int) -> pd.DataFrame:
    rows = []
    for g in range(generations + 1):
        table = results / experiment / f"gen{g}" / "metrics.csv"
        if not table.exists():
            continue
        t = pd.read_csv(table).sort_values("rank")
        best = t.iloc[0]
        rows.append({
            "generation": g, "models": len(t),
            "test_miou_best_val": best["test_miou"], "test_miou_per_image_best_val": best["test_miou_per_image"],
            "test_miou_mean": t["test_miou"].mean(), "test_miou_std": t["test_miou"].std(ddof=0),
            "val_miou_best": best["val_miou"], "im_fraction": best["im_fraction"],
            "pseudo_accuracy": best["pseudo_accuracy"], "pseudo_coverage": best["pseudo_coverage"],
        })
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--cores", default="all")
    ap.add_argument("--configfile", default=str(REPO / "config.yaml"))
    ap.add_argument("--directory", default=str(REPO), help="working directory holding results/")
    ap.add_argument("--summarize-only", action="store_true", help="read the existing tables; run nothing")
    args = ap.parse_args()
    with open(args.configfile, encoding="utf-8") as f:
        generations = yaml.safe_load(f)["experiments"][args.experiment].get("generations", 3)
    target = f"results/{args.experiment}/gen{generations}/metrics.csv"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", args.directory,
           "--configfile", args.configfile, "--cores", str(args.cores), target]
    wall = float("nan")
    if not args.summarize_only:
        print("$", " ".join(cmd), flush=True)
        started = time.time()
        subprocess.run(cmd, check=True)
        wall = time.time() - started
    table = summarize(Path(args.directory) / "results", args.experiment, generations)
    table["snakemake_wall_s"] = round(wall, 1)
    out = REPO / "docs" / "results" / f"{args.experiment}_generations.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4f")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"snakemake wall time: {wall:.1f} s (jobs already up to date are not rerun); table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
