"""Processes that share a study never finish more trials than `n_trials` asks for.

`n_trials` is the study's total of finished trials; the trials other processes
are running count towards it (study/loop.py), so two `run`s started together,
or a `run` beside a busy one, stop at the total.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ltstudy.engine.processes import start_time
from ltstudy.study import loop as loop_module
from ltstudy.study.attrs import OWNER_ATTR
from ltstudy.study.callbacks import StudyCallback
from ltstudy.study.config import load_study
from ltstudy.study.loop import LoopReport, run_trials
from ltstudy.study.mlflow_logging import StudyLog
from ltstudy.study.storage import open_storage
from ltstudy.study.tracking import Tracker
from ltstudy.study.trial import TrialContext
from tests.ft_helpers import outputs, run, sqlite_tracking, start, stop, wait_for, write_study
from tests.study_helpers import seeded_stores
from tests.study_helpers import write_study as write_tiny_study

LONG = {"iterations": 1200, "eval_every": 200, "batch_size": 60}  # a round of about a second: time to stop it


def load(storage: str, name: str = "ft") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def states(storage: str, name: str = "ft") -> list[str]:
    return sorted(t.state.name for t in load(storage, name).get_trials(deepcopy=False))


def test_a_run_beside_another_that_is_running_the_last_missing_trial_runs_none(tmp_path: Path, tmp_path_factory):
    """The first `run` is frozen (SIGSTOP) mid-trial while the second starts and ends: the interleaving is forced.

    (The second used to count only finished trials, run its own, and the study ended with 2 of n_trials = 1.)
    """
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=1,
                       train=LONG, search={"prune_rate": [0.2, 0.5], "rewind_iter": 0, "rounds": 1})
    first = start(tmp_path, "run", str(path), tag="first")  # (not --quiet: a line per round on stderr)
    frozen = False
    try:
        # After its dense round's line the first process trains round 1: it holds no lock and no transaction.
        wait_for(lambda: "trial 0 seed 0 round 0" in outputs(tmp_path, "first")[1], 300, "the first run's dense "
                 "round", first, interval=0.2)
        os.kill(first.pid, signal.SIGSTOP)
        frozen = True
        assert states(storage) == ["RUNNING"]
        second = run(tmp_path, "run", str(path), "--quiet", timeout=300)
        assert second.returncode == 0, second.stderr
        assert states(storage) == ["RUNNING"]  # it asked for no trial of its own
        assert "ran 0 trials" in second.stdout
        assert "1 trial that other processes are running (0) counts towards n_trials = 1: it finishes the study" in \
            second.stdout
        os.kill(first.pid, signal.SIGCONT)
        frozen = False
        assert first.wait(timeout=300) == 0, outputs(tmp_path, "first")[1]
    finally:
        if frozen:
            os.kill(first.pid, signal.SIGCONT)
        stop(first)
    assert states(storage) == ["COMPLETE"]


def test_two_runs_started_together_on_a_new_folder_finish_exactly_n_trials(tmp_path: Path):
    """The reproduction of issue 22: n_trials = 6 ended with 7 COMPLETE trials in 3 of 3 tries."""
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, n_trials=6, cache_dir=str(tmp_path / "cache"),
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 1})
    procs = [start(tmp_path, "run", str(path), "--quiet", tag=f"r{i}") for i in range(2)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            stop(p)
    assert codes == [0, 0], [outputs(tmp_path, f"r{i}")[1] for i in range(2)]
    assert states(storage) == ["COMPLETE"] * 6


# --------------------------------------------------------------------------- the counting rule, in one process


@contextlib.contextmanager
def another_process():
    """A live process of this machine, as an owner string `owners.owner_alive` believes."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        wait_for(lambda: start_time(proc.pid) is not None, 30, "the process to start")
        import socket

        yield f"{socket.gethostname()}:{proc.pid}:{start_time(proc.pid)}"
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def tiny(tmp_path: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch):
    """(study, storage, ctx, storage URL) of a one-trial-missing tiny study, outside any `run`.

    The stop-signal handlers are a study's and fresh (a stop an earlier test asked for is forgotten); the test's
    own come back afterwards."""
    from ltstudy.study import signals

    saved = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    signals.interrupt_on_signals()
    stores = seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    cfg = load_study(write_tiny_study(tmp_path, stores, study={"n_trials": 2}))
    storage = open_storage(stores.storage)
    study = optuna.create_study(storage=storage, study_name="tiny", directions=cfg.directions)
    tracker = Tracker(stores.tracking_uri)
    exp = tracker.experiment_id("tiny")
    ctx = TrialContext(cfg, StudyLog(tracker), exp, tracker.start_run(exp, "tiny"), StudyCallback())
    yield study, storage, ctx, stores.storage
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_trial_another_process_asked_for_while_this_one_waited_for_the_ask_lock_is_counted(tiny, monkeypatch):
    """Both saw one trial missing; the second to get the lock must look again before asking."""
    study, storage, ctx, url = tiny
    real_lock = loop_module.ask_lock

    with another_process() as owner:
        @contextlib.contextmanager
        def lock_taken_after_another_asked(storage_url):
            with real_lock(storage_url):
                if len(study.get_trials(deepcopy=False)) == 0:  # the other process got the lock first
                    trial = study.ask()
                    trial.set_user_attr(OWNER_ATTR, owner)
                yield

        monkeypatch.setattr(loop_module, "ask_lock", lock_taken_after_another_asked)
        report = run_trials(study, storage, ctx, budget=1, target=1, storage_url=url, report=LoopReport())
    assert report.told == []
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.RUNNING]
    assert any("counts towards n_trials = 1" in note for note in report.notes)


def test_a_dead_processs_running_trial_holds_no_place(tiny):
    """Counting running trials must not count one whose worker is gone: it is failed, re-queued and run here."""
    study, storage, ctx, url = tiny
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    trial = study.ask({"prune_rate": optuna.distributions.CategoricalDistribution([0.2, 0.5])})
    trial.set_user_attr(OWNER_ATTR, f"{socket.gethostname()}:{dead.stdout.strip()}:1")
    report = run_trials(study, storage, ctx, budget=1, target=1, storage_url=url, report=LoopReport())
    assert report.told == [1]
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL, TrialState.COMPLETE]
