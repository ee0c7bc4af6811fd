"""What the commands share: exit codes, one-line argparse errors, and checks of paths and values (no torch)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..engine.errors import ConfigError

EXIT_USAGE = 2


def one_line(message: str) -> str:
    """A message as one line, whatever text of the user's it quotes (a name with a newline in it)."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the usage is one --help away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def check_output(path: str, flag: str, plot: bool = False, formats: set[str] | None = None) -> None:
    """A file the command will write (--json, --plot, --out): refused in one line before anything is read or made.

    Every command that writes a file checks it here, so each says the same about a folder given as a file, a
    missing folder, a name too long, a place that takes no files, or (`plot`) a format matplotlib cannot write
    (or one not in `formats`).
    """
    from ..study.paths import check_file_target, check_name_lengths, shown

    check_name_lengths(path, flag)
    parent = Path(path).resolve().parent
    if not parent.is_dir() and not Path(path).is_dir():
        raise ConfigError(f"{flag} {shown(path)}: folder {shown(str(parent))} does not exist; create it first")
    check_file_target(path, flag, devices=True)
    if plot:
        allowed = formats or plot_formats()
        suffix = Path(path).suffix.lower().lstrip(".")
        if suffix not in allowed:
            what = ("the name has no format suffix" if not suffix else f"matplotlib cannot write .{suffix} files"
                    if formats is None else f"this figure is drawn as {'/'.join(sorted(allowed)).upper()} only")
            fix = (f"end it with .png, .pdf or .svg (or one of {', '.join(sorted(allowed))})" if len(allowed) > 1
                   else f"end it with .{next(iter(allowed))}")
            raise ConfigError(f"{flag} {shown(path)}: {what}; {fix}")


def write_output(path: str, text: str) -> None:
    """Write a command's output file; on a full disk, one line (DiskFull) and no half-written file left."""
    from ..engine.errors import DiskFull

    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        try:
            DiskFull.check(exc, path)
        except DiskFull:
            Path(path).unlink(missing_ok=True)
            raise
        raise


def plot_formats() -> set[str]:
    """The file formats matplotlib writes (its Agg canvas: the one every plot here is drawn on)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return set(FigureCanvasAgg.get_supported_filetypes())


def check_folder(path: str, flag: str = "--out") -> None:
    """A folder for saved tickets: creatable, and not holding another run's rounds (they would be mixed)."""
    from ..study.paths import check_can_create, check_name_lengths, shown

    check_name_lengths(path, flag)
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {shown(path)} is a file; give a folder for the tickets")
    check_can_create(p / "round_00" if p.is_dir() else p, flag)
    held = sorted(q.name for q in p.glob("round_*") if (q / "ticket.json").is_file()) if p.is_dir() else []
    if held:
        raise ConfigError(f"{path} already holds another run's tickets ({held[0]}"
                          f"{f' .. {held[-1]}' if len(held) > 1 else ''}); give an empty or new folder, or remove "
                          "them first")


def check_bins(n: int | None) -> None:
    if n is not None and n < 2:
        raise ConfigError(f"--bins must be >= 2 (one bin compares nothing), got {n}")


def check_density(x: float) -> None:
    if not 0.0 < x <= 1.0:
        raise ConfigError(f"--density must be in (0, 1], got {x}")


def settings_list(text: str, option: str, searched: list[str] | None = None) -> list[str]:
    """The settings named by --by: known, each once, and (given the study's `searched` settings) searched."""
    from ..engine.coercion import unknown_key_message
    from ..study.config import SEARCHABLE

    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"{option} needs at least one setting, e.g. {option} prune_rate,rewind_iter")
    for k in keys:
        if k not in SEARCHABLE:
            raise ConfigError(f"{option}: " + unknown_key_message(k, list(SEARCHABLE), "search"))
    twice = [k for i, k in enumerate(keys) if k in keys[:i]]
    if twice:
        raise ConfigError(f"{option} names {twice[0]} twice; give each setting once")
    if searched is not None:
        fixed = [k for k in keys if k not in searched]
        if fixed:
            choice = f"compare {' or '.join(searched)}" if searched else "[search] fixes every setting"
            raise ConfigError(f"{option}: {fixed[0]} is not searched in this study, so every trial has the same "
                              f"value; {choice}")
    return keys


def load_study_file(args: argparse.Namespace):
    from ..study.config import check_study_name, load_study

    if getattr(args, "study_name", None) is not None:
        check_study_name(args.study_name, "--study-name")
    return load_study(args.study_file)


def command_line(command: str, args: argparse.Namespace, flags: tuple[str, ...]) -> str:
    """`ltstudy COMMAND STUDY.toml` with those of `flags` (which COMMAND takes) that this command was given, so a
    hint names the study the user ran (--study-name, --storage, --tracking-uri), quoted for a shell; a password
    in a URL is shown as ***."""
    from ..study.storage import redact

    parts = ["ltstudy", command, args.study_file]
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            parts += [flag, redact(value)]
    return " ".join(shlex.quote(str(p)) for p in parts)


def fmt(v: float) -> str:
    return f"{v:.4g}"


def setting_text(v) -> str:
    """A setting as a table shows it: a float from a searched range to 4 significant digits (0.4014, not
    0.40138168803582197); anything else as it is. (The JSON outputs keep every digit.)"""
    return fmt(v) if isinstance(v, float) else str(v)


def state_counts(trials) -> str:
    """'3 COMPLETE, 1 FAIL'."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"
