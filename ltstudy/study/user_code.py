"""The code of yours a study depends on: recorded when the study is created, checked by every later run.

A study's trials are comparable only if one code produced them: a plugin model
edited between two runs would show the difference between two architectures as
seed spread. So a study records a digest of every module of yours it uses, and
a run or a worker whose code differs is refused in one line naming each changed
module, as a changed setting is (a new study, with --study-name, takes the new code).

"Every module of yours it uses" is
- the module that defines each registered entry the study names: its dataset
  and model, every re-init, mask rule and scope its [search] can choose, its
  controls' methods and its objectives (ltstudy's own are left out: they are
  the package, not the study);
- each module listed in [study] plugins (importing it may register or change anything);
- and every module these import, directly or not, that has a source file outside
  ltstudy, the standard library and the installed packages: a model built from
  blocks in a file beside it changes when the blocks do; an upgrade of torch does
  not make the study's code another.

Digests are of the syntax tree without docstrings and comments (hashing.source_digest,
as the cache keys), so rewording a comment keeps the study. They are keyed by module
name, not path, so workers on other machines with the same files agree.
"""

from __future__ import annotations

import ast
import importlib.util
import site
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ..engine.hashing import module_digest, source_digest
from ..engine.registry import AT_INIT, CONTROLS, DATASETS, MASKS, MODELS, REINITS, SCOPES, Entry, load_plugins
from .config import StudyConfig

_PACKAGE = Path(__file__).resolve().parents[1]  # ltstudy/


def used_entries(cfg: StudyConfig) -> list[Entry]:
    """Every registered entry the study's trials can use."""
    from .objectives import OBJECTIVES

    b = cfg.base
    found = [DATASETS.get(b.data.name), MODELS.get(b.model.name)]
    for key, registry in (("reinit", REINITS), ("mask", MASKS), ("scope", SCOPES)):
        param = cfg.search.get(key)
        found += [registry.get(v) for v in (param.extremes() if param is not None else [getattr(b.prune, key)])]
    for name in cfg.study.controls:
        control = CONTROLS.get(name)  # (a method pruning at initialisation: its AT_INIT entry is the code)
        found += [control, *([AT_INIT.get(control.rule)] if "rule" in control.meta else [])]
    found += [OBJECTIVES.get(spec.partition(":")[0]) for spec in cfg.study.objectives]
    unique: dict[int, Entry] = {}
    for entry in found:
        unique.setdefault(id(entry), entry)
    return list(unique.values())


def load_entries(cfg: StudyConfig) -> None:
    """Import every entry the study uses, so one that cannot load is named on its own, before any search is built."""
    for entry in used_entries(cfg):
        entry.load()


def code_digests(cfg: StudyConfig) -> dict[str, str]:
    """{module name: digest} of every module of yours the study uses (see the module docstring)."""
    digests: dict[str, str] = {}
    roots: list[ModuleType] = []
    for entry in used_entries(cfg):
        if isinstance(entry.target, str) and entry.target.startswith("ltstudy."):
            continue  # (the package's own, not loaded for this)
        obj = entry.load()
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if module is None or _is_package(module):
            continue
        if _file(module) is None:  # (defined where there is no file, a notebook: its own source)
            digests[module.__name__] = module_digest(obj)
        else:
            roots.append(module)
    roots += [sys.modules[name] for name in load_plugins(cfg.study.plugins) if name in sys.modules]
    for module in _closure(roots):
        digests[module.__name__] = source_digest(_file(module).read_text(encoding="utf-8"), str(_file(module)))
    return dict(sorted(digests.items()))


def code_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """'module mymodels changed'-style lines for every module whose code differs."""
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            lines.append(f"module {name} is no longer used")
        elif name not in old:
            lines.append(f"module {name} is new")
        elif old[name] != new[name]:
            lines.append(f"module {name} changed")
    return lines


# --------------------------------------------------------------------------- modules


def _file(module: ModuleType) -> Path | None:
    name = getattr(module, "__file__", None)
    if not name or not name.endswith(".py"):
        return None
    path = Path(name).resolve()
    return path if path.is_file() else None


def _is_package(module: ModuleType) -> bool:
    return module.__name__ == "ltstudy" or module.__name__.startswith("ltstudy.")


def _installed() -> list[Path]:
    """The standard library's folders and every site-packages folder (a user's own `pip install --user` too)."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= set(getattr(site, "getsitepackages", list)()) | {site.getusersitepackages()}
    return [Path(r).resolve() for r in roots if r]


def _is_yours(module: ModuleType, installed: list[Path]) -> bool:
    path = _file(module)
    if path is None or _is_package(module):
        return False
    return not any(path.is_relative_to(root) for root in [*installed, _PACKAGE])


def _closure(roots: list[ModuleType]) -> list[ModuleType]:
    """The roots and every module of yours they import, directly or not."""
    installed = _installed()
    seen: dict[str, ModuleType] = {}
    stack = [m for m in roots if _file(m) is not None]
    while stack:
        module = stack.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = module
        for name in _imports(module):
            dep = sys.modules.get(name)
            if dep is not None and dep.__name__ not in seen and _is_yours(dep, installed):
                stack.append(dep)
    return list(seen.values())


def _imports(module: ModuleType) -> Iterator[str]:
    """The names of the modules a module's source imports (anywhere in it: a function's own imports too)."""
    path = _file(module)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))  # type: ignore[union-attr]
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    package: Any = module.__package__ or ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                    else node.module or ""
            except ImportError:
                continue
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
