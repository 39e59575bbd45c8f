"""DST-CBC's rounds (Table 5a's ablation) against IM and the baselines.

    python bench/dst.py demo ph2 dsb2018 --cores 2

For each data set: the comparison of config.yaml (data set, model, budget, selection; seed 0)
with LDT, FDT, IM, ST, DST, DST-CBC and DST-CBC+IM over `--rounds` rounds, in
results/bench/dst/ (its own config) through Snakemake, timed; one table of test mIoU by round
of the best-so-far model (DST's result; for IM and the baselines the best-on-validation model of
the round), and the pseudo-labels' accuracy and coverage by round. Written to
docs/results/dst.md.
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

METHODS = {"ldt": "LDT", "fdt": "FDT", "im": "IM", "st": "ST", "dst": "DST", "dst_cbc": "DST-CBC",
           "dst_cbc_im": "DST-CBC+IM"}


def rounds(results: Path, dataset: str, method: str, last: int) -> list[dict]:
    """Per round: the test mIoU of the best model so far (else the round's best), pseudo-label accuracy and coverage."""
    out, tables = [], {}
    for g in range(last + 1 if method not in ("ldt", "fdt") else 1):
        folder = f"{dataset}/compare/{'ldt' if g == 0 and method != 'fdt' else method}/seed0"
        table = pd.read_csv(results / folder / f"gen{g}" / "metrics.csv")
        tables.update({row["model_id"]: row for _, row in table.iterrows()})
        best = table.sort_values("rank").iloc[0]
        chosen = tables.get(best.get("best_so_far", ""), best) if method.startswith(("st", "dst")) else best
        out.append({"test": chosen["test_miou"], "accuracy": best["pseudo_accuracy"], "coverage": best["pseudo_coverage"]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--directory", default=str(REPO / "results" / "bench" / "dst"))
    ap.add_argument("--summarize-only", action="store_true")
    args = ap.parse_args()
    workdir = Path(args.directory)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config_file.write_text(yaml.safe_dump(comparison_config(args.datasets, list(METHODS), args.rounds)))
    sections = [f"# DST-CBC's rounds\n\n`python bench/dst.py {' '.join(args.datasets)} --rounds {args.rounds} "
                f"--cores {args.cores}`; seed 0; test mIoU (data-set level) of the best model so far by round "
                "(IM and the baselines: the round's best on validation); pseudo-label accuracy / coverage "
                "against the unlabeled split's hidden ground truth.\n"]
    for dataset in args.datasets:
        target = f"results/{dataset}/compare.csv"
        wall = "not run (--summarize-only)"
        if not args.summarize_only:
            wall = f"{run_target(workdir, config_file, target, args.cores):.0f} s"
        header = ["method", *[f"round {g}" for g in range(args.rounds + 1)]]
        scores, pseudo = [], []
        for method, label in METHODS.items():
            r = rounds(workdir / "results", dataset, method, args.rounds)
            scores.append([label, *[f"{x['test']:.3f}" for x in r], *[""] * (args.rounds + 1 - len(r))])
            if len(r) > 1:
                pseudo.append([label, "", *[f"{x['accuracy']:.3f} / {x['coverage']:.2f}" for x in r[1:]]])
        sections.append(f"## {dataset}\n\nwall time {wall}\n\n" + markdown_table(header, scores)
                        + "\nPseudo-label accuracy / coverage:\n\n" + markdown_table(header, pseudo))
    publish("\n".join(sections), REPO / "docs" / "results" / "dst.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
