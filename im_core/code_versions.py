"""Which code a workflow step runs, and the version of it that its jobs' results depend on.

Every rule passes its step's code version as a param, so Snakemake reruns a step's jobs when the
code they run changes. The code a step runs is its entry module (`STEPS`) and every im_core module
that one imports, at the top or inside a function, with the packages' `__init__` modules on the
way (`closure`, read from the sources, nothing imported): a module added to a step's imports is
covered without a list kept by hand. Its digest (`sources_digest`) is a hash of those files.

The version is that digest, with one exception: `code_versions.json` (package data) records for
each step the digest of the code its version was declared for, and the version. Where the
recorded digest is the current one, the recorded version holds, so a change that was shown not
to change any result (a refactor, a comment) can keep the version and rerun nothing; any other
change of the code (an edit of yours, or a change the file was not updated for) makes the
version the new digest, and the step's jobs rerun. `im-core code-versions` shows the state;
`--update` records the current code, giving changed steps their new digest as version (they
rerun) unless `--same-results STEP ...` declares that their results stay as they were (say how
you showed it in the commit).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
RECORD = PACKAGE / "code_versions.json"

# the module each step's command runs (cli.py), relative to the package
STEPS = {
    "prepare": "steps.prepare",
    "train": "steps.train",
    "predict": "steps.predict",
    "score": "steps.evaluate",
    "select": "steps.select",
    "pseudo": "steps.pseudo",
    "compare": "steps.compare",
    "metrics": "steps.evaluate",
    "visualize": "steps.visualize",
    "segment": "steps.segment",
}


def module_file(module: str) -> Path:
    """The file of an im_core module ("data.store"), or of a package's __init__ ("data")."""
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _exists(module: str) -> bool:
    return module_file(module).is_file()


def _packages_of(module: str) -> list[str]:
    """The packages whose __init__ runs when `module` is imported ("data.store" -> ["data"])."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.lru_cache(maxsize=None)
def direct_imports(module: str) -> frozenset[str]:
    """The im_core modules `module` imports anywhere in its source (relative or as im_core.x)."""
    tree = ast.parse(module_file(module).read_text(encoding="utf-8"))
    is_package = module_file(module).name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = here[:len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "im_core":
                prefix = node.module.split(".")[1:]
            else:
                continue
            found.add(".".join(prefix))
            for alias in node.names:  # `from . import x`, `from .pkg import module`
                name = ".".join(prefix + [alias.name])
                if _exists(name):
                    found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".", 1)[1] for alias in node.names if alias.name.startswith("im_core."))
    return frozenset(m for m in found if m and _exists(m))


def closure(entry: str) -> list[str]:
    """`entry` and every im_core module it reaches by imports, with the packages on the way."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_packages_of(module))
        todo.extend(direct_imports(module))
    return sorted(seen)


def sources_digest(step: str) -> str:
    """A hash of the files of the step's closure (their paths in the package and their bytes)."""
    digest = hashlib.sha256()
    for module in closure(STEPS[step]):
        path = module_file(module)
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def recorded() -> dict:
    try:
        return json.loads(RECORD.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


@functools.lru_cache(maxsize=None)
def code_version(step: str) -> str:
    """The version of the step's code its results depend on (see the module doc)."""
    digest = sources_digest(step)
    entry = recorded().get(step, {})
    return entry["version"] if entry.get("sources") == digest else digest


def status() -> dict[str, dict]:
    """Per step: the recorded digest and version, the current digest, and whether they match."""
    record = recorded()
    out = {}
    for step in STEPS:
        digest, entry = sources_digest(step), record.get(step, {})
        out[step] = {"sources": digest, "recorded_sources": entry.get("sources"), "version": code_version(step),
                     "current": entry.get("sources") == digest}
    return out


def update(same_results: list[str] = ()) -> dict[str, dict]:
    """Record the current code of every step; a changed step gets its new digest as version
    unless it is in `same_results`. Returns the new record."""
    unknown = sorted(set(same_results) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; steps: {list(STEPS)}")
    record, new = recorded(), {}
    for step in STEPS:
        digest, entry = sources_digest(step), record.get(step, {})
        keep = entry and (entry.get("sources") == digest or step in same_results)
        new[step] = {"sources": digest, "version": entry["version"] if keep else digest}
    RECORD.write_text(json.dumps(new, indent=1) + "\n", encoding="utf-8")
    code_version.cache_clear()
    return new

