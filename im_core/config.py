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
        for name in config["default_experiments"]:
            if name not in config["experiments"]:
                errors.append(f"{where}: default_experiments: {name!r} is not an experiment; known: {sorted(config['experiments'])}")
    if errors:
        raise InputError("invalid configuration:\n  " + "\n  ".join(errors))
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
        if pl["teachers"] > sel["top_k"]:
            errors.append(f"{where}: {key}.pseudo_labels.teachers: {pl['teachers']} teachers but selection.top_k keeps only {sel['top_k']}")
    return errors


def _deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _merged(exp: dict, generation: int) -> dict:
    resolved = {k: v for k, v in exp.items() if k != "overrides"}
    for o in exp["overrides"]:
        if o["from_generation"] <= generation:
            resolved = _deep_merge(resolved, {k: v for k, v in o.items() if k != "from_generation"})
    return resolved


def generation_settings(exp: dict, generation: int) -> dict:
    """The experiment's settings in force for `generation` (overrides with from_generation <= g)."""
    return _merged(exp, generation)


def train_settings(exp: dict, generation: int, model_index: int) -> dict:
    s = generation_settings(exp, generation)
    return {**s["train"], "model": s["model"], "seed": model_seed(exp["seed"], generation, model_index)}


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
