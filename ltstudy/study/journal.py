"""The Optuna journal file kept whole: no record is ever written after a broken one.

Optuna's JournalFileBackend appends under a lock but never looks at what it
appends to. A writer killed mid-write (or stopped by a full disk) leaves a torn
last line; the next append is glued onto it, and from then on the file cannot
be read: every command fails with JSONDecodeError. Here:

- `SafeJournalBackend.append_logs` checks the tail under the journal's own lock
  before it appends, sets a torn fragment aside (`<journal>.torn-<time>`) and
  truncates it away; a write that fails (ENOSPC) is truncated back too. The
  fragment was never a record, so nothing complete is lost.
- `check_journal` runs when a study opens: a torn or unreadable tail is set aside
  with a one-line warning; damage in the middle (left by another tool) is a
  one-line error naming the line, which `ltstudy repair` mends (`mend_journal`:
  a backup, then every readable record kept, a record glued onto a fragment
  recovered).
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from ..engine.errors import ConfigError, DiskFull, SettingWarning
from .signals import deferred

_RECORD_START = b'{"op_code":'


class JournalWarning(SettingWarning):
    """The journal's tail was damaged and has been set aside (one line, the study goes on)."""


@contextmanager
def journal_lock(path: Path):
    """The lock Optuna's own writers take around appends (a symlink beside the journal), held whole.

    A stop signal waits until the lock is released (signals.deferred): a
    KeyboardInterrupt while Optuna's `acquire` waits makes it "release" the lock
    that another process holds, so two writers append at once, and one cut
    between its rename and unlink ends the worker with a traceback.
    """
    with deferred():
        lock = JournalFileSymlinkLock(str(path))
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


def _set_aside(path: Path, data: bytes, what: str) -> Path:
    aside = path.with_name(f"{path.name}.{what}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    aside.write_bytes(data)
    return aside


def _cut_torn_tail(path: Path) -> tuple[int, Path | None]:
    """Under the lock: truncate a last line that has no newline (a writer died mid-write); (bytes cut, backup)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0, None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0, None
        # Find the last newline by reading backwards in blocks (a journal can be large).
        end, pos = size, size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        else:
            keep = 0
        f.seek(keep)
        fragment = f.read(end - keep)
        aside = _set_aside(path, fragment, "torn")
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return len(fragment), aside


class SafeJournalBackend(JournalFileBackend):
    """JournalFileBackend whose appends never go after a torn line and never leave one behind."""

    def append_logs(self, logs):
        path = Path(self._file_path)
        text = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        with journal_lock(path):
            cut, aside = _cut_torn_tail(path)
            if cut:
                warnings.warn(f"storage journal {path} ended in a torn record ({cut} bytes, a writer killed "
                              f"mid-write); set it aside in {aside.name} before writing", JournalWarning,
                              stacklevel=2)
            with open(path, "ab") as f:
                before = f.tell()
                try:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                except BaseException as exc:  # ENOSPC, or a signal mid-write: leave the file as it was
                    try:
                        f.truncate(before)
                    except OSError:
                        pass  # (the next append's tail check cuts what is left)
                    DiskFull.check(exc, f"the storage journal {path}")
                    raise


def _whole(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with deferred():
            return method(*args, **kwargs)
    return call


class SafeJournalStorage(JournalStorage):
    """JournalStorage whose calls a stop signal never cuts in two.

    Optuna replays the journal into memory record by record; a KeyboardInterrupt
    in the middle leaves that copy short of a record, and the interrupted
    worker's last writes (closing its trial) would be made against it.
    """


for _name in dir(JournalStorage):
    if not _name.startswith("_") and callable(getattr(JournalStorage, _name)):
        setattr(SafeJournalStorage, _name, _whole(getattr(JournalStorage, _name)))


@dataclass
class JournalHealth:
    lines: int = 0  # newline-terminated lines
    bad: list[int] = field(default_factory=list)  # 1-based numbers of lines that are not records
    torn: int = 0  # bytes after the last newline

    @property
    def bad_tail(self) -> int:
        """How many of the bad lines are the last lines of the file (no record after them)."""
        n = 0
        for number in range(self.lines, 0, -1):
            if number not in self.bad:
                break
            n += 1
        return n


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def inspect_journal(path: Path) -> JournalHealth:
    health = JournalHealth()
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                health.torn = len(line)
                break
            health.lines += 1
            if not _is_record(line):
                health.bad.append(health.lines)
    return health


def check_journal(path: Path) -> None:
    """At open: set a damaged tail aside (one-line warning); refuse damage in the middle (one-line error)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    health = inspect_journal(path)
    if not health.torn and not health.bad:
        return
    _refuse_middle(path, health)
    with journal_lock(path):
        health = inspect_journal(path)  # (again, under the lock: a writer may have finished meanwhile)
        _refuse_middle(path, health)
        keep, dropped = _tail_cut(path, health)
        if dropped:
            data = path.read_bytes()
            aside = _set_aside(path, data[keep:], "torn")
            with open(path, "rb+") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
            warnings.warn(f"storage journal {path} ended in {dropped} damaged bytes (a writer killed mid-write, "
                          f"or a full disk); set them aside in {aside.name} and continued from the last complete "
                          "record", JournalWarning, stacklevel=2)


def _refuse_middle(path: Path, health: JournalHealth) -> None:
    if len(health.bad) > health.bad_tail:
        raise ConfigError(f"storage journal {path} is damaged at line {health.bad[0]} of {health.lines} (not a "
                          "journal record, with records after it); run `ltstudy repair` on the study to keep every "
                          "readable record (the file is backed up first)")


def _tail_cut(path: Path, health: JournalHealth) -> tuple[int, int]:
    """(bytes to keep, bytes to drop) for a file whose only damage is at its end."""
    size = path.stat().st_size
    keep_lines = health.lines - health.bad_tail
    keep = 0
    with open(path, "rb") as f:
        for _ in range(keep_lines):
            keep += len(f.readline())
    return keep, size - keep


def mend_journal(path: Path) -> int:
    """`ltstudy repair`: rewrite the journal with every readable record; returns the lines dropped (0: untouched).

    A line glued onto a torn fragment keeps the record that follows the
    fragment. The whole original is backed up beside it first.
    """
    if not path.is_file():
        return 0
    with journal_lock(path):
        health = inspect_journal(path)
        if not health.torn and not health.bad:
            return 0
        data = path.read_bytes()
        _set_aside(path, data, "backup")
        kept: list[bytes] = []
        dropped = 0
        for line in data.splitlines(keepends=True):
            if line.endswith(b"\n") and _is_record(line):
                kept.append(line)
                continue
            at = line.rfind(_RECORD_START)
            tail = line[at:] if at > 0 else b""
            if tail.endswith(b"\n") and _is_record(tail):
                kept.append(tail)  # a record appended after a torn fragment: the fragment goes, the record stays
            dropped += 1
        tmp = path.with_name(path.name + ".mending")
        with open(tmp, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return dropped
