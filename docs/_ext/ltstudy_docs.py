"""Sphinx directives that write ltstudy's reference tables from the code itself, so the pages cannot drift from it.

- ``ltstudy-settings SECTION``: every setting of a study file's section (``study``, ``data``, ``model``, ``train``,
  ``prune``, ``seeds``, ``stability``, ``sparse_training``, ``search``, or ``run`` for the engine's top-level
  ``seed``/``device``/``plugins``), from the typed config's dataclasses and their ``setting(help=...)`` texts;
- ``ltstudy-registry NAME``: the entries of a registry (``datasets``, ``models``, ``reinits``, ``masks``, ``scopes``,
  ``controls``, ``objectives``) with their summaries;
- ``ltstudy-help COMMAND``: the ``--help`` of an ``ltstudy`` command, from the real argument parser.

A setting without a help text is an error: a new setting must say what it does before the site builds.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

ENGINE_SECTIONS = ("data", "model", "train", "prune", "seeds", "stability", "sparse_training")


def _type_name(tp: Any) -> str:
    """A setting's type as a reader writes it in TOML."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"table of {_type_name(typing.get_args(tp)[1])}"
    names = {str: "string", int: "integer", float: "number", bool: "true/false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def _help(owner: str, f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    if not text:
        raise ExtensionError(f"{owner}.{f.name} has no help text: give it setting(..., help=\"what it does\")")
    return text


def _cell(*children: nodes.Node | str) -> nodes.entry:
    para = nodes.paragraph()
    for child in children:
        para += nodes.Text(child) if isinstance(child, str) else child
    entry = nodes.entry()
    entry += para
    return entry


def _table(header: list[str], rows: list[list[nodes.entry]], widths: list[int]) -> nodes.table:
    table = nodes.table(classes=["ltstudy-generated"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for title in header:
        row += _cell(title)
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            row += cell
        body += row
    return table


def settings_rows(section: str) -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, flag, meaning) for each setting of a study file's section."""
    from ltstudy.engine.config import TicketConfig, config_fields, flag_name
    from ltstudy.study.config import SEARCHABLE, StudySection

    if section == "study":
        hints = typing.get_type_hints(StudySection)
        return [(f.name, _type_name(hints[f.name]), _default(f), "", _help("study", f))
                for f in dataclasses.fields(StudySection)]
    if section == "search":
        fields = {key: (f, tp) for key, f, tp in config_fields(TicketConfig)}
        rows = []
        for key, target in SEARCHABLE.items():
            f, tp = fields[target]
            rows.append((key, _type_name(tp), f"[{target.split('.')[0]}] {key}", "", _help(target, f)))
        return rows
    if section == "run":
        return [(key, _type_name(tp), _default(f), flag_name(key, f), _help(key, f))
                for key, f, tp in config_fields(TicketConfig) if "." not in key]
    if section not in ENGINE_SECTIONS:
        raise ExtensionError(f"ltstudy-settings: unknown section {section!r}; one of study, search, run, "
                             + ", ".join(ENGINE_SECTIONS))
    return [(key.split(".", 1)[1], _type_name(tp), _default(f), flag_name(key, f), _help(key, f))
            for key, f, tp in config_fields(TicketConfig) if key.startswith(section + ".")]


class SettingsDirective(Directive):
    """A table of a study file section's settings, generated from the typed config."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        section = self.arguments[0]
        try:
            rows = settings_rows(section)
        except ExtensionError as exc:  # (a page error, with its place, rather than a crash of the build)
            raise self.error(str(exc)) from None
        if section == "search":
            header = ["key", "type", "fixed elsewhere as", "what it sets"]
            cells = [[_cell(nodes.literal(text=k)), _cell(t), _cell(nodes.literal(text=d)), _cell(h)]
                     for k, t, d, _, h in rows]
            return [_table(header, cells, [14, 14, 20, 52])]
        with_flag = section != "study"
        header = ["key", "type", "default"] + (["flag"] if with_flag else []) + ["what it does"]
        cells = []
        for key, tp, default, flag, meaning in rows:
            row = [_cell(nodes.literal(text=key)), _cell(tp), _cell(nodes.literal(text=default))]
            if with_flag:
                row.append(_cell(nodes.literal(text=flag)))
            row.append(_cell(meaning))
            cells.append(row)
        return [_table(header, cells, [14, 12, 12, 14, 48] if with_flag else [16, 14, 16, 54])]


def registries() -> dict[str, Any]:
    from ltstudy.engine.registry import CONTROLS, DATASETS, MASKS, MODELS, REINITS, SCOPES
    from ltstudy.study.objectives import OBJECTIVES

    return {"datasets": DATASETS, "models": MODELS, "reinits": REINITS, "masks": MASKS, "scopes": SCOPES,
            "controls": CONTROLS, "objectives": OBJECTIVES}


class RegistryDirective(Directive):
    """A table of a registry's entries (name and summary; an objective's direction too)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        known = registries()
        name = self.arguments[0]
        if name not in known:
            raise self.error(f"ltstudy-registry: unknown registry {name!r}; one of {', '.join(known)}")
        registry = known[name]
        if name == "objectives":
            rows = []
            for key, entry in registry.items():
                cls = entry.load()
                spec = f"{key}:X" if cls.takes_argument else key
                rows.append([_cell(nodes.literal(text=spec)), _cell(cls.direction[:3]), _cell(cls.meaning)])
            return [_table(["objective", "direction", "what it is"], rows, [22, 10, 68])]
        rows = [[_cell(nodes.literal(text=key)), _cell(entry.summary)] for key, entry in registry.items()]
        return [_table(["name", "what it is"], rows, [22, 78])]


def command_help(command: str) -> str:
    """`ltstudy COMMAND --help` as a terminal 88 columns wide shows it (`ltstudy --help` for "ltstudy")."""
    from ltstudy.cli.parser import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        parser = build_parser()
        if command == "ltstudy":
            return parser.format_help()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        if command not in sub.choices:
            raise ExtensionError(f"ltstudy-help: no command {command!r}; one of {', '.join(sub.choices)}")
        return sub.choices[command].format_help()
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


class HelpDirective(Directive):
    """The --help text of an ltstudy command, from the real parser."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        try:
            text = command_help(self.arguments[0])
        except ExtensionError as exc:
            raise self.error(str(exc)) from None
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("ltstudy-settings", SettingsDirective)
    app.add_directive("ltstudy-registry", RegistryDirective)
    app.add_directive("ltstudy-help", HelpDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
