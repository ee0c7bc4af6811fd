"""The few things ltstudy needs from Optuna beyond its public API, in one place, each with its reason.

- Heartbeats outside `Study.optimize`: ltstudy asks and tells trials itself
  (runner.py), so it records a running trial's heartbeat with its own thread
  through the storage's public `record_heartbeat`, and finds the trial's
  storage id through the public `get_trial_id_from_study_id_trial_number`.
  Optuna warns on every `ask()` of a heartbeat storage outside `optimize`;
  `ask` silences exactly that warning for that call.
- Whether a trial has a heartbeat row at all (`heartbeat_recorded`): Optuna's
  stale-trial sweep skips a RUNNING trial that never sent one, forever, and
  has no public call that tells; owners.py needs to know, so it reads the
  storage's heartbeat table.
- Which RDBStorage methods open a database session (`rdb_session_methods`),
  private ones included: the storage Optuna's `create_study` and `load_study`
  wrap an RDBStorage in (`_CachedStorage`) calls private methods such as
  `_set_trial_param`, `_create_new_trial` and `_get_trials` directly, so
  retrying the public API alone across a database restart let one during
  `suggest_*` kill a worker (seen in CI). No public API lists them; reading
  each method's source for a session keeps the list right across releases.
- The journal's operation codes (`JournalOperation`): journal_records.py checks
  each line as Optuna's replay will read it, by its op code; the enum is not
  exported.
- The words of a missing study (`STUDY_NOT_FOUND`): `load_study` raises a bare
  KeyError for a missing study and for storage records it cannot read; only
  its message tells them apart (the RDB storage's words are the journal's).
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import optuna
from optuna.storages.journal._storage import NOT_FOUND_MSG, JournalOperation  # (private: see above)

STUDY_NOT_FOUND = NOT_FOUND_MSG
__all__ = ["STUDY_NOT_FOUND", "Heartbeat", "JournalOperation", "ask", "fail_stale_trials", "heartbeat_interval",
           "heartbeat_recorded", "quiet_experimental", "rdb_session_methods", "trial_id"]

HEARTBEAT_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize."


def heartbeat_interval(storage) -> int | None:
    """Seconds between heartbeats for an RDB storage opened with them; None for any other storage."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=HEARTBEAT_WARNING)
        return study.ask()


def trial_id(storage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


class Heartbeat:
    """A running trial's heartbeat, recorded every interval until `stop()` (no-op without heartbeats).

    A failed beat (a database restarting) is retried at the next interval; the
    trial is only declared stale by others once no beat has landed for the
    grace period.
    """

    def __init__(self, storage, study: optuna.Study, number: int):
        self.interval = heartbeat_interval(storage)
        self._storage, self._study, self._number = storage, study, number
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """The first beat now (a trial is never RUNNING without one), then one every interval in a thread."""
        if self.interval is None:
            return
        self._tid = None
        self._beat_once()
        self._thread = threading.Thread(target=self._beat, name="ltstudy-heartbeat", daemon=True)
        self._thread.start()

    def _beat_once(self) -> None:
        try:
            if self._tid is None:
                self._tid = trial_id(self._storage, self._study, self._number)
            self._storage.record_heartbeat(self._tid)
        except Exception:  # the database is away for a moment: try again at the next beat
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def heartbeat_recorded(storage, tid: int) -> bool | None:
    """Whether an RDB storage with heartbeats holds a heartbeat for the trial; None for any other storage."""
    if heartbeat_interval(storage) is None or not hasattr(storage, "scoped_session"):
        return None
    from optuna.storages._rdb import models

    session = storage.scoped_session()
    try:
        return models.TrialHeartbeatModel.where_trial_id(tid, session) is not None
    finally:
        session.close()


def rdb_session_methods() -> tuple[str, ...]:
    """Every method of RDBStorage that opens a database session, public or private (see the module docstring)."""
    import inspect

    from optuna.storages import RDBStorage

    names = []
    for name, value in vars(RDBStorage).items():
        if callable(value) and not isinstance(value, staticmethod):
            try:
                source = inspect.getsource(value)
            except (OSError, TypeError):
                continue
            if "_create_scoped_session(" in source and name != "_create_scoped_session":
                names.append(name)
    return tuple(names)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own stale-trial sweep (an experimental API, used knowingly)."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def quiet_experimental():
    """Optuna flags some APIs 'experimental' on every use (heartbeats, metric names); we depend on them knowingly."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield
