"""Validate the workflow config: the schema (defaults filled in, every bad key named), the data
sets (config/datasets.py) and the checks across keys (config/checks.py)."""
from __future__ import annotations

import copy
import logging

from ..errors import InputError
from .checks import check_experiment, check_start, expand_comparisons, name_problems, segment_problems
from .datasets import dataset_problems, resolve_dataset
from .schema import load_schema, messages, validator_with_defaults


def validate_config(config: dict, schema: dict | None = None, where: str = "config") -> dict:
    """Return a validated copy of `config` with defaults filled in; raise InputError otherwise."""
    schema = schema or load_schema()
    config = copy.deepcopy(config)
    pin_numeric_path(config)
    if isinstance(config.get("compute"), dict) and "time_numeric_paths" in config["compute"]:
        logging.getLogger("im_core.config").warning(
            "%s: compute.time_numeric_paths is no longer used: no job follows a timing (it made a rerun's numbers "
            "depend on the machine's load); the path is a rule of the CPU (compute.numeric_path pins it; "
            "`im-core time-paths` says whether another path is clearly faster here)", where)
    names = name_problems(config, where)  # reported with whatever else is wrong
    errors = messages(validator_with_defaults(schema), config, where)
    if not errors:
        for name, ds in config["datasets"].items():
            try:
                config["datasets"][name] = ds = resolve_dataset(name, ds, where)
            except InputError as e:
                errors.append(str(e))
                continue
            errors += dataset_problems(ds, where)
        if errors:
            raise InputError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(names + errors)))
        experiment_validator = validator_with_defaults({"$defs": schema["$defs"], "$ref": "#/$defs/experiment"})
        for name, exp in config["experiments"].items():
            errors += check_experiment(name, exp, config, experiment_validator, where)
        if not errors:
            errors += expand_comparisons(config, experiment_validator, where)
        for name, exp in config["experiments"].items():
            errors += check_start(name, exp, config["experiments"], where)
        for name in config["default_experiments"]:
            if name not in config["experiments"]:
                errors.append(f"{where}: default_experiments: {name!r} is not an experiment; known: {sorted(config['experiments'])}")
        errors += segment_problems(config, where)
    errors = names + errors
    if errors:
        raise InputError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return config


def pin_numeric_path(config: dict) -> None:
    """compute.numeric_path's keys become the default of every experiment's train.precision and
    train.channels_last (before the schema's defaults, so an experiment's own value wins)."""
    compute = config.get("compute")
    pin = compute.get("numeric_path") if isinstance(compute, dict) else None
    experiments = config.get("experiments")
    if not isinstance(pin, dict) or not isinstance(experiments, dict):
        return
    for exp in experiments.values():
        if isinstance(exp, dict) and isinstance(exp.setdefault("train", {}), dict):
            for key in ("precision", "channels_last"):
                if key in pin:
                    exp["train"].setdefault(key, pin[key])
