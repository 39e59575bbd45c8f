"""Run the configured comparison (IM, its variants and the baselines) of one or more data sets
through Snakemake and print each table.

    python bench/compare.py demo ph2 dsb2018 --cores 2

For each data set: every row's runs, seed by seed (so that a run stopped early leaves whole
seeds), then `snakemake results/<data set>/compare.csv`, timed; then the table (method x
generation: test mIoU of the best-on-val model, data-set level and per image, the mean test mIoU
of the generation's models, val mIoU, IM fraction, pseudo-label accuracy; mean ± std where
several seeds are configured), written with the wall time and the summed job time to
docs/results/<data set>_compare.md. The real data sets are read from ../shared/data (see
config.yaml); a data set whose folder is missing is reported and skipped.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from im_core.config.schema import load_schema, validator_with_defaults  # noqa: E402
from im_core.methods.comparisons import seed_targets  # noqa: E402
from im_core.steps.compare import _cell, format_by_generation, format_table  # noqa: E402
from report import recorded_run, timed_run_line  # noqa: E402


COLUMNS = ("test_miou", "test_miou_per_image", "test_miou_models_mean", "val_miou", "im_fraction", "pseudo_accuracy",
           "im_error_recall", "image_steps")


def format_differences(table: pd.DataFrame, reference: str = "ldt") -> str:
    """Markdown: each row's paired test-mIoU difference to `reference` (same seed), with its 95 %
    interval over seeds and whether it is resolved (compare.csv's diff_<reference> columns)."""
    if f"diff_{reference}" not in table:
        return f"(no {reference} row: no paired differences)"
    lines = [f"| method | gen | seeds | − {reference} (95 % interval) |", "|---|---|---|---|"]
    for _, row in table.iterrows():
        cell = _difference(row, reference, long=True)
        if cell:
            lines.append(f"| {row['label']} | {row['generation']} | {row['seeds']} | {cell} |")
    return "\n".join(lines)


def _difference(row: pd.Series, reference: str, long: bool = False) -> str:
    """'+0.012 ± 0.030' (or '… (unres.)', '… (one seed)') of a row's paired difference to `reference`;
    `long` spells out '(unresolved)' and says where the interval is over test images."""
    column = f"diff_{reference}"
    if column not in row or pd.isna(row[column]):
        return ""
    mean, half = row[column], row[f"{column}_ci95"]
    if pd.isna(half):
        return f"{mean:+.3f} (one seed)"
    over = " over test images" if long and row.get(f"{column}_over") == "images" else ""
    unresolved = " (unresolved)" if long else " (unres.)"
    return f"{mean:+.3f} ± {half:.3f}{over}" + ("" if row[f"{column}_resolved"] else unresolved)


def format_summary(table: pd.DataFrame, reference: str | None) -> str:
    """Markdown: one line per row — test mIoU at gen1..last, the last generation's paired
    difference to LDT and to `reference` (95 % interval; '(unres.)' where it holds 0), and the
    mask's error recall gen1 → last; baselines show their gen0 only."""
    last = int(table["generation"].max())
    gens = range(1, last + 1)
    refs = ["ldt"] + ([reference] if reference and reference != "ldt" else [])
    lines = ["| row | seeds | " + " | ".join(f"gen{g}" for g in gens) + " | "
             + " | ".join(f"gen{last} − {r}" for r in refs) + " | error recall by gen |",
             "|---|---|" + "---|" * (len(gens) + len(refs) + 1)]
    for label, rows in table.groupby("label", sort=False):
        by_gen = {int(r["generation"]): r for _, r in rows.iterrows()}
        end = by_gen.get(last, by_gen[max(by_gen)])
        cells = [_cell(by_gen[g], "test_miou") if g in by_gen else "" for g in gens]
        if set(by_gen) == {0}:
            cells[0] = f"{_cell(by_gen[0], 'test_miou')} (gen0)"
        recall = [by_gen[g]["im_error_recall"] for g in gens
                  if g in by_gen and "im_error_recall" in table and not pd.isna(by_gen[g]["im_error_recall"])]
        recall_cell = " → ".join(f"{r:.2f}" for r in recall) if recall and max(recall) > 0 else "–"
        lines.append(f"| {label} | {end['seeds']} | " + " | ".join(cells) + " | "
                     + " | ".join(_difference(end, r) for r in refs) + f" | {recall_cell} |")
    return "\n".join(lines)


def im_targets(table: pd.DataFrame, row: str, reference: str | None) -> list[tuple[str, float, bool]]:
    """Issue 31's targets for one IM row at its last generation, as (target, margin, met):
    mean gen_last ≥ mean gen1; ≥ LDT's mean + 1 std; ≥ the continued-training control (`reference`)
    at the same generation; ≥ the best of Model Ensemble, Input Ensemble and Noisy Student present.
    A margin is the row's mean minus the bar (met where ≥ 0)."""
    last = int(table["generation"].max())

    def mean(method: str, gen: int, column: str = "test_miou") -> float | None:
        hit = table[(table["method"] == method) & (table["generation"] == gen)]
        return None if hit.empty else float(hit[column].iloc[0])

    rows = table[table["label"] == row].set_index("generation")
    if last not in rows.index:
        return []
    method, end, first = rows["method"].iloc[0], float(rows.loc[last, "test_miou"]), float(rows.loc[1, "test_miou"])
    out = [("gen%d ≥ gen1" % last, end - first, end >= first)]
    ldt, ldt_std = mean("ldt", 0), mean("ldt", 0, "test_miou_std")
    if ldt is not None:
        bar = ldt + (0.0 if ldt_std is None or pd.isna(ldt_std) else ldt_std)
        out.append(("≥ LDT + 1 std", end - bar, end >= bar))
    control = mean(reference, last) if reference and reference != method else None
    if control is not None:
        out.append((f"≥ {reference}", end - control, end >= control))
    others = {m: mean(m, last) for m in ("model_ensemble", "input_ensemble", "noisy_student")}
    others = {m: v for m, v in others.items() if v is not None}
    if others:
        best = max(others, key=others.get)
        name = f"≥ {best}" if len(others) == 1 else f"≥ best of {', '.join(others)}"
        out.append((name, end - others[best], end >= others[best]))
    return out


def format_targets(table: pd.DataFrame, rows: list[str], reference: str | None) -> str:
    """Markdown: one line per IM row, each target's margin with 'met' or 'not met'."""
    results = {row: im_targets(table, row, reference) for row in rows}
    names = list(dict.fromkeys(name for found in results.values() for name, _, _ in found))
    lines = ["| row | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, found in results.items():
        cells = {name: f"{margin:+.3f} {'met' if met else 'not met'}" for name, margin, met in found}
        lines.append(f"| {row} | " + " | ".join(cells.get(name, "") for name in names) + " |")
    return "\n".join(lines)


def format_overview(tables: dict[str, tuple[pd.DataFrame, str | None, list[str]]], command: str) -> str:
    """Markdown: every row's last-generation test mIoU on each data set (mean ± std, seeds), its
    paired difference to the data set's reference row, and how many of issue 31's targets each
    IM row meets there."""
    datasets = list(tables)
    labels = list(dict.fromkeys(label for table, _, _ in tables.values() for label in table["label"]))
    lines = [f"Written by `python bench/compare.py {command} --overview …`: test mIoU (data-set level) of the "
             "best-on-validation model at the last generation (a baseline: its gen0), mean ± std over the seeds "
             "[seeds, the row's budget: image-steps of every model it trained, summed]; the paired difference (same seed) to the data set's reference row with its 95 % interval "
             "('unres.' where it holds 0); for IM rows, the targets met.", "",
             "| row | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for label in labels:
        cells = []
        for dataset in datasets:
            table, reference, im_rows = tables[dataset]
            rows = table[table["label"] == label]
            if rows.empty:
                cells.append("")
                continue
            end = rows[rows["generation"] == rows["generation"].max()].iloc[0]
            steps = f", {end['image_steps'] / 1000:,.0f}k image-steps" if not pd.isna(end.get("image_steps")) else ""
            cell = f"{_cell(end, 'test_miou')} [{end['seeds']} seed{'s' if end['seeds'] != 1 else ''}{steps}]"
            diff = _difference(end, reference) if reference else ""
            if diff:
                cell += f"; {diff}"
            if label in im_rows:
                found = im_targets(table, label, reference)
                cell += f"; targets {sum(met for _, _, met in found)}/{len(found)}"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    across = baselines_beaten(tables)
    if across:
        lines += ["", "Issue 31's cross-data-set target, IM ≥ the best of Model Ensemble, Input Ensemble and Noisy "
                  "Student at the last generation on at least three of the four data sets (means):", ""]
        lines += [f"- {label}: on {met} of {n} ({', '.join(where) or 'none'})" for label, (met, n, where) in across.items()]
    return "\n".join(lines) + "\n"


def baselines_beaten(tables: dict[str, tuple[pd.DataFrame, str | None, list[str]]]) -> dict[str, tuple[int, int, list[str]]]:
    """Per IM row: on how many of the data sets holding it and an ensemble baseline its last
    generation's mean is at least the best of those baselines, of how many, and which."""
    out: dict[str, tuple[int, int, list[str]]] = {}
    for dataset, (table, reference, im_rows) in tables.items():
        for label in im_rows:
            found = [met for name, _, met in im_targets(table, label, reference) if name.startswith("≥ best of")
                     or name in ("≥ model_ensemble", "≥ input_ensemble", "≥ noisy_student")]
            if found:
                met, n, where = out.get(label, (0, 0, []))
                out[label] = (met + found[0], n + 1, where + [dataset] * found[0])
    return out


def plot_recall(table: pd.DataFrame, out: Path, title: str) -> None:
    """Two panels by generation: the mask's error recall of each IM row and every row's test mIoU
    (mean over seeds, the std as a band; baselines as horizontal lines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_recall, ax_miou) = plt.subplots(1, 2, figsize=(12, 4.5))
    last = int(table["generation"].max())
    colours = iter(plt.get_cmap("tab20").colors)  # more rows than tab10's ten colours
    for label, rows in table.groupby("label", sort=False):
        colour = next(colours)
        rows = rows.sort_values("generation")
        gens = rows["generation"].to_numpy()
        if len(rows) == 1:  # a baseline: its gen0 across the plot
            ax_miou.hlines(rows["test_miou"].iloc[0], 0, last, linestyles="--", colors=colour, label=label)
            continue
        ax_miou.plot(gens, rows["test_miou"], marker="o", color=colour, label=label)
        std = rows["test_miou_std"].fillna(0).to_numpy()
        ax_miou.fill_between(gens, rows["test_miou"] - std, rows["test_miou"] + std, alpha=0.05, color=colour)
        recall = rows.dropna(subset=["im_error_recall"])
        if not recall.empty and recall["im_error_recall"].max() > 0:
            ax_recall.errorbar(recall["generation"], recall["im_error_recall"], yerr=recall["im_error_recall_std"].fillna(0),
                               marker="o", capsize=3, color=colour, label=label)
    ax_recall.set(xlabel="generation", ylabel="error recall of the IM", ylim=(0, 1), title="wrong pseudo-label pixels inside the mask")
    ax_miou.set(xlabel="generation", ylabel="test mIoU (best on validation)", title="test mIoU")
    for ax in (ax_recall, ax_miou):
        ax.set_xticks(range(last + 1))
        ax.grid(alpha=0.3)
    ax_miou.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def per_label_table(directory: Path, dataset: str, rows: dict[str, str], seeds: list[int]) -> pd.DataFrame:
    """Per label (multi-label data) of each IM row, generation and seed of the table: the best-on-validation model's test
    IoU and the pseudo-labels' coverage, accuracy, recall and the mask's error recall, read from
    the runs' metrics.csv (compare.csv holds the means over labels only). `rows`: method -> label."""
    out = []
    for method, label in rows.items():
        runs = directory / "results" / dataset / "compare" / method
        for path in sorted(p for seed in seeds for p in (runs / f"seed{seed}").glob("gen*/metrics.csv")):
            metrics = pd.read_csv(path)
            names = [c[len("im_error_recall_"):] for c in metrics.columns  # multi-label data: per-label recall too
                     if c.startswith("im_error_recall_") and f"pseudo_recall_{c[len('im_error_recall_'):]}" in metrics]
            if not names:
                continue
            best = metrics.sort_values("rank").iloc[0]
            for name in names:
                out.append({"row": label, "generation": int(path.parent.name[3:]), "seed": int(path.parent.parent.name[4:]),
                            "label": name, "test_iou": best.get(f"test_iou_{name}"),
                            **{k: best.get(f"{k}_{name}") for k in ("pseudo_coverage", "pseudo_accuracy", "pseudo_recall",
                                                                    "im_error_recall")}})
    return pd.DataFrame(out)


def format_per_label(table: pd.DataFrame) -> str:
    """Markdown: per row and generation, each label's test IoU, pseudo-label coverage / accuracy /
    recall and the mask's error recall (means over seeds)."""
    if table.empty:
        return ""
    means = table.groupby(["row", "generation", "label"], sort=False).mean(numeric_only=True).reset_index()
    lines = ["| row | gen | label | test IoU | pseudo coverage | pseudo accuracy | pseudo recall | error recall |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in means.sort_values(["row", "generation"], kind="stable").iterrows():
        lines.append(f"| {r['row']} | {r['generation']} | {r['label']} | {r['test_iou']:.3f} | {r['pseudo_coverage']:.3f} | "
                     f"{r['pseudo_accuracy']:.3f} | {r['pseudo_recall']:.3f} | {r['im_error_recall']:.3f} |")
    return "\n".join(lines)


def total_job_seconds(benchmarks: Path, methods: list[str], seeds: list[int]) -> float:
    """Wall seconds of the jobs of the table's methods and variants at the table's seeds, from
    Snakemake's benchmark files under results/benchmarks/<data set>/compare/<method>/seed<s>/
    (other experiments, rows no longer configured and seeds not in the table are not counted)."""
    files = [f for method in methods for seed in seeds
             for f in (benchmarks / "compare" / method / f"seed{seed}").rglob("*.tsv")]
    return sum(pd.read_csv(f, sep="\t")["s"].sum() for f in files)


def merge(base: dict, over: dict) -> dict:
    """`over` merged into `base` key by key (nested mappings too), as Snakemake merges config files."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def with_defaults(comparison: dict) -> dict:
    """A comparison as a config file gives it, with the schema's defaults filled in (the default
    methods, generations, variants)."""
    schema = load_schema()
    filled = copy.deepcopy(comparison)
    validator_with_defaults({"$defs": schema["$defs"], "$ref": "#/$defs/comparison"}).validate(filled)
    return filled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--cores", default="all")
    ap.add_argument("--configfile", nargs="+", default=[str(REPO / "config.yaml")],
                    help="config files, later ones merged over earlier ones as Snakemake merges them")
    ap.add_argument("--directory", default=str(REPO), help="working directory holding results/")
    ap.add_argument("--summarize-only", action="store_true", help="read the existing tables; run nothing")
    ap.add_argument("--overview", help="also write one table of every data set's last generation to this file")
    args = ap.parse_args()
    config: dict = {}
    for path in args.configfile:
        with open(path, encoding="utf-8") as f:
            merge(config, yaml.safe_load(f) or {})
    status = 0
    tables: dict[str, tuple[pd.DataFrame, str | None, list[str]]] = {}
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
               "--configfile", *args.configfile, "--cores", str(args.cores), "--"]
        comparison = with_defaults(config["comparisons"][dataset])
        if not args.summarize_only:
            started = time.time()
            # seed by seed, so that a run stopped early leaves whole seeds (Snakemake goes on from there)
            for targets in [seed_targets(dataset, comparison, seed) for seed in comparison["seeds"]] + [[target]]:
                print("$", " ".join(cmd + targets), flush=True)
                subprocess.run(cmd + targets, check=True)
            wall = time.time() - started
        table = pd.read_csv(Path(args.directory) / target)
        reference = config["comparisons"][dataset].get("reference")
        im_methods = ("im", "im_plus", "aim_plus")
        variants = config["comparisons"][dataset].get("variants") or {}
        im_rows = [label for label, method in table.groupby("label", sort=False)["method"].first().items()
                   if method in im_methods or (variants.get(method) or {}).get("method") in im_methods]
        job_seconds = total_job_seconds(Path(args.directory) / "results" / "benchmarks" / dataset,
                                        list(table["method"].unique()),
                                        comparison["seeds"])
        methods = dict(table.groupby("method", sort=False)["label"].first())
        per_label = format_per_label(per_label_table(Path(args.directory), dataset,
                                                     {m: label for m, label in methods.items() if label in im_rows},
                                                     comparison["seeds"]))
        out = REPO / "docs" / "results" / f"{dataset}_compare.md"
        command = f"snakemake --cores {args.cores} {target}"
        run_line = ((recorded_run(out) or f"`{command}`: not run (--summarize-only)") if args.summarize_only
                    else timed_run_line(command, wall))
        text = (f"## {dataset}\n\n{run_line}; the jobs of the table's rows, however many runs "
                f"made them: {job_seconds:.0f} s of job time\n\n"
                f"Summary: test mIoU (data-set level) of the best-on-validation model by generation, the last "
                f"generation's paired differences (same seed; 95 % interval over seeds, over test images where "
                f"one seed is all there is; '(unres.)' where it holds 0) and the mask's error recall:\n\n"
                f"{format_summary(table, reference)}\n\n"
                f"IM rows against issue 31's targets (margin = the row's mean minus the bar):\n\n"
                f"{format_targets(table, im_rows, reference)}\n\n"
                f"Test mIoU (data-set level) of the best-on-validation model:\n\n{format_by_generation(table, 'test_miou')}\n\n"
                f"Mean test mIoU of the generation's models:\n\n{format_by_generation(table, 'test_miou_models_mean')}\n\n"
                f"Paired differences to LDT (test mIoU, same seed):\n\n{format_differences(table)}\n\n"
                + (f"Paired differences to {reference} (test mIoU, same seed):\n\n"
                   f"{format_differences(table, reference)}\n\n" if reference and reference != "ldt" else "")
                + (f"Share of the first teacher's wrong pixels inside the IM (error recall; where the unlabeled "
                   f"images have hidden masks; plotted in {dataset}_recall.png):\n\n"
                   f"{format_by_generation(table, 'im_error_recall')}\n\n"
                   if "im_error_recall" in table else "")
                + (f"Per label, the IM rows (best-on-validation model; means over the seeds):\n\n{per_label}\n\n"
                   if per_label else "") +
                f"All columns:\n\n{format_table(table, tuple(c for c in COLUMNS if c in table))}\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(text, flush=True)
        tables[dataset] = (table, reference, im_rows)
        if "im_error_recall" in table and table["im_error_recall"].max() > 0:
            plot_recall(table, out.with_name(f"{dataset}_recall.png"),
                        f"{dataset}: seeds {', '.join(map(str, comparison['seeds']))}")
    if args.overview and tables:
        Path(args.overview).write_text(format_overview(tables, " ".join(args.datasets)), encoding="utf-8")
        print(f"wrote {args.overview}")
    return status


if __name__ == "__main__":
    sys.exit(main())
