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
import platform
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

from im_core.methods.presets import BASELINES, LABELS, METHODS  # noqa: E402
from im_core.trainers import CONTINUOUS_TRAINERS  # noqa: E402

CONFIGS = [REPO / "config.yaml", REPO / "bench" / "continuous.yaml"]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
REFERENCES = ("ldt", "unimatch_eq")


def merged_config() -> dict:
    config: dict = {}
    for path in CONFIGS:
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def row_method(comparison: dict, row: str) -> str:
    return comparison.get("variants", {}).get(row, {}).get("method", row)


def row_dirs(root: Path, comparison: dict, row: str, seed: int) -> list[tuple[int, Path]]:
    """(generation, folder) of every generation a row trains or reads: its start's gen0 for a
    self-training method, then its own generations."""
    method = row_method(comparison, row)
    own = root / "compare" / row / f"seed{seed}"
    if method in BASELINES:
        return [(0, own / "gen0")]
    start = comparison.get("variants", {}).get(row, {}).get("start") or METHODS[method]["start"]
    return [(0, root / "compare" / start / f"seed{seed}" / "gen0")] + [
        (g, own / f"gen{g}") for g in range(1, comparison["generations"] + 1)]


def budget(folders: list[tuple[int, Path]]) -> tuple[int, float]:
    """Image-steps and training seconds of every model in these generations (checkpoints)."""
    image_steps, seconds = 0, 0.0
    for _, folder in folders:
        for ckpt_path in sorted(folder.glob("models/*/model.pt")):
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            s = ckpt["settings"]
            steps = ckpt["history"][-1]["step"]
            per_step = s["batch_size"] * (2 if s["trainer"] in CONTINUOUS_TRAINERS else 1)
            image_steps += steps * per_step
            seconds += ckpt["train_seconds"]
    return image_steps, seconds


def final_score(folder: Path) -> float:
    """Test mIoU of the generation's best-on-validation model (its metrics.csv)."""
    table = pd.read_csv(folder / "metrics.csv")
    return float(table.sort_values("rank").iloc[0]["test_miou"])


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (nan for one value)."""
    if len(values) < 2:
        return float(np.mean(values)), float("nan")
    return float(np.mean(values)), T95[len(values) - 1] * float(np.std(values, ddof=1)) / len(values) ** 0.5


def table_of(name: str, config: dict) -> pd.DataFrame:
    comparison = config["comparisons"][name]
    root = REPO / "results" / name
    rows = list(comparison["methods"]) + list(comparison.get("variants", {}))
    per_seed, records = {}, []
    for row in rows:
        for seed in comparison["seeds"]:
            folders = row_dirs(root, comparison, row, seed)
            g, last = folders[-1]
            steps, seconds = budget(folders)
            per_seed[(row, seed)] = final_score(last)
            records.append({"row": row, "seed": seed, "generation": g, "test_miou": per_seed[(row, seed)],
                            "image_steps": steps, "train_seconds": seconds})
            if row_method(comparison, row) not in BASELINES and g > 1:  # the first generation too
                per_seed[(row + "@gen1", seed)] = final_score(folders[1][1])
    frame = pd.DataFrame(records)
    out = []
    for row, group in frame.groupby("row", sort=False):
        scores = group["test_miou"].tolist()
        entry = {"row": row, "method": LABELS.get(row_method(comparison, row), row) + ("" if row in METHODS else f" ({row})"),
                 "generation": int(group["generation"].iloc[0]), "seeds": len(scores),
                 "test_miou": np.mean(scores), "test_miou_std": np.std(scores, ddof=1) if len(scores) > 1 else np.nan,
                 "image_steps": int(group["image_steps"].mean()), "train_seconds": group["train_seconds"].mean()}
        if (row + "@gen1", comparison["seeds"][0]) in per_seed:
            entry["test_miou_gen1"] = np.mean([per_seed[(row + "@gen1", s)] for s in comparison["seeds"]])
        for ref in REFERENCES:
            if ref in rows and ref != row:
                diffs = [per_seed[(row, s)] - per_seed[(ref, s)] for s in comparison["seeds"]]
                entry[f"diff_{ref}"], entry[f"diff_{ref}_ci"] = interval(diffs)
        out.append(entry)
    return pd.DataFrame(out)


def fmt_diff(mean: float, half: float) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(half):
        return f"{mean:+.3f} (one seed)"
    mark = "" if abs(mean) > half else " (unresolved)"
    return f"{mean:+.3f} ± {half:.3f}{mark}"


def markdown(name: str, table: pd.DataFrame, command: str, wall: float | None) -> str:
    lines = [f"## {name}", "", f"`{command}`" + (f": wall time {wall:.0f} s (jobs already up to date are not rerun)"
                                                  if wall is not None else ""), "",
             "Test mIoU of the best-on-validation model at the row's last generation (mean ± std over seeds); "
             "paired differences (same seed) with a 95 % t-interval over seeds; budget in image-steps and "
             "training seconds summed over every model the row trains, gen0 and teachers included.", "",
             "| method | gen | seeds | test mIoU | gen1 | − LDT | − UniMatch (eq. budget) | image-steps | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        std = "" if pd.isna(r["test_miou_std"]) else f" ± {r['test_miou_std']:.3f}"
        gen1 = f"{r['test_miou_gen1']:.3f}" if "test_miou_gen1" in r and not pd.isna(r.get("test_miou_gen1")) else ""
        d_ldt = fmt_diff(r.get("diff_ldt", np.nan), r.get("diff_ldt_ci", np.nan))
        d_uni = fmt_diff(r.get("diff_unimatch_eq", np.nan), r.get("diff_unimatch_eq_ci", np.nan))
        lines.append(f"| {r['method']} | {r['generation']} | {r['seeds']} | {r['test_miou']:.3f}{std} | {gen1} | "
                     f"{d_ldt} | {d_uni} | {r['image_steps']:,} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


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
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO),
               "--configfile", *map(str, CONFIGS), "--cores", cores, "--", target]
        print("$", " ".join(cmd), flush=True)
        started = time.time()
        subprocess.run(cmd, check=True)
        wall = time.time() - started
        table = table_of(name, config)
        command = f"snakemake --cores {cores} --configfile config.yaml bench/continuous.yaml -- {target}"
        text = markdown(name, table, command, wall)
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
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = ["## Seconds per training step", "",
             f"`python bench/continuous.py --step-times`: {cpu}, 1 thread, fp32; the demo's batch (16 labeled images "
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
            table = table_of(name, config)
            text = markdown(name, table, f"snakemake --configfile config.yaml bench/continuous.yaml -- "
                                         f"results/{name}/compare.csv", None)
            (REPO / "docs" / "results" / f"continuous_{name}.md").write_text(text, encoding="utf-8")
            table.to_csv(REPO / "docs" / "results" / f"continuous_{name}.csv", index=False, float_format="%.4f")
            print(text)
        return 0
    return run_comparisons(args.comparisons, args.cores) if args.comparisons else 0


if __name__ == "__main__":
    sys.exit(main())
