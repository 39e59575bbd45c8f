"""Comparisons: one experiment per method (or variant) and seed, named
<data set>/compare/<method>/seed<s>, merged from the comparison's base experiment; the
self-training methods share the gen0 models of the baseline they start from."""
from __future__ import annotations

import copy

from .presets import BASELINES, METHODS, PLATEAU_BUDGET, STUDENT_BUDGET


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def students_train(exp: dict) -> dict:
    """The train section in force at generation 1 (the experiment's overrides applied)."""
    train = exp.get("train", {})
    for o in exp.get("overrides", []):
        if o["from_generation"] <= 1 and "train" in o:
            train = deep_merge(train, o["train"])
    return train


def plateau_train(train: dict, factor: int) -> dict:
    """gen0's train section with `factor` times its budget (steps, or epochs where steps is
    null): the most a baseline trained to its plateau may train (train.patience ends it)."""
    key = "steps" if train.get("steps") else "epochs"
    return {**train, key: factor * train[key]}


def experiment_name(dataset: str, method: str, seed: int) -> str:
    return f"{dataset}/compare/{method}/seed{seed}"


def comparison_rows(comparison: dict) -> dict[str, str]:
    """Row name -> the method it runs: the listed methods, then the variants."""
    rows = {m: m for m in comparison["methods"]}
    rows.update({name: v["method"] for name, v in comparison.get("variants", {}).items()})
    return rows


def seed_targets(dataset: str, comparison: dict, seed: int) -> list[str]:
    """The last generation's metrics table of every row of one seed (`comparison` with its
    defaults filled in): asked for seed by seed, a run stopped early leaves whole seeds."""
    last = lambda method: 0 if method in BASELINES else comparison["generations"]  # noqa: E731
    return [f"results/{experiment_name(dataset, row, seed)}/gen{last(method)}/metrics.csv"
            for row, method in comparison_rows(comparison).items()]


def expand_comparison(dataset: str, comparison: dict, base: dict) -> dict[str, dict]:
    """Raw experiment configs (before defaults) for every row (method or variant) x seed of one
    comparison, plus the baselines the listed self-training methods start from."""
    presets, starts = {}, {}
    for row, method in comparison_rows(comparison).items():
        preset = {k: v for k, v in METHODS[method].items() if k != "start"}
        starts[row] = METHODS[method].get("start")
        if row != method:
            preset = deep_merge(preset, comparison["variants"][row].get("settings", {}))
            starts[row] = comparison["variants"][row].get("start", starts[row])
        presets[row] = (method, preset)
    for row, (method, _) in list(presets.items()):
        start = starts[row]
        if start and start not in presets:
            presets[start] = (start, {k: v for k, v in METHODS[start].items() if k != "start"})
            starts[start] = None
    shared = deep_merge(base, comparison["settings"])
    experiments = {}
    for seed in comparison["seeds"]:
        for row, (method, preset) in presets.items():
            exp = deep_merge(shared, preset)
            if method in STUDENT_BUDGET:
                exp["train"] = deep_merge(students_train(shared), preset.get("train", {}))
            if method in PLATEAU_BUDGET:
                exp["train"] = deep_merge(plateau_train(shared["train"], PLATEAU_BUDGET[method]), preset.get("train", {}))
            exp["seed"] = seed
            if method not in BASELINES:
                exp["generations"] = comparison["generations"]
                exp["start_from"] = experiment_name(dataset, starts[row], seed)
                # gen0 is the start's: its stage-0 trainer too (CCT), so the shared gen0 settings match
                exp["stage0"] = deep_merge(exp.get("stage0", {}), METHODS[starts[row]].get("stage0", {}))
            else:
                exp["start_from"] = None
            experiments[experiment_name(dataset, row, seed)] = exp
    return experiments
