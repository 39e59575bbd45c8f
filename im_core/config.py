"""Validate the workflow config against its JSON schema and resolve per-job settings.

`validate_config` fills in defaults and raises InputError naming every bad key.
`generation_settings` gives the settings in force for one generation of an experiment
(overrides applied), which is what the rules hand to each job and what Snakemake compares to
decide whether a job must rerun.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .io import InputError
from . import synthetic
from .data import SUIM_CLASSES, SUIM_PALETTE
from .methods import METHODS, deep_merge, expand_comparison
from .schedules import noisy_student_settings

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

_DEFAULT_COLOURS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def _validator_with_defaults(schema: dict) -> jsonschema.protocols.Validator:
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _messages(validator, instance: Any, where: str, prefix: tuple = ()) -> list[str]:
    out = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        key = _key_path(prefix + tuple(err.absolute_path))
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            msg = f"unknown key(s) {extra}" + (f"; allowed keys: {allowed}" if allowed else "")
        elif err.validator == "enum":
            msg = f"{err.instance!r} is not one of {err.validator_value}"
        else:
            msg = err.message
        out.append(f"{where}: {key}: {msg}")
    return out


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def validate_config(config: dict, schema: dict | None = None, where: str = "config") -> dict:
    """Return a validated copy of `config` with defaults filled in; raise InputError otherwise."""
    schema = schema or load_schema()
    config = copy.deepcopy(config)
    errors = _messages(_validator_with_defaults(schema), config, where)
    if not errors:
        for name, ds in config["datasets"].items():
            config["datasets"][name] = resolve_dataset(name, ds)
        experiment_validator = _validator_with_defaults({"$defs": schema["$defs"], "$ref": "#/$defs/experiment"})
        for name, exp in config["experiments"].items():
            errors += _check_experiment(name, exp, config, experiment_validator, where)
        if not errors:
            errors += _expand_comparisons(config, experiment_validator, where)
        for name, exp in config["experiments"].items():
            errors += _check_start(name, exp, config["experiments"], where)
        for name in config["default_experiments"]:
            if name not in config["experiments"]:
                errors.append(f"{where}: default_experiments: {name!r} is not an experiment; known: {sorted(config['experiments'])}")
    if errors:
        raise InputError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return config


def resolve_dataset(name: str, ds: dict) -> dict:
    """Fill the source-dependent defaults: class names, palette, task, size."""
    ds = dict(ds, name=name)
    if ds["source"] == "demo":
        ds.setdefault("class_names", list(synthetic.CLASS_NAMES))
        ds.setdefault("palette", [list(c) for c in synthetic.PALETTE])
        ds.setdefault("size", [32, 32])
    elif ds["source"] == "suim":
        ds.setdefault("class_names", list(SUIM_CLASSES))
        ds.setdefault("palette", [list(c) for c in SUIM_PALETTE])
        ds.setdefault("size", [256, 256])
    ds.setdefault("task", "multiclass")
    n = len(ds["class_names"])
    ds.setdefault("palette", [list(_DEFAULT_COLOURS[i % len(_DEFAULT_COLOURS)]) for i in range(n)])
    if len(ds["palette"]) != n:
        raise InputError(f"config: datasets.{name}.palette: {len(ds['palette'])} colours for {n} classes")
    if ds["task"] == "binary" and n != 2:
        raise InputError(f"config: datasets.{name}.class_names: a binary task has exactly 2 classes, got {n}")
    return ds


def _check_experiment(name: str, exp: dict, config: dict, validator, where: str) -> list[str]:
    key = f"experiments.{name}"
    if exp["dataset"] not in config["datasets"]:
        return [f"{where}: {key}.dataset: {exp['dataset']!r} is not a data set; known: {sorted(config['datasets'])}"]
    errors = []
    if "/" in name and not name.split("/")[1:2] == ["compare"]:
        errors.append(f"{where}: {key}: experiment names may not contain '/' (used for comparisons' experiments)")
    for g in sorted({0, 1} | {o["from_generation"] for o in exp["overrides"]}):
        resolved = _merged(exp, g)
        found = _messages(validator, resolved, where, (key, f"(generation {g} after overrides)"))
        if found:
            errors += found
            continue
        pl, sel = resolved["pseudo_labels"], resolved["selection"]
        models = resolved["stage0" if g == 0 else "students"]["models"]
        if sel["top_k"] > models:
            errors.append(f"{where}: {key}.selection.top_k: {sel['top_k']} is more than the {models} models of generation {g}")
        if pl["builder"] in ENSEMBLE_BUILDERS and pl["teachers"] > sel["top_k"]:
            errors.append(f"{where}: {key}.pseudo_labels.teachers: {pl['teachers']} teachers but selection.top_k keeps only {sel['top_k']}")
        if resolved["stage0"]["trainer"] != "supervised":
            errors.append(f"{where}: {key}.stage0.trainer: gen0 has no teacher to fine-tune; use 'supervised'")
        consistency = resolved["students"]["trainer"] == "consistency"
        if consistency != (pl["builder"] == "none"):
            errors.append(f"{where}: {key}: students.trainer 'consistency' goes with pseudo_labels.builder 'none' "
                          f"(it uses no pseudo-labels) and only with it; got trainer {resolved['students']['trainer']!r}, "
                          f"builder {pl['builder']!r} (generation {g})")
    return errors


def _expand_comparisons(config: dict, validator, where: str) -> list[str]:
    """Add each comparison's method x seed experiments to config["experiments"]."""
    errors = []
    for dataset, comp in config["comparisons"].items():
        key = f"comparisons.{dataset}"
        base = config["experiments"].get(comp["base"])
        if base is None:
            errors.append(f"{where}: {key}.base: {comp['base']!r} is not an experiment; known: {sorted(config['experiments'])}")
            continue
        if base["dataset"] != dataset:
            errors.append(f"{where}: {key}.base: experiment {comp['base']!r} uses data set {base['dataset']!r}; "
                          f"a comparison is named after its data set, so its base must use {dataset!r}")
            continue
        if base["start_from"]:
            errors.append(f"{where}: {key}.base: experiment {comp['base']!r} has start_from set; use one that trains its own gen0")
            continue
        for name in comp["variants"]:
            if name in METHODS or name in comp["experiments"]:
                errors.append(f"{where}: {key}.variants.{name}: a variant needs a name of its own, "
                              f"not a method's or a listed experiment's")
        for extra in comp["experiments"]:
            if extra not in config["experiments"]:
                errors.append(f"{where}: {key}.experiments: {extra!r} is not an experiment")
            elif config["experiments"][extra]["dataset"] != dataset:
                errors.append(f"{where}: {key}.experiments: {extra!r} uses data set {config['experiments'][extra]['dataset']!r}, not {dataset!r}")
        for name, exp in expand_comparison(dataset, comp, base).items():
            if name in config["experiments"]:
                errors.append(f"{where}: experiments.{name}: this name belongs to {key}; rename the experiment")
                continue
            found = _check_experiment(name, exp, config, validator, where)
            errors += [f"{e} (from {key})" for e in found]
            config["experiments"][name] = exp
    return errors


