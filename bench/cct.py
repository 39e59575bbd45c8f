"""CCT against LDT at stage 0, and IM from CCT's models against IM from LDT's.

    python bench/cct.py demo ph2 dsb2018 --cores 2
    python bench/cct.py demo --step-time-only

For each data set: the comparison of config.yaml (data set, model, budget, selection; seed 0)
with LDT, CCT (the compact decoder set), CCT with the paper's full set (one model: it costs
about 14 supervised steps per step), IM from LDT and IM from CCT over 3 generations, in results/bench/cct/ (its own config) through Snakemake; one table of
test mIoU by generation of the best-on-validation model. First, the time per training step of
CCT relative to supervised training, measured side by side on the data set's training data
(same model, batch and numerical path). Written to docs/results/cct.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from configs import comparison_config, run_target  # noqa: E402
from report import markdown_table, publish  # noqa: E402
from im_core.trainers.cct import FULL_DECODERS  # noqa: E402

ROWS = {"ldt": "LDT", "cct": "CCT (compact: 3 decoders)", "cct_full": "CCT (full: 30 decoders; 1 model)",
        "im": "IM from LDT", "cct_im": "IM from CCT"}


# the full set costs about 14 supervised steps per step: one model, not the comparison's three
VARIANTS = {"cct_full": {"method": "cct", "settings": {"stage0": {"models": 1, "cct": {"decoders": FULL_DECODERS}},
                                                       "selection": {"top_k": 1}}}}


def step_times(workdir: Path, config_file: Path, dataset: str, steps: int) -> dict[str, float]:
    """Seconds per training step of LDT's and CCT's gen0 settings on the prepared data store."""
    import dataclasses

    from im_core import config as imc
    from im_core.steps import train
    experiments = imc.validate_config(yaml.safe_load(config_file.read_text()))["experiments"]
    store = workdir / "results" / dataset / "data.zarr"
    out = {}
    for row in ("ldt", "cct", "cct_full"):
        settings = imc.train_settings(experiments[f"{dataset}/compare/{row}/seed0"], 0, 0)
        settings = dataclasses.replace(settings, steps=steps, eval_every=steps)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            train.run(str(store), f"{tmp}/m.pt", settings, progress=False)
            out[row] = (time.perf_counter() - started) / steps
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--timing-steps", type=int, default=100)
    ap.add_argument("--step-time-only", action="store_true")
    ap.add_argument("--directory", default=str(REPO / "results" / "bench" / "cct"))
    args = ap.parse_args()
    workdir = Path(args.directory)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config = comparison_config(args.datasets, ["ldt", "cct", "im", "cct_im"], args.generations, VARIANTS)
    config_file.write_text(yaml.safe_dump(config))
    sections = [f"# CCT as stage 0\n\n`python bench/cct.py {' '.join(args.datasets)} --cores {args.cores}`; seed 0; "
                "test mIoU (data-set level) of the model ranked best on validation.\n"]
    for dataset in args.datasets:
        run_target(workdir, config_file, f"results/{dataset}/data.zarr", args.cores)
        times = step_times(workdir, config_file, dataset, args.timing_steps)
        timing = ", ".join(f"{ROWS[r]} {t * 1000:.1f} ms ({t / times['ldt']:.2f}x)" for r, t in times.items())
        section = f"## {dataset}\n\nTime per training step, one job, {args.timing_steps} steps each: {timing}\n"
        if not args.step_time_only:
            wall = run_target(workdir, config_file, f"results/{dataset}/compare.csv", args.cores)
            table = pd.read_csv(workdir / "results" / dataset / "compare.csv")
            gens = sorted(table["generation"].unique())
            rows = []
            for method, label in ROWS.items():
                cells = {int(r["generation"]): f"{r['test_miou']:.3f}" for _, r in table[table["method"] == method].iterrows()}
                rows.append([label, *[cells.get(g, "") for g in gens]])
            section += (f"\nwall time {wall:.0f} s\n\n"
                        + markdown_table(["method", *[f"gen{g}" for g in gens]], rows))
        sections.append(section)
    publish("\n".join(sections), REPO / "docs" / "results" / "cct.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
