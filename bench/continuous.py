"""Issue 30's benchmark: the continuous trainers (FixMatch, UniMatch V1/V2) against LDT, FDT and IM,
and IM's generations on top of UniMatch, from scratch, at a stated budget.

    python bench/continuous.py cont_demo cont_dsb2018 --cores 2       # the comparisons, then the tables
    python bench/continuous.py --step-times                           # seconds per step of each trainer

For each comparison of bench/continuous.yaml (merged over config.yaml) it runs
`snakemake results/<name>/compare.csv` (Snakemake's cache: a run that was stopped goes on where
it was) and writes docs/results/continuous_<name>.md and .csv: per row, the test mIoU of the
best-on-validation model at the row's last generation (mean ± std over seeds), the paired
difference to LDT and to UniMatch at IM's budget (`unimatch_eq`) with a 95 % t-interval over
seeds (a difference whose interval holds 0 is marked unresolved), the budget in image-steps
(bench/continuous.yaml says how they are counted) and the training seconds, both summed over
every model the row trains (gen0 and teachers included), read from the checkpoints.

`--step-times` times one training step of each trainer side by side in one process (rounds
interleaved, median of the rounds) on the demo's batch and model, and writes
docs/results/continuous_step_times.md.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from im_core.methods.comparisons import seed_targets  # noqa: E402
from im_core.methods.presets import BASELINES, LABELS, METHODS  # noqa: E402
from im_core.trainers import CONTINUOUS_TRAINERS  # noqa: E402
from report import recorded_run, run_stamp, timed_run_line  # noqa: E402

CONFIGS = [REPO / "config.yaml", REPO / "bench" / "continuous.yaml"]
REFERENCE = "unimatch_eq"  # the comparisons' `reference`: UniMatch at IM's budget
ALL = ["cont_demo", "cont_dsb2018", "cont_ph2", "cont_cells"]  # the overview's columns, where run


def merged_config() -> dict:
    config: dict = {}
    for path in CONFIGS:
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def table_of(name: str, comparison: dict) -> pd.DataFrame:
    """The comparison's rows at their last generation (compare.csv: mean ± std over seeds, the
    paired differences to LDT and to the reference, the budget), with the first generation's
    test mIoU beside the last for the generational rows, and the training seconds (mean over
    seeds) of every model the row trains, from the checkpoints (the tables hold no clock)."""
    table = pd.read_csv(REPO / "results" / name / "compare.csv")
    last = table.loc[table.groupby("method", sort=False)["generation"].idxmax()].copy()
    gen1 = table[table["generation"] == 1].set_index("method")["test_miou"]
    last["test_miou_gen1"] = last["method"].map(gen1).where(last["generation"] > 1)
    # the seeds the table holds (a table made for fewer seeds than configured: those that have run)
    seeds = [s for s in comparison["seeds"] if (REPO / "results" / name / "compare" / "ldt" / f"seed{s}" / "gen0"
                                                / "metrics.csv").exists()][:int(table["seeds"].max())]
    last["train_seconds"] = [np.mean([train_seconds(name, comparison, row, seed) for seed in seeds])
                             for row in last["method"]]
    return last.reset_index(drop=True)


def train_seconds(name: str, comparison: dict, row: str, seed: int) -> float:
    """Seconds the checkpoints of a row's generations record (its start's gen0 included)."""
    variant = comparison.get("variants", {}).get(row, {})
    method = variant.get("method", row)
    own = REPO / "results" / name / "compare" / row / f"seed{seed}"
    if method in BASELINES:
        folders = [own / "gen0"]
    else:
        start = variant.get("start") or METHODS[method]["start"]
        folders = [REPO / "results" / name / "compare" / start / f"seed{seed}" / "gen0"] + [
            own / f"gen{g}" for g in range(1, comparison["generations"] + 1)]
    return sum(float(torch.load(path, map_location="cpu", weights_only=True)["train_seconds"])
               for folder in folders for path in folder.glob("models/*/model.pt"))


def fmt_diff(row: pd.Series, ref: str) -> str:
    mean, half = row.get(f"diff_{ref}", np.nan), row.get(f"diff_{ref}_ci95", np.nan)
    if pd.isna(mean):
        return ""
    if pd.isna(half):
        return f"{mean:+.3f} (one seed)"
    over = " (images)" if row.get(f"diff_{ref}_over") == "images" else ""
    return f"{mean:+.3f} ± {half:.3f}{over}" + ("" if row[f"diff_{ref}_resolved"] else " (unresolved)")


def markdown(name: str, table: pd.DataFrame, run_line: str) -> str:
    """The comparison's table under `run_line` (the command, and for a run its wall time, date and machine)."""
    reference = REFERENCE
    lines = [f"## {name}", "", run_line, "",
             "Test mIoU of the best-on-validation model at the row's last generation (mean ± std over seeds; "
             "gen1 beside it for the generational rows); paired differences (same seed) with a 95 % t-interval "
             "over seeds, 'unresolved' where it holds 0; the budget in image-steps and training seconds summed "
             "over every model the row trains, gen0 and teachers included (compare.csv; the seconds from the "
             "checkpoints).", "",
             f"| method | gen | seeds | test mIoU | gen1 | − LDT | − {reference} | image-steps | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        std = "" if pd.isna(r["test_miou_std"]) else f" ± {r['test_miou_std']:.3f}"
        gen1 = "" if pd.isna(r["test_miou_gen1"]) else f"{r['test_miou_gen1']:.3f}"
        label = r["label"] if r["label"] != r["method"] or r["method"] in LABELS else r["method"]
        lines.append(f"| {label} | {r['generation']} | {r['seeds']} | {r['test_miou']:.3f}{std} | {gen1} | "
                     f"{fmt_diff(r, 'ldt')} | {fmt_diff(r, reference)} | {r['image_steps']:,.0f} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def overview(names: list[str]) -> str:
    """One table over the data sets: per row, each data set's test mIoU (mean ± std, seeds) at the
    row's last generation and its paired difference to LDT and to UniMatch at IM's budget, from
    the tables the runs wrote (docs/results/continuous_<name>.csv)."""
    tables = {n: pd.read_csv(REPO / "docs" / "results" / f"continuous_{n}.csv").set_index("method")
              for n in names if (REPO / "docs" / "results" / f"continuous_{n}.csv").exists()}
    if not tables:
        return ""
    rows = list(dict.fromkeys(m for t in tables.values() for m in t.index))
    header = "| row | " + " | ".join(f"{n} (seeds)" for n in tables) + " |"
    lines = ["Test mIoU at each row's last generation, mean ± std over seeds; below it the paired "
             f"differences (same seed) to LDT and to {REFERENCE} with their 95 % intervals, "
             "* where the interval excludes 0.", "", header, "|---|" + "---|" * len(tables)]

    def diff(r, ref):
        if pd.isna(r.get(f"diff_{ref}", np.nan)):
            return "·"
        half = r.get(f"diff_{ref}_ci95", np.nan)
        star = "*" if bool(r.get(f"diff_{ref}_resolved")) else ""
        return f"{r[f'diff_{ref}']:+.3f}{'' if pd.isna(half) else f' ± {half:.3f}'}{star}"

    for m in rows:
        cells = []
        for t in tables.values():
            if m not in t.index:
                cells.append("")
                continue
            r = t.loc[m]
            std = "" if pd.isna(r["test_miou_std"]) else f" ± {r['test_miou_std']:.3f}"
            cells.append(f"{r['test_miou']:.3f}{std} ({r['seeds']})<br>LDT {diff(r, 'ldt')}; UniMatch {diff(r, REFERENCE)}")
        label = next(t.loc[m, "label"] for t in tables.values() if m in t.index)
        lines.append(f"| {label if label in LABELS.values() else m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_overview(names: list[str]) -> None:
    text = overview(names)
    if text:
        (REPO / "docs" / "results" / "continuous_overview.md").write_text(text, encoding="utf-8")
        print(text, flush=True)


def snakemake(targets: list[str], cores: str) -> None:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO),
           "--configfile", *map(str, CONFIGS), "--cores", cores, "--", *targets]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def run_comparisons(names: list[str], cores: str) -> int:
    config = merged_config()
    status = 0
    for name in names:
        if name not in config.get("comparisons", {}):
            print(f"{name}: no comparison of that name in bench/continuous.yaml", file=sys.stderr)
            status = 2
            continue
        path = config["datasets"][name].get("path")
        if path and not (REPO / path).exists():
            print(f"{name}: {path} not found; skipped", file=sys.stderr)
            status = 2
            continue
        target = f"results/{name}/compare.csv"
        started = time.time()
        # seed by seed, so that a run stopped early leaves whole seeds (Snakemake goes on from there)
        for seed in config["comparisons"][name]["seeds"]:
            snakemake(seed_targets(name, config["comparisons"][name], seed), cores)
        snakemake([target], cores)
        wall = time.time() - started
        table = table_of(name, config["comparisons"][name])
        command = f"snakemake --cores {cores} --configfile config.yaml bench/continuous.yaml -- {target}"
        text = markdown(name, table, timed_run_line(command, wall))
        out = REPO / "docs" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"continuous_{name}.md").write_text(text, encoding="utf-8")
        table.to_csv(out / f"continuous_{name}.csv", index=False, float_format="%.4f")
        print(text, flush=True)
    return status


