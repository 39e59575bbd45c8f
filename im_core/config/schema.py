"""The config's JSON schema (config.schema.yaml, the documentation of every key and the one
source of defaults) and reading YAML: a validator that fills in defaults, messages that name
the key, YAML syntax errors as file:line."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..builders import BUILDERS
from ..errors import InputError
from ..methods.presets import METHODS
from ..trainers import TRAINERS

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


def validator_with_defaults(schema: dict) -> jsonschema.protocols.Validator:
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


def messages(validator, instance: Any, where: str, prefix: tuple = ()) -> list[str]:
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


def load_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error becomes an InputError naming file:line:column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read this file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file ({e}); save it as UTF-8") from e
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = str(e.problem)
        if e.context:
            started = f" at line {e.context_mark.line + 1}" if e.context_mark and e.context_mark is not mark else ""
            what = f"{e.context}{started}: {what}"
        raise InputError(f"{where}: YAML syntax error: {what}; fix the file at that line") from e
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from e


def load_config_file(path: str | Path) -> dict:
    """The configuration in a YAML file (not yet validated: pass it to `validate_config`)."""
    config = load_yaml_file(path)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(f"{path}: the top level must be a mapping with datasets: and experiments:, "
                         f"got a {type(config).__name__}")
    return config


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema, with the enums of methods, trainers and builders filled in from their
    registries (methods/presets.py, trainers/, builders/)."""
    schema = load_yaml_file(path)
    defs = schema.get("$defs", {})
    comparison = defs.get("comparison", {}).get("properties", {})
    if "methods" in comparison:
        comparison["methods"]["items"]["enum"] = list(METHODS)
        comparison["variants"]["additionalProperties"]["properties"]["method"]["enum"] = list(METHODS)
    if "trainer" in defs.get("trainer", {}).get("properties", {}):
        defs["trainer"]["properties"]["trainer"]["enum"] = list(TRAINERS)
    if "builder" in defs.get("pseudo_labels", {}).get("properties", {}):
        defs["pseudo_labels"]["properties"]["builder"]["enum"] = list(BUILDERS)
    return schema


def defaults(definition: str, schema: dict | None = None) -> dict:
    """Every default of one of the schema's $defs ("train", "trainer", "pseudo_labels", ...): an
    empty object validated against it."""
    schema = schema or load_schema()
    filled: dict = {}
    validator_with_defaults({"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}).validate(filled)
    return filled
