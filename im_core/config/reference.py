"""The configuration reference (docs/configuration.md), written from the schema's descriptions,
types and defaults, so that it says what the validator does (`im-core config-reference`)."""
from __future__ import annotations

import json

from .schema import load_schema

INTRO = """# Configuration reference

Written by `im-core config-reference --out docs/configuration.md` from the schema
(`im_core/config/config.schema.yaml`, also at `workflow/schemas/config.schema.yaml`), which
validates `config.yaml` when Snakemake starts and fills in every default listed here. Do not edit
this file by hand; edit the schema's descriptions and write it again (a test checks that it is
current).

Sections: the top level, then each definition (`$defs`) the top level and the experiments use.
"""


def _type(spec: dict) -> str:
    if "enum" in spec:
        return " or ".join(json.dumps(v) for v in spec["enum"])
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name})"
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    kind = spec.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    out = " or ".join(k for k in kinds if k) or "any"
    if "array" in kinds and "items" in spec:
        out = f"list of {_type(spec['items'])}"
    if "object" in kinds and "additionalProperties" in spec and isinstance(spec["additionalProperties"], dict):
        out = f"name → {_type(spec['additionalProperties'])}"
    return out


def _limits(spec: dict) -> str:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in spec:
            parts.append(f"{sign} {spec[key]}")
    for key, what in (("minItems", "at least {} items"), ("maxItems", "at most {} items")):
        if key in spec:
            parts.append(what.format(spec[key]))
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _rows(properties: dict, prefix: str = "") -> list[str]:
    rows = []
    for name, spec in properties.items():
        key = f"{prefix}{name}"
        default = json.dumps(spec["default"]) if "default" in spec else ""
        limits = _limits(spec)
        description = spec.get("description", "") + (f" ({limits})" if limits else "")
        rows.append(f"| `{key}` | {_cell(_type(spec))} | {_cell(default)} | {_cell(description)} |")
        nested = spec.get("properties")
        if nested and spec.get("type") == "object":
            rows += _rows(nested, f"{key}.")
    return rows


def _section(title: str, spec: dict, level: int = 2) -> str:
    lines = [f"{'#' * level} {title}", ""]
    if spec.get("description"):
        lines += [" ".join(spec["description"].split()), ""]
    lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
    lines += _rows(spec.get("properties", {}))
    return "\n".join(lines) + "\n"


def reference_markdown(schema: dict | None = None) -> str:
    """The whole reference as Markdown (enums as the registries fill them in)."""
    schema = schema or load_schema()
    parts = [INTRO, _section("Top level", schema)]
    for name, spec in schema.get("$defs", {}).items():
        if "properties" in spec:
            parts.append(_section(name, spec))
    return "\n".join(parts)
