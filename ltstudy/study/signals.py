"""Signals: SIGINT (Ctrl-C) and SIGTERM (Kubernetes, Slurm, `kill PID`) stop a study cleanly.

The first signal raises KeyboardInterrupt wherever the process is; the running
trial closes its MLflow run as interrupted and is queued again. Further signals
are ignored for a bounded time while that happens, so a second Ctrl-C, or a
parent forwarding SIGTERM after the terminal's SIGINT, cannot leave a run
half-closed; a process that does not finish within that time is killed by its
parent (or the user's SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence

from ..engine.processes import alive

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_deferring = 0  # depth of `deferred()` sections in this process
_pending = False  # a stop signal arrived inside one
_requested = False  # a stop signal arrived at all (its KeyboardInterrupt may have been swallowed)


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt once; later ones are ignored (the process is closing).

    Inside `deferred()` the KeyboardInterrupt waits until the section ends. One
    that lands in a finalizer or a weakref callback (SQLAlchemy has many) is
    not printed as an "Exception ignored" traceback: it is remembered and
    raised again (raise_if_requested).
    """
    import sys

    global _requested
    _requested = False
    if not isinstance(sys.unraisablehook, _QuietInterrupts):
        sys.unraisablehook = _QuietInterrupts(sys.unraisablehook)

    def on_signal(signum, frame):
        global _pending, _requested
        _requested = True
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if _deferring:
            _pending = True
            return
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)


class _QuietInterrupts:
    """sys.unraisablehook: a stop signal's KeyboardInterrupt swallowed by a finalizer is not news."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, unraisable) -> None:
        if not (_requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self.hook(unraisable)


@contextlib.contextmanager
def deferred():
    """A section a stop signal must not cut in two (asking for a trial and recording its owner; telling it).

    Python runs signal handlers in the main thread between bytecodes, so the
    handler above sees this flag whichever thread the kernel delivered to; a
    section in another thread cannot be cut by the signal at all, and must not
    raise the main thread's KeyboardInterrupt in its own thread, so it is no section.
    """
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            _pending = False
            raise KeyboardInterrupt


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt again if a stop signal came and the process is still going.

    A signal that lands while a finalizer or a library's `except BaseException`
    runs has its KeyboardInterrupt swallowed there; the study's loop calls this
    between rounds and trials so such a stop is still obeyed.
    """
    if _requested and not _deferring:
        raise KeyboardInterrupt


def die_with_parent(parent_pid: int) -> None:
    """A worker process gets SIGTERM when its parent dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG).

    It then closes and re-queues its trial like any stopped worker, instead of
    running on, re-parented to PID 1, past the study's budget. Elsewhere, a
    thread polls for the parent instead.
    """
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent_pid:  # the parent died before the call
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=poll, name="ltstudy-parent-watch", daemon=True).start()


def stop_processes(procs: Sequence, grace: float = 30.0) -> list[int]:
    """SIGTERM to every live process, then SIGKILL to those still alive after `grace` seconds; their pids killed."""
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    killed = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
            killed.append(p.pid)
    return killed


def stop_process_group(proc, grace: float = 10.0) -> None:
    """Stop a subprocess started with start_new_session=True and every process it started (its group)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not alive(proc.pid, group=True):
                return
            time.sleep(0.05)

