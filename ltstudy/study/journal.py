"""The Optuna journal file kept whole: no record is ever written after a broken one.

Optuna's JournalFileBackend appends under a lock but never looks at what it
appends to. A writer killed mid-write (or stopped by a full disk) leaves a torn
last line; the next append is glued onto it, and from then on the file cannot
be read: every command fails with JSONDecodeError. Here:

- `SafeJournalBackend.append_logs` checks the tail under the journal's own lock
  before it appends, sets a torn fragment aside (`<journal>.torn-<time>`) and
  truncates it away; a write that fails (a full disk: ENOSPC, or a file-size
  limit: EFBIG) is truncated back, and stops the run with one line. Writes are
  unbuffered, so nothing is flushed again after the cut.
- `check_journal` runs when a study opens: a damaged tail (torn, garbage, or a
  line that is JSON but no record Optuna can replay: journal_records.py) is cut
  back to the last whole record with a one-line warning, keeping any whole
  record glued after a fragment; damage in the middle (left by another tool)
  is a one-line error naming the line, which `ltstudy repair` mends
  (`mend_journal`: a backup, then every readable record kept).
- On a full disk the damaged bytes are dropped without a copy (they were never
  records), so the commands that only read keep working; what cannot be done
  without space stops with one line and leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
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
from .journal_records import is_record, salvage
from .signals import deferred


class JournalWarning(SettingWarning):
    """The journal's tail was damaged and has been set aside (one line, the study goes on)."""


def _where(path: Path) -> str:
    return f"the storage journal {path}"


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
        try:
            lock.acquire()
        except OSError as exc:  # (a symlink with a long target needs a block of its own)
            DiskFull.check(exc, _where(path))
            raise
        try:
            yield
        finally:
            lock.release()


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write every byte (a full disk can take part of a write before it refuses the rest)."""
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.write(fd, view[done:]) if offset is None else os.pwrite(fd, view[done:], offset + done)


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, synced; on any failure nothing is left at `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _set_aside(path: Path, data: bytes, what: str) -> Path:
    """A copy of `data` beside the journal (`<journal>.<what>-<time>-<pid>`); DiskFull when there is no room."""
    stem = f"{path.name}.{what}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    for n in range(1, 1000):
        aside = path.with_name(stem if n == 1 else f"{stem}-{n}")
        try:
            _write_new(aside, data)
            return aside
        except FileExistsError:
            continue  # (this process set something aside this second already)
        except OSError as exc:
            DiskFull.check(exc, _where(path))
            raise
    raise FileExistsError(f"{path} has too many copies set aside this second")


def _copy_aside(path: Path, data: bytes, what: str) -> Path | None:
    """`_set_aside`, or None on a full disk: bytes that were never records may go without a copy."""
    try:
        return _set_aside(path, data, what)
    except DiskFull:
        return None


def _aside_text(aside: Path | None) -> str:
    return f"set them aside in {aside.name}" if aside else "dropped them (no room left on the device for a copy)"


def _cut_torn_tail(path: Path) -> tuple[int, Path | None]:
    """Under the lock: truncate a last line that has no newline (a writer died mid-write); (bytes cut, copy)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0, None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0, None
        # Find the last newline by reading backwards in blocks (a journal can be large).
        pos = size
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
        fragment = f.read(size - keep)
    aside = _copy_aside(path, fragment, "torn")
    _rewrite_tail(path, keep, b"")
    return len(fragment), aside


