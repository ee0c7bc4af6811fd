"""One hashing helper for every key: configs, cache entries, data, settings, and code.

`digest(*parts)` hashes JSON-able parts in one canonical form (sorted keys,
no spaces, anything else by `str`). `identity(config)` is what a config is, for
every hash and key made of one (open_lth's rule): each setting that is not at
its default, and none whose field says `identity=False` (where the data is read
from, which device, which plugin files: they do not change what is computed; the
cache keys add the data's digest, the device's type and the code). So a new
setting, at its default, changes no old hash, key or study. `code_digest` hashes Python source by its
syntax tree with docstrings and `help=` texts left out, so rewording a comment,
a docstring or a `--help` string keeps every cache entry, and a change to what
the code computes does not. `engine_digest()` covers every module of the
engine, subpackages included; `module_digest(obj)` covers the module that
defines a user's registered builder, so editing a plugin never returns the
old plugin's numbers.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def canonical(obj: Any) -> str:
    """The JSON text every key is hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(*parts: Any, size: int = 32) -> str:
    """Hex SHA-256 of the parts' canonical JSON, cut to `size` digits."""
    return hashlib.sha256(canonical(parts if len(parts) != 1 else parts[0]).encode()).hexdigest()[:size]


def bytes_digest(chunks: Iterable[bytes], size: int = 32) -> str:
    """Hex SHA-256 of raw bytes (array contents), cut to `size` digits."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:size]


# --------------------------------------------------------------------------- configs


def default_of(f: dataclasses.Field) -> Any:
    """A dataclass field's default (dataclasses.MISSING for a field without one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def _at_default(f: dataclasses.Field, value: Any) -> bool:
    """Compared as their JSON (a stored record's values are): 1 and 1.0, or True and 1, are not the same setting."""
    return canonical(value) == canonical(default_of(f))


def identity(config: Any) -> dict[str, Any]:
    """A config dataclass's identity: its settings not at their default and not marked `identity=False`, nested
    configs by the same rule (one with nothing left is left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if not f.metadata.get("identity", True):
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            if inner := identity(value):
                out[f.name] = inner
        elif not _at_default(f, value):
            out[f.name] = value
    return out


def stored_identity(cls: type, record: dict[str, Any]) -> dict[str, Any]:
    """A record of `cls`'s settings (a stored identity, or every field, as older records hold them) under the rule
    of `identity`; a key that is no field of `cls` (a setting since removed) is kept, to be seen as a change."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in record.items():
        f = fields.get(key)
        if f is not None and (not f.metadata.get("identity", True) or _at_default(f, value)):
            continue
        out[key] = value
    return out


# --------------------------------------------------------------------------- code


class _Strip(ast.NodeTransformer):
    """Drop what documents code without changing what it computes: docstrings and help= texts."""

    def _body(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _body

    def visit_keyword(self, node: ast.keyword):
        if node.arg == "help":
            return ast.keyword(arg="help", value=ast.Constant(value=""))
        return self.generic_visit(node)


def source_digest(source: str, name: str = "<source>") -> str:
    """Digest of Python source by its syntax tree, without docstrings, comments or help= texts."""
    try:
        tree = _Strip().visit(ast.parse(source, name))
    except SyntaxError:  # not Python we can parse: the text itself
        return bytes_digest([source.encode()])
    return bytes_digest([ast.dump(tree, annotate_fields=False).encode()])


def files_digest(paths: Iterable[Path], root: Path) -> str:
    """Digest of several source files, each named by its path relative to `root`."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(source_digest(path.read_text(encoding="utf-8"), str(path)).encode() + b"\0")
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    """The engine's code, every module of it (subpackages too): part of every cache key."""
    here = Path(__file__).resolve().parent
    return files_digest(here.rglob("*.py"), here)


@functools.lru_cache(maxsize=256)
def _module_file_digest(path: str, mtime_ns: int) -> str:
    return source_digest(Path(path).read_text(encoding="utf-8"), path)


def module_digest(obj: Any) -> str:
    """The code of the module that defines `obj` (a user's builder or class); "" for the engine's own."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or module.__name__.startswith(__package__ + ".") or module.__name__ == __package__:
        return ""  # the engine's code is in engine_digest()
    try:
        path = Path(inspect.getfile(module))
    except (TypeError, OSError):  # a module with no file (defined in a notebook, say): its source if it has one
        try:
            return source_digest(inspect.getsource(obj))
        except (TypeError, OSError):
            return digest(getattr(obj, "__qualname__", repr(obj)))
    return _module_file_digest(str(path), path.stat().st_mtime_ns)
