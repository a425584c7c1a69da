"""No import cycle in cep, between modules or between packages, counting imports inside functions too.

A cycle hidden in a function-level import still ties the modules together (neither can be read,
tested or moved alone), so the walk reads every import statement of every module's syntax tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cep"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each cep module -> the cep modules it imports (anywhere in its body)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def package_of(module: str) -> str:
    """cep.sweep.driver -> cep.sweep; a top-level module (cep.train) is a node of its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back():
    graph = imports()
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}  # a package's __init__
    assert cycles(graph) == []


def test_no_package_imports_itself_back():
    packages: dict[str, set[str]] = {}
    for module, deps in imports().items():
        if module == "cep":
            continue
        packages.setdefault(package_of(module), set()).update(package_of(d) for d in deps if d != "cep")
    packages = {p: deps - {p} for p, deps in packages.items()}
    assert cycles(packages) == []


def test_the_experiment_layout_has_one_home():
    """sweep, aggregate and the runner name the experiment folder's parts from cep.layout."""
    graph = imports()
    for user in ("cep.sweep.store", "cep.aggregate.read", "cep.runner"):
        assert "cep.layout" in graph[user], user
    aggregate = [d for m, deps in graph.items() if m.startswith("cep.aggregate") for d in deps]
    assert not [d for d in aggregate if d.startswith("cep.sweep")]
