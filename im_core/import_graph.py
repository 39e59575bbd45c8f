"""The package's import graph, read from the sources (code_versions.direct_imports): between
modules, or between the top-level rooms (data, models, builders, ...), and its cycles
(`im-core code-versions --graph`). Kept apart from code_versions.py, which the training job's
fingerprint imports: a change here reruns no job."""
from __future__ import annotations

from .code_versions import PACKAGE, direct_imports


def all_modules() -> list[str]:
    """Every module of the package ("data.store"; packages by their name)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts:
            found.append(".".join(parts))
    return found


def import_graph(packages: bool = False) -> dict[str, set[str]]:
    """Module -> the im_core modules it imports (anywhere in it); with `packages`, the same
    between the top-level packages and modules (data, models, ..., settings)."""
    graph = {m: set(direct_imports(m)) - {m} for m in all_modules()}
    if not packages:
        return graph
    top = lambda m: m.split(".")[0]  # noqa: E731
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(top(module), set()).update(top(t) for t in targets if top(t) != top(module))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a graph (each once, as a path that returns to its start)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found