def _check_start(name: str, exp: dict, experiments: dict, where: str) -> list[str]:
    """start_from: same data set, same gen0 settings, and no chains."""
    start = exp.get("start_from")
    if not start:
        return []
    key = f"{where}: experiments.{name}.start_from"
    if start not in experiments:
        return [f"{key}: {start!r} is not an experiment"]
    other = experiments[start]
    if other["start_from"]:
        return [f"{key}: {start!r} itself starts from {other['start_from']!r}; name that one instead"]
    if other["dataset"] != exp["dataset"]:
        return [f"{key}: {start!r} uses data set {other['dataset']!r}, this experiment {exp['dataset']!r}"]
    mine, theirs = gen0_settings(exp), gen0_settings(other)
    differ = sorted(k for k in mine if mine[k] != theirs[k])
    if differ:
        return [f"{key}: gen0 settings differ from {start!r} in {differ}; gen0 models can only be shared when they match"]
    return []


def gen0_settings(exp: dict) -> dict:
    s = generation_settings(exp, 0)
    return {"model": s["model"], "train": s["train"], "stage0": s["stage0"], "seed": exp["seed"]}


def _merged(exp: dict, generation: int) -> dict:
    resolved = {k: v for k, v in exp.items() if k != "overrides"}
    for o in exp["overrides"]:
        if o["from_generation"] <= generation:
            resolved = deep_merge(resolved, {k: v for k, v in o.items() if k != "from_generation"})
    return resolved


def generation_settings(exp: dict, generation: int) -> dict:
    """The experiment's settings in force for `generation` (overrides with from_generation <= g)."""
    return _merged(exp, generation)


def train_settings(exp: dict, generation: int, model_index: int) -> dict:
    """Everything one training job needs: the train section, the model, the trainer and the seed."""
    s = generation_settings(exp, generation)
    trainer = s["stage0" if generation == 0 else "students"]
    settings = {**s["train"], "model": dict(s["model"]), "seed": model_seed(exp["seed"], generation, model_index),
                "trainer": trainer["trainer"], "labels": trainer["labels"], "copies_seed": exp["seed"]}
    if trainer["trainer"] == "consistency":
        settings["consistency_weight"] = trainer["consistency_weight"]
    if generation >= 1 and s["noisy_student"]["enabled"]:
        settings = noisy_student_settings(settings, s["noisy_student"], generation, exp["generations"])
    return settings


ENSEMBLE_BUILDERS = ("im", "model_ensemble")  # builders that use the top-n teachers; the others use the best one


def pseudo_settings(exp: dict, generation: int) -> dict:
    """Pseudo-labels of generation g are built from generation g-1's teachers with g's settings."""
    return dict(generation_settings(exp, generation)["pseudo_labels"])


def selection_settings(exp: dict, generation: int) -> dict:
    """Selection at the end of generation g keeps the top-k models as generation g+1's teachers."""
    return dict(generation_settings(exp, generation)["selection"])


def models_in_generation(exp: dict, generation: int) -> int:
    s = generation_settings(exp, generation)
    return s["stage0" if generation == 0 else "students"]["models"]


def model_seed(experiment_seed: int, generation: int, model_index: int) -> int:
    return experiment_seed * 1_000_003 + generation * 1_000 + model_index
