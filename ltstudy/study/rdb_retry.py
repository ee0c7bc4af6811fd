"""An RDB storage whose calls ride out a database restart.

Optuna's RDBStorage raises StorageInternalError on the first dropped
connection, so a PostgreSQL restart crashes every worker mid-trial. Each call
here is retried with backoff while the error is a lost or refused connection,
for up to `window` seconds; any other error (bad data, a finished trial) goes
through at once. A stop signal waits for the attempt under way (signals.deferred:
a KeyboardInterrupt inside an SQLite commit leaves the file locked by the
interrupted process), never for the wait between attempts. A write whose commit reached the database before the
connection dropped may be retried: a repeated tell then finds its trial
already finished, which is what it asked for.
"""

from __future__ import annotations

import functools
import random
import time

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage

from .optuna_api import rdb_session_methods
from .signals import deferred

RETRY_WINDOW = 120.0  # seconds: a restart, or a failover, of the database server

_CALLS = rdb_session_methods()  # (public and private: optuna_api.py says why)


# What a restarting server (or a busy SQLite file) says; "no such table" or "disk is full" are not worth a wait.
_TRANSIENT = ("connection", "connect to server", "could not connect", "terminating", "starting up", "shutting down",
              "server closed", "database is locked", "timeout", "timed out", "recovery mode", "broken pipe")


def transient(exc: BaseException | None) -> bool:
    """A connection lost or refused (the server restarting), anywhere in the exception's chain."""
    import sqlalchemy.exc as sa

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, sa.DisconnectionError):
            return True
        if isinstance(exc, sa.DBAPIError):
            if exc.connection_invalidated:
                return True
            if isinstance(exc, sa.OperationalError | sa.InterfaceError):
                text = str(exc.orig).lower()
                return any(s in text for s in _TRANSIENT)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _retrying(name: str, method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline = time.monotonic() + self.retry_window
        delay = 0.25
        attempt = 0
        while True:
            try:
                with deferred():
                    return method(self, *args, **kwargs)
            except UpdateFinishedTrialError:
                if attempt and name == "set_trial_state_values":
                    return True  # the first attempt's commit landed before its connection dropped
                raise
            except Exception as exc:
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise
            attempt += 1
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 8.0)
    return call


class RetryingRDBStorage(RDBStorage):
    """RDBStorage with every call retried across a database restart (see the module docstring)."""

    retry_window = RETRY_WINDOW


for _name in _CALLS:
    setattr(RetryingRDBStorage, _name, _retrying(_name, getattr(RDBStorage, _name)))
