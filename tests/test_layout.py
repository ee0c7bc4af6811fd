"""The package's shape: no import circle, the engine free of optuna and mlflow, and modules of one concept."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ltstudy"
MAX_LINES = 500
REASON = "longer than 500 lines because"  # a module may say why at its top


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path, known: set[str]) -> set[str]:
    """The ltstudy modules a module imports, anywhere in it (functions too), outside `if TYPE_CHECKING:`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)  # `from . import x` of a submodule x
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_there_is_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_engine_imports_neither_optuna_nor_mlflow_anywhere():
    offenders = []
    for path in (PACKAGE / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("optuna", "mlflow")]
    assert offenders == []


def test_a_module_holds_one_concept_of_at_most_500_lines_or_says_why():
    long = {name: path.read_text().count("\n") for name, path in modules().items()}
    assert {name: n for name, n in long.items() if n > MAX_LINES and REASON not in modules()[name].read_text()[:2000]
            } == {}


ADAPTERS = {"ltstudy.study.optuna_api", "ltstudy.study.mlflow_api"}  # (each says why no public API serves)
LIBRARIES = ("optuna", "mlflow", "optuna_dashboard")


def _private_library_paths(path: Path) -> list[str]:
    """Modules of Optuna, MLflow or optuna-dashboard with a private part that `path` imports or names in a string."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # (code run by `python -c`)
            names = [word.split(":")[0] for word in node.value.replace(";", " ").split()]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in LIBRARIES and any(p.startswith("_") for p in n.split("."))]
    return found


def test_private_apis_of_optuna_mlflow_and_optuna_dashboard_are_used_only_in_their_adapters():
    offenders = {name: _private_library_paths(path) for name, path in modules().items() if name not in ADAPTERS}
    assert {name: paths for name, paths in offenders.items() if paths} == {}
    assert all(_private_library_paths(modules()[name]) for name in ADAPTERS)  # (the check sees what it looks for)
