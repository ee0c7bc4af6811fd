"""A loaded machine changes nothing: MLflow's SQLite store, locked by another process for a while, is waited out.

Several `--jobs` workers write to one SQLite store; on a busy machine one of
them can hold its lock for seconds, and SQLite then answers "database is
locked". Every tracking call waits that out with backoff (tracking.py), with
no word on stderr (MLflow itself logged each such error with a traceback); a
store still locked after the retry window stops a command in one line, or,
mid-study, takes the log offline with one warning. The lock is injected where
SQLite raises it, under MLflow's own session code.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from optuna.trial import TrialState

from ltstudy import cli
from tests.study_helpers import Stores, parent_and_children, seeded_stores, write_study


@pytest.fixture
def stores(tmp_path: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> Stores:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    for sig, handler in before.items():
        signal.signal(sig, handler)


class Lock:
    """Another process holding the store's lock: the next `times` statements that start with `statement` fail as
    SQLite fails them, "database is locked" (-1: every one)."""

    def __init__(self):
        self.statement, self.times, self.met = "", 0, 0

    def hold(self, statement: str, times: int) -> None:
        self.statement, self.times = statement, times

    def __call__(self, conn, cursor, statement: str, parameters, context, executemany) -> None:
        if self.times and statement.lstrip().upper().startswith(self.statement):
            self.times -= 1
            self.met += 1
            raise sqlite3.OperationalError("database is locked")


@pytest.fixture
def lock():
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    held = Lock()
    event.listen(Engine, "before_cursor_execute", held)  # (every engine: MLflow's store is cached per process)
    yield held
    event.remove(Engine, "before_cursor_execute", held)


def test_a_store_locked_for_a_while_is_waited_out_without_a_word(stores: Stores, lock: Lock, capfd):
    """(Under load, a --jobs run printed MLflow's SQLAlchemy OperationalError traceback.)"""
    path = write_study(stores.root, stores, study={"n_trials": 2})
    lock.hold("INSERT INTO METRICS", 6)  # the first rounds' metrics meet the lock, each write more than once
    assert cli.main(["run", str(path), "--quiet"]) == 0
    err = capfd.readouterr().err
    assert lock.met == 6 and lock.times == 0
    assert "Traceback" not in err and "locked" not in err and "MLflow at" not in err, err
    assert [t.state for t in stores.study().trials] == [TrialState.COMPLETE] * 2
    client = stores.client()
    _, children = parent_and_children(client, "tiny")
    for run in children:  # every write landed once it could
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")) == [0, 1, 2]
        assert run.info.status == "FINISHED"


def test_a_store_still_locked_after_the_retry_window_stops_the_run_in_one_line(stores: Stores, lock: Lock,
                                                                               monkeypatch, capfd):
    from ltstudy.study import tracking

    monkeypatch.setattr(tracking, "RETRY_WINDOW", 1.0)  # (the wait itself: 120 s)
    path = write_study(stores.root, stores, study={"n_trials": 1})
    lock.hold("INSERT INTO RUNS", -1)  # the study's run cannot be created
    assert cli.main(["run", str(path), "--quiet"]) == 1
    err = capfd.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"ltstudy run: MLflow at {stores.tracking_uri} is unavailable (") and lock.met > 1
    assert "database is locked" in line and "run the same command again once it answers" in line
    assert stores.study().trials == []  # nothing ran


def test_a_store_locked_past_the_retry_window_mid_study_is_one_warning_and_training_goes_on(
        stores: Stores, lock: Lock, monkeypatch, capfd):
    from ltstudy.study import tracking

    monkeypatch.setattr(tracking, "RETRY_WINDOW", 1.0)
    path = write_study(stores.root, stores, study={"n_trials": 2})
    lock.hold("INSERT INTO METRICS", -1)
    assert cli.main(["run", str(path), "--quiet"]) == 0
    err = capfd.readouterr().err
    (line,) = [line for line in err.splitlines() if line]
    assert line.startswith(f"ltstudy: warning: MLflow at {stores.tracking_uri} failed (")
    assert "database is locked" in line and "ltstudy repair" in line
    assert [t.state for t in stores.study().trials] == [TrialState.COMPLETE] * 2
    lock.hold("", 0)
    assert cli.main(["repair", str(path)]) == 0  # once the lock is gone, every round is logged
    client = stores.client()
    _, children = parent_and_children(client, "tiny")
    assert [sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")) for r in children] \
        == [[0, 1, 2]] * 2
