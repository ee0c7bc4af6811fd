"""What the commands share: exit codes, one-line argparse errors, and checks of paths and values (no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.errors import ConfigError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the usage is one --help away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_writable(path: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {parent} does not exist")


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


def check_folder(path: str) -> None:
    """A folder for saved tickets: creatable, and not holding another run's rounds (they would be mixed)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{path} is a file; give a folder for the tickets")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {parent} does not exist")
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


def settings_list(text: str, option: str) -> list[str]:
    from ..engine.coercion import unknown_key_message
    from ..study.config import SEARCHABLE

    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"{option} needs at least one setting, e.g. {option} prune_rate,rewind_iter")
    for k in keys:
        if k not in SEARCHABLE:
            raise ConfigError(f"{option}: " + unknown_key_message(k, list(SEARCHABLE), "search"))
    return keys


def load_study_file(args: argparse.Namespace):
    from ..study.config import load_study

    return load_study(args.study_file)


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