def _rewrite_tail(path: Path, keep: int, records: bytes) -> None:
    """Replace everything after byte `keep` with `records` (shorter than what it replaces), synced.

    The records overwrite the damaged bytes in place and the rest is cut off:
    that needs no new space, so it works on a full disk too.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        if records:
            _write_all(fd, records, offset=keep)
        os.ftruncate(fd, keep + len(records))
        os.fsync(fd)
    except OSError as exc:
        DiskFull.check(exc, _where(path))
        raise
    finally:
        os.close(fd)


class SafeJournalBackend(JournalFileBackend):
    """JournalFileBackend whose appends never go after a torn line and never leave one behind."""

    def __init__(self, file_path: str, lock_obj=None):
        super().__init__(file_path, lock_obj)
        self.path = Path(file_path)  # (its own: the base class keeps the path in a private attribute)

    def append_logs(self, logs):
        path = self.path
        text = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        with journal_lock(path):
            cut, aside = _cut_torn_tail(path)
            if cut:
                warnings.warn(f"storage journal {path} ended in a torn record ({cut} bytes, a writer killed "
                              f"mid-write); {_aside_text(aside)} before writing", JournalWarning, stacklevel=2)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                before = os.fstat(fd).st_size  # (the end, under the lock)
                try:
                    _write_all(fd, text)
                    os.fsync(fd)
                except BaseException as exc:  # a full disk, or a signal mid-write: leave the file as it was
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, before)  # (frees space: possible on a full disk)
                        os.fsync(fd)
                    DiskFull.check(exc, _where(path))
                    raise
            finally:
                os.close(fd)


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


def inspect_journal(path: Path) -> JournalHealth:
    health = JournalHealth()
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                health.torn = len(line)
                break
            health.lines += 1
            if not is_record(line):
                health.bad.append(health.lines)
    return health


def check_journal(path: Path) -> None:
    """At open: cut a damaged tail back to the last whole record (one-line warning); refuse damage in the middle."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    health = inspect_journal(path)
    if not health.torn and not health.bad:
        return
    _refuse_middle(path, health)
    with journal_lock(path):
        health = inspect_journal(path)  # (again, under the lock: a writer may have finished meanwhile)
        _refuse_middle(path, health)
        _cut_damaged_tail(path, health)


def _cut_damaged_tail(path: Path, health: JournalHealth) -> None:
    """Under the lock, in a file whose only damage is at its end: keep every whole record, drop the rest (warned).

    A copy of the damaged bytes goes beside the journal first (with the
    records glued in them), where there is room for one.
    """
    keep = _tail_start(path, health)
    with open(path, "rb") as f:
        f.seek(keep)
        damaged = f.read()
    if not damaged:
        return
    glued = [r for r in (salvage(line) for line in damaged.splitlines(keepends=True) if line.endswith(b"\n"))
             if r is not None]
    aside = _copy_aside(path, damaged, "torn")
    _rewrite_tail(path, keep, b"".join(glued))
    kept = (f"kept the {len(glued)} whole {'record' if len(glued) == 1 else 'records'} glued after a torn one, "
            if glued else "")
    warnings.warn(f"storage journal {path} ended in {len(damaged) - sum(map(len, glued))} damaged bytes (a writer "
                  f"killed mid-write, or a full disk); {kept}{_aside_text(aside)} and continued from the last "
                  "complete record", JournalWarning, stacklevel=3)


def _refuse_middle(path: Path, health: JournalHealth) -> None:
    if len(health.bad) > health.bad_tail:
        raise ConfigError(f"storage journal {path} is damaged at line {health.bad[0]} of {health.lines} (not a "
                          "journal record, with records after it); run `ltstudy repair` on the study to keep every "
                          "readable record (the file is backed up first)")


def _tail_start(path: Path, health: JournalHealth) -> int:
    """Where the damage starts, in a file whose only damage is at its end: the bytes of its good lines."""
    keep = 0
    with open(path, "rb") as f:
        for _ in range(health.lines - health.bad_tail):
            keep += len(f.readline())
    return keep


def mend_journal(path: Path) -> int:
    """`ltstudy repair`: rewrite the journal with every readable record; returns the lines dropped (0: untouched).

    A line glued onto a torn fragment keeps the record that follows the
    fragment. The whole original is backed up beside it first. Without room
    for the backup and the new file it stops with one line (DiskFull), the
    journal as it was and nothing left beside it. Damage only at the end is
    cut as a study's opening cuts it (warned; it needs no room).
    """
    if not path.is_file():
        return 0
    with journal_lock(path):
        health = inspect_journal(path)
        if not health.torn and not health.bad:
            return 0
        if len(health.bad) == health.bad_tail:
            _cut_damaged_tail(path, health)
            return 0
        data = path.read_bytes()
        kept: list[bytes] = []
        dropped = 0
        for line in data.splitlines(keepends=True):
            if line.endswith(b"\n") and is_record(line):
                kept.append(line)
                continue
            glued = salvage(line) if line.endswith(b"\n") else None
            if glued is not None:
                kept.append(glued)  # a record appended after a torn fragment: the fragment goes, the record stays
            dropped += 1
        backup = _set_aside(path, data, "backup")
        tmp = path.with_name(path.name + ".mending")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # (left by a repair that was killed)
            _write_new(tmp, b"".join(kept))
            os.replace(tmp, path)
        except OSError as exc:  # the journal is as it was: the copies would only be clutter
            for leftover in (tmp, backup):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            DiskFull.check(exc, _where(path))
            raise
        return dropped
