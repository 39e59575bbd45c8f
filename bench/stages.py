"""Stages that continue from a parent, against IM and the baselines, over many stages.

    python bench/stages.py demo ph2 dsb2018 --cores 2
    python bench/stages.py demo --stages 6 --steps 600

For each data set: the comparison of config.yaml (its data set, model, gen0 and selection
settings, seed 0) with the methods LDT, FDT, IM, FIST (alpha 0.5), GIST (G=2), RIST (R=3),
GIST+IM and RIST+IM over `--stages` generations, every student trained for `--steps` steps per
stage (the same K for every method; IM's students start from scratch, the others continue a
parent). It runs in its own folder (results/bench/stages/, a config written there) through
Snakemake, times it, and prints one table per data set: test mIoU by stage of the model ranked
best on the development set, the stage and path the development set chooses over the whole
run (best dev mIoU of any stage after gen0), and that model's test mIoU. Written to
docs/results/stages.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from configs import comparison_config, run_target  # noqa: E402
from report import markdown_table, publish  # noqa: E402

METHODS = ["ldt", "fdt", "im", "fist", "gist", "rist", "gist_im", "rist_im"]
LABELS = {"ldt": "LDT", "fdt": "FDT", "im": "IM", "fist": "FIST (α=0.5)", "gist": "GIST (G=2)", "rist": "RIST (R=3)",
          "gist_im": "GIST+IM", "rist_im": "RIST+IM"}


def run_rows(results: Path, dataset: str, method: str, stages: int) -> dict:
    """Per stage, the best-on-dev model's test mIoU and path; the dev-chosen stage over the run."""
    tables = []
    for g in range(stages + 1 if method not in ("ldt", "fdt") else 1):
        folder = f"{dataset}/compare/{'ldt' if g == 0 and method != 'fdt' else method}/seed0"
        tables.append(pd.read_csv(results / folder / f"gen{g}" / "metrics.csv"))
    best = [t.sort_values("rank").iloc[0] for t in tables]
    later = best[1:] or best
    chosen = max(later, key=lambda row: (row["dev_miou"], -row["generation"]))
    def path(row) -> str:
        value = row.get("path", "")
        return "" if pd.isna(value) else str(value)

    return {"by_stage": [row["test_miou"] for row in best], "paths": [path(row) for row in best],
            "chosen_stage": int(chosen["generation"]), "chosen_path": path(chosen),
            "chosen_dev": chosen["dev_miou"], "chosen_test": chosen["test_miou"],
            "models": sum(len(t) for t in tables[1:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--stages", type=int, default=6)
    ap.add_argument("--steps", type=int, default=600, help="K: training steps of every student per stage")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--directory", default=str(REPO / "results" / "bench" / "stages"))
    ap.add_argument("--summarize-only", action="store_true")
    args = ap.parse_args()
    workdir = Path(args.directory)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config = comparison_config(args.datasets, METHODS, args.stages,
                               students_train={"steps": args.steps, "eval_every": args.eval_every})
    config_file.write_text(yaml.safe_dump(config))
    sections = [f"# Stages: GIST, RIST, FIST against IM and the baselines\n\n`python bench/stages.py "
                f"{' '.join(args.datasets)} --stages {args.stages} --steps {args.steps} --cores {args.cores}`; "
                f"seed 0; every student {args.steps} steps per stage (validation every {args.eval_every}); "
                "test mIoU (data-set level) of the model ranked best on the development set at each stage; "
                "'chosen' = the stage after gen0 whose best model has the highest dev mIoU, with its path "
                "(L ground truth only, P pseudo-labels only, M both).\n"]
    for dataset in args.datasets:
        wall = "not run (--summarize-only)"
        if not args.summarize_only:
            wall = f"{run_target(workdir, config_file, f'results/{dataset}/compare.csv', args.cores):.0f} s"
        header = ["method", *[f"gen{g}" for g in range(args.stages + 1)], "chosen stage", "chosen path",
                  "its dev mIoU", "its test mIoU", "models trained after gen0"]
        rows = []
        for method in METHODS:
            r = run_rows(workdir / "results", dataset, method, args.stages)
            cells = [f"{v:.3f}" for v in r["by_stage"]] + [""] * (args.stages + 1 - len(r["by_stage"]))
            rows.append([LABELS[method], *cells, r["chosen_stage"] if len(r["by_stage"]) > 1 else 0,
                         r["chosen_path"] or "-", f"{r['chosen_dev']:.3f}", f"{r['chosen_test']:.3f}", r["models"]])
        paths = []
        for method in ("fist", "gist", "rist", "gist_im", "rist_im"):
            r = run_rows(workdir / "results", dataset, method, args.stages)
            paths.append(f"{LABELS[method]}: " + " → ".join(p or "-" for p in r["paths"][1:]))
        sections.append(f"## {dataset}\n\nwall time {wall}\n\n" + markdown_table(header, rows)
                        + "\nBest-on-dev model's path by stage:\n\n" + "\n".join(f"- {p}" for p in paths) + "\n")
    publish("\n".join(sections), REPO / "docs" / "results" / "stages.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
