"""Other processes of this machine (engine/processes.py): one liveness check with a guard against a reused pid,
and one lock file, for the cache's writers, a study's trial owners, the server groups and the storages' locks."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

from ltstudy.engine.processes import alive, file_lock, start_time


def test_a_live_process_is_alive_and_an_exited_one_is_not():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert alive(os.getpid())
    assert not alive(int(done.stdout))


def test_a_pid_that_now_names_a_process_started_at_another_time_is_not_the_process_it_named():
    now = start_time(os.getpid())
    if now is None:
        pytest.skip("no /proc: a pid's start time cannot be read here")
    assert alive(os.getpid(), now)
    assert not alive(os.getpid(), str(int(now) + 1))


def test_pid_zero_and_negative_pids_are_never_alive():
    """os.kill(0, 0) would ask about this process's own group: it succeeds, and a parsed 0 would look alive."""
    assert not alive(0) and not alive(-1) and not alive(0, group=True)


def test_a_process_group_is_alive_while_any_member_lives():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert alive(proc.pid, group=True)
    finally:
        proc.kill()
        proc.wait()
    assert not alive(proc.pid, group=True)


def _hold(path: str, held, release) -> None:
    with file_lock(path):
        held.set()
        release.wait(60)


def test_the_file_lock_is_held_by_one_process_at_a_time(tmp_path):
    path = str(tmp_path / "x.lock")
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(path, held, release))
    other.start()
    try:
        assert held.wait(60), "the other process never took the lock"
        import fcntl

        # (another taker, without waiting: refused while the other holds it)
        with open(path, "a") as fh, pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        release.set()
        other.join(60)
        with file_lock(path):  # (and free once it let go)
            pass
    finally:
        release.set()
        other.join(5)
        if other.is_alive():
            other.kill()
