"""The config a comparison benchmark runs with: config.yaml's data sets (paths made absolute, so
the benchmark can run in a folder of its own) and one comparison per data set, seed 0."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def comparison_config(datasets: list[str], methods: list[str], generations: int, variants: dict | None = None,
                      students_train: dict | None = None) -> dict:
    """config.yaml with a comparison of `methods` (and `variants`) per data set over
    `generations`; `students_train` replaces the train settings of generation 1 on."""
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    for ds in config["datasets"].values():
        if ds.get("path"):
            ds["path"] = str((REPO / ds["path"]).resolve())
    comparisons = {}
    for name in datasets:
        comp = copy.deepcopy(config["comparisons"][name])
        comp.update(methods=methods, seeds=[0], generations=generations, variants=variants or {})
        if students_train:
            comp["settings"] = dict(comp.get("settings", {}), overrides=[{"from_generation": 1, "train": students_train}])
        comparisons[name] = comp
    config.update(comparisons=comparisons, default_experiments=[])
    return config


def run_target(workdir: Path, config_file: Path, target: str, cores: str) -> float:
    """`snakemake <target>` in the benchmark's folder with its config; the wall seconds it took."""
    import subprocess
    import sys
    import time
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config_file), "--cores", str(cores), "--", target]
    print("$", " ".join(cmd), flush=True)
    started = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - started
