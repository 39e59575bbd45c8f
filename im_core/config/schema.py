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

    # an integer is an int: JSON Schema counts 2.0 as one, but the code that reads it would not
    types = base.TYPE_CHECKER.redefine(
        "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool))
    return jsonschema.validators.extend(base, {"properties": set_defaults}, type_checker=types)(schema)


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


class DuplicateKeyError(InputError):
    """A key given twice in one mapping of a YAML file (PyYAML keeps the last one silently)."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, as `file:line: key 'x' given
    twice (first at line n)`. Anchors, aliases and merge keys (`<<: *x`) work as in SafeLoader: a
    key from a merged mapping that the mapping itself sets again is an override, not a duplicate."""

    def __init__(self, stream, where: str | None = None):
        super().__init__(stream)
        self.where = where or self.name
        self._checked: set[int] = set()

    def flatten_mapping(self, node):
        # called for every mapping before its merge keys are expanded (and for each merged one)
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._check_duplicates(node)
        super().flatten_mapping(node)

    def _check_duplicates(self, node) -> None:
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader's own error (unhashable key)
            line = key_node.start_mark.line + 1
            if key in first:
                raise DuplicateKeyError(f"{self.where}:{line}: key {key!r} given twice (first at line {first[key]})")
            first[key] = line


def strict_yaml_load(text: str, where: str) -> Any:
    """yaml.safe_load, refusing duplicate keys (StrictLoader; `where` names the file in messages)."""
    loader = StrictLoader(text, where)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error becomes an InputError naming file:line:column, a key
    given twice in one mapping a DuplicateKeyError (an InputError) naming file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read this file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file ({e}); save it as UTF-8") from e
    try:
        return strict_yaml_load(text, str(path))
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
