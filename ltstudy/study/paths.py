"""Paths a command will create or write, checked in one line before anything is made.

Every command that writes a file or makes a folder (the stores, the cache, --json, --plot, --out,
--save) goes through `check_can_create`, so a name the file system cannot hold, a folder in the
place of a file, or a folder that takes no new entries (/proc, a read-only mount: os.access says
yes to root there) is refused the same way everywhere.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ..engine.errors import ConfigError

NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS)
PATH_MAX = 4095  # bytes in a whole path


def shown(text: str, width: int = 80) -> str:
    """`text` cut to about `width` characters for a one-line message (a 5,000-character path is not read)."""
    return text if len(text) <= width else f"{text[:width // 2]}…{text[-width // 4:]} ({len(text):,} characters)"


def check_name_lengths(path: str | os.PathLike, what: str) -> None:
    """Refuse a path the file system cannot hold (ENAMETOOLONG)."""
    text = os.fspath(path)
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ConfigError(f"{what} {shown(text)}: the name {shown(part, 40)} is {len(os.fsencode(part)):,} bytes "
                              f"long; a file or folder name holds at most {NAME_MAX}")
    if len(os.fsencode(os.path.abspath(text))) > PATH_MAX:
        raise ConfigError(f"{what} {shown(text)} is longer than the {PATH_MAX} bytes a path may have")


def nearest_folder(path: Path) -> Path:
    """The nearest existing ancestor of `path` (the folder new entries would go into)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_can_create(path: str | os.PathLike, what: str) -> None:
    """`path` (a file, or a folder to make, with its missing parents) can be created: try it in its nearest folder."""
    check_name_lengths(path, what)
    parent = nearest_folder(Path(path))
    if not parent.is_dir():
        raise ConfigError(f"{what} {shown(os.fspath(path))} cannot be created: {shown(str(parent))} is a file, not a "
                          "writable folder")
    try:  # (os.access says yes to root everywhere, /proc and read-only mounts included: try it)
        os.rmdir(tempfile.mkdtemp(prefix=".ltstudy-check-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{what} {shown(os.fspath(path))} cannot be created: {shown(str(parent))} is not a writable "
                          f"folder ({exc.strerror or exc})") from None


def check_file_target(path: str | os.PathLike, what: str, devices: bool = False) -> None:
    """A file a store or a command will write: not a folder, not a pipe or socket (nor a device, unless `devices`:
    an output may go to /dev/stdout, a store may not), and creatable if absent."""
    check_name_lengths(path, what)
    p = Path(path)
    if p.is_dir() or os.fspath(path).endswith(("/", os.sep)):
        raise ConfigError(f"{what} {shown(os.fspath(path))} is a folder; give a file name")
    if p.exists() and not p.is_file() and not (devices and stat.S_ISCHR(p.stat().st_mode)):
        raise ConfigError(f"{what} {shown(os.fspath(path))} is not a regular file ({_kind(p)}); give the path of a "
                          "file")
    check_can_create(p, what)


def _kind(p: Path) -> str:
    mode = p.stat().st_mode
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a pipe" if stat.S_ISFIFO(mode) else \
        "a socket" if stat.S_ISSOCK(mode) else "not a file"
