"""What a registered class or builder must be: checked when it is registered, or first loaded, before anything runs.

A method (re-init strategy, mask rule, pruning scope, objective) is a subclass
of its kind's base class, an abstract base class: every abstract method must be
implemented, and the class's own declarations may ask for more (`missing`: a
ticket-finding mask rule implements `prune`, a control names its `path`). A
model or a dataset is a builder: a callable that takes the registry's
arguments, registered with metadata of the right shape. What is wrong is one
line naming the entry, the class and what it lacks (ConfigError: exit 2), where
Python would say it mid-run, or never.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

Check = Callable[[str, Any, dict[str, Any]], None]  # (name, target, metadata) -> None, or ConfigError


class Contract(ABC):  # noqa: B024 (the root: each kind's base class declares its abstract methods)
    """The root of every method base class: `missing()` says what a subclass lacks to be used."""

    @classmethod
    def missing(cls) -> list[str]:
        """What the class lacks: its abstract methods, and what its declarations require (subclasses add theirs)."""
        return [f"implement {name}" for name in sorted(getattr(cls, "__abstractmethods__", ()))]


def overrides(cls: type, base: type, name: str) -> bool:
    """Whether `cls` (or a class between it and `base`) defines `name` anew (as the classes' own dicts hold it: a
    classmethod read through `getattr` is a new bound method each time)."""
    return inspect.getattr_static(cls, name, None) is not inspect.getattr_static(base, name, None)


def _named(obj: Any) -> str:
    if isinstance(obj, type) or callable(obj):
        return f"{getattr(obj, '__qualname__', repr(obj))} ({getattr(obj, '__module__', '?')})"
    return repr(obj)


def method_class(kind: str, base: str, elsewhere: dict[str, str] | None = None) -> Check:
    """The check of a registry whose entries are subclasses of `base` ("module:Class", imported when first used).

    `elsewhere` maps other base classes ("module:Class") to the registry their subclasses belong in: a class
    registered in the wrong one is told where it goes.
    """
    resolved: dict[str, type] = {}

    def load(path: str) -> type:
        if path not in resolved:
            module, _, attr = path.partition(":")
            resolved[path] = getattr(importlib.import_module(module), attr)
        return resolved[path]

    def check(name: str, target: Any, meta: dict[str, Any]) -> None:
        cls = load(base)
        if not (isinstance(target, type) and issubclass(target, cls)):
            for other, registry in (elsewhere or {}).items():
                if isinstance(target, type) and issubclass(target, load(other)):
                    raise ConfigError(f"{kind} '{name}' is {_named(target)}, a {load(other).__name__}: register it "
                                      f"in {registry}, not in the {kind}s")
            raise ConfigError(f"{kind} '{name}' is {_named(target)}, not a subclass of {cls.__name__} "
                              f"({cls.__module__}); derive it from {cls.__name__}")
        missing = target.missing()
        if missing:
            raise ConfigError(f"{kind} '{name}': class {_named(target)} is incomplete: it must "
                              f"{'; and '.join(missing)} ({cls.__name__}, {cls.__module__}, says what each is)")

    return check


def builder(kind: str, arguments: tuple[str, ...], meta_rules: dict[str, tuple[Callable[[Any], bool], str]]) -> Check:
    """The check of a registry of builders: a callable taking `arguments`, with metadata that each rule accepts
    (name -> (test, what it must be))."""

    def check(name: str, target: Any, meta: dict[str, Any]) -> None:
        for key, (test, what) in meta_rules.items():
            if key in meta and not _holds(test, meta[key]):
                raise ConfigError(f"{kind} '{name}' is registered with {key}={meta[key]!r}; it must be {what}")
        if not callable(target):
            raise ConfigError(f"{kind} '{name}' is {_named(target)}, not a callable; register a function (or class) "
                              f"that takes ({', '.join(arguments)})")
        try:
            inspect.signature(target).bind(*arguments)
        except TypeError:
            raise ConfigError(f"{kind} '{name}': {_named(target)} cannot be called with ({', '.join(arguments)}); "
                              "give it those parameters") from None
        except ValueError:  # (a builtin without a signature Python can read: trusted)
            pass

    return check


def _holds(test: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(test(value))
    except Exception:
        return False


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