def step_times(rounds: int = 7, steps: int = 10) -> str:
    """Seconds per training step of each trainer on the demo's batch (16 images of 32 x 32, the
    1x1 U-Net with alpha 0.5), fp32 on one thread, measured side by side in one process."""
    import dataclasses
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import train_settings  # the schema's train defaults as settings
    from im_core.config import defaults, resolve_dataset
    from im_core.data.batches import Batches, TrainingTensors
    from im_core.data.read import read_split, training_arrays
    from im_core.data.store import prepare
    from im_core.io import open_store
    from im_core.models import build_model
    from im_core.runtime.numeric_path import NumericPath
    from im_core.trainers import load_trainer
    from im_core.trainers.base import TrainingContext
    from im_core.trainers.step import objective, training_step

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    demo = merged_config()["datasets"]["cont_demo"]
    prepare(resolve_dataset("cont_demo", dict(demo, ignore_index=255)), folder / "data.zarr")
    store = open_store(folder / "data.zarr")
    labeled = training_arrays(store)
    unlabeled = read_split(store, "unlabeled", with_masks=False).images
    path = NumericPath("cpu", "fp32", False)
    classes = len(store.attrs["class_names"])
    options = {"continuous": defaults("trainer")["continuous"]}
    jobs = {}
    for name in ("supervised",) + CONTINUOUS_TRAINERS:
        s = dataclasses.replace(train_settings(batch_size=16, model={"alpha": 0.5}), trainer=name,
                                options={} if name == "supervised" else options)
        torch.manual_seed(0)
        model = build_model(3, classes, alpha=0.5)
        gen = torch.Generator().manual_seed(0)
        ctx = TrainingContext(s, model, {}, "multiclass", classes, path, gen, "cpu", lambda: unlabeled)
        trainer = load_trainer(name)(ctx)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches = Batches(TrainingTensors.from_arrays(labeled.images, labeled.masks), 16, s.augment, gen)
        jobs[name] = (model, opt, trainer, objective(s, trainer, model, "multiclass", 255), batches)
    times = {name: [] for name in jobs}
    for r in range(rounds + 1):
        for name, (model, opt, trainer, goal, batches) in jobs.items():
            started = time.perf_counter()
            for step in range(1, steps + 1):
                x, y = next(batches)
                training_step(model, opt, path.grad_scaler(), path, x, y, goal, trainer.draw(), step, steps)
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - started) / steps)
    base = statistics.median(times["supervised"])
    lines = ["## Seconds per training step", "",
             f"`python bench/continuous.py --step-times`: {run_stamp()}, 1 thread, fp32; the demo's batch (16 labeled images "
             f"of 32 x 32, plus 16 unlabeled for the continuous trainers), the 1x1 U-Net (alpha 0.5); median of "
             f"{rounds} rounds of {steps} steps, the trainers interleaved in each round.", "",
             "| trainer | ms per step | × supervised |", "|---|---|---|"]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {1000 * median:.1f} | {median / base:.2f} |")
    text = "\n".join(lines) + "\n"
    (REPO / "docs" / "results" / "continuous_step_times.md").write_text(text, encoding="utf-8")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("comparisons", nargs="*")
    ap.add_argument("--cores", default="2")
    ap.add_argument("--step-times", action="store_true", help="time one step of each trainer")
    ap.add_argument("--summarize-only", action="store_true", help="write the tables from existing results; run nothing")
    args = ap.parse_args()
    if args.step_times:
        print(step_times(), flush=True)
    if args.summarize_only:
        config = merged_config()
        for name in args.comparisons:
            table = table_of(name, config["comparisons"][name])
            out = REPO / "docs" / "results" / f"continuous_{name}.md"
            # the timing of the run that made the table is kept (a rewrite from results has none)
            text = markdown(name, table, recorded_run(out) or (f"`snakemake --configfile config.yaml bench/continuous.yaml "
                                                               f"-- results/{name}/compare.csv`"))
            out.write_text(text, encoding="utf-8")
            table.to_csv(REPO / "docs" / "results" / f"continuous_{name}.csv", index=False, float_format="%.4f")
            print(text)
        write_overview(ALL)
        return 0
    status = run_comparisons(args.comparisons, args.cores) if args.comparisons else 0
    if args.comparisons:
        write_overview(ALL)
    return status


if __name__ == "__main__":
    sys.exit(main())
