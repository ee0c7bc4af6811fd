"""Plain values (TOML, CLI strings, dotted overrides) made into the typed config's dataclasses, with one-line errors.

`build(cls, data, where)` checks every key against the dataclass's fields (an
unknown key gets the closest name) and `coerce` each value to the field's type:
CLI strings and TOML values of one setting become one value, so they hash alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal

from .errors import ConfigError


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], list(fields), where))
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(value, hints[name], f"{where}.{name}" if where != "config" else name)
    return cls(**kwargs)


def unknown_key_message(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    place = "" if where == "config" else f" in [{where}]"
    return f"unknown key '{key}'{place}{hint}"


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if int in args and isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
            return int(value)  # CLI '500' and TOML 500 must hash alike
        for arg in args:  # exact type first, so 500 stays an int in `int | str`
            if isinstance(value, arg) and not (arg is int and isinstance(value, bool)):
                return value
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} has the wrong type: {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if isinstance(value, str):  # CLI form: a=1,b=2
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"{where} must look like name=value,name=value, got {value!r}")
            names = [k.strip() for k, _ in pairs]
            twice = sorted({k for k in names if names.count(k) > 1})
            if twice:
                raise ConfigError(f"{where} sets {twice[0]} twice in {value!r}; give each name once")
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return {str(k): coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value!r}")
            return float(value)
        if isinstance(value, str):
            try:
                return coerce(float(value), float, where)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {where}")  # a bug, not user input


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.rpartition(".")
    target = data
    for part in filter(None, section.split(".")):
        target = target.setdefault(part, {})
    target[name] = value
