"""Other processes of this machine: whether one still lives, and a lock file they take turns on.

A pid names a process only while it lives: the kernel gives a dead process's
pid to a later one. So a process that leaves its name behind (a cache writer's
temporary file, a trial's owner) writes its pid with its start time, and
`alive` calls it gone when the pid now belongs to a process started at another
time. Where there is no /proc the start time is unknown and the pid decides.
The engine uses this too (cache.py), so it lives here, free of the study layer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), or None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def alive(pid: int, started: str | None = None, *, group: bool = False) -> bool:
    """Whether process `pid` (with `group`: any process of group `pid`) lives, and, given `started`, is the
    process that started then and not a later one that got its pid."""
    if pid <= 0:  # (0 and -N would ask about this process's own group, or another group)
        return False
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    if not started or group:
        return True
    now = start_time(pid)
    return now is None or now == started


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) until the block ends; the processes of one
    machine (and of machines whose shared filesystem honours flock) take turns."""
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
