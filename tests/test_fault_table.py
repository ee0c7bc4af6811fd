"""The fault table: what a study survives, one test per fault.

| fault                                          | what survives                                           |
|------------------------------------------------|---------------------------------------------------------|
| a torn or garbage tail of the Optuna journal   | every complete record; the tail is set aside (1 warning)|
| damage in the middle of the journal            | refused in one line; `repair` keeps every readable one  |
| processes started together on a new folder     | one MLflow store, one parent run, all proceed           |
| the MLflow server killed mid-study             | training (1 warning), resumed logs; `repair` the rest   |
| PostgreSQL restarted under two workers         | every trial: calls retry across the restart             |
| a worker that died before its first heartbeat  | its trial is failed and re-queued after the grace period|
| SIGKILL to the parent of `run --jobs 2`        | workers stop with it; the next run finishes the study   |
| a full disk under the cache, journal or MLflow | one line naming the place; nothing is corrupted         |
| a stop signal at any point of a trial's life   | the trial is FAIL and queued again, its run closed      |

Every test is bounded in time, binds to 127.0.0.1 and stops what it started.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ltstudy import cli
from ltstudy.study.attrs import OWNER_ATTR, PARENT_ATTR
from ltstudy.study.storage import open_storage
from tests import mlflow_server
from tests.ft_helpers import (
    Runs,
    alive,
    children,
    outputs,
    run,
    sqlite_tracking,
    start,
    stop,
    wait_for,
    write_study,
)
from tests.pg import PgServer, free_port

pytest_plugins = ["tests.pg"]

LONG = {"iterations": 1200, "eval_every": 200, "batch_size": 60}  # rounds of about a second: time to signal


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """cwd is the test's folder; the signal handlers `ltstudy run` installs are put back afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LTSTUDY_CACHE_DIR", raising=False)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def journal_records(path: Path) -> list[dict]:
    """Every line of the journal as a record (fails on any line that is not one)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the journal ends in a torn line"
    return [json.loads(line) for line in data.splitlines()]


def load(storage: str, name: str = "ft") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def running(storage: str, name: str = "ft") -> int:
    """How many trials of the study are RUNNING; 0 while its storage or the study itself is not there yet."""
    try:
        return len(load(storage, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    except KeyError:  # (the journal exists, the study's record is not in it yet)
        return 0


def finished_study(tmp_path: Path, tmp_path_factory, n_trials: int = 2, **kw) -> tuple[Path, str, str]:
    """A finished tiny study in tmp_path; (study file, storage URL, tracking URI)."""
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"),
                       n_trials=n_trials, search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0,
                                                  "rounds": 1}, **kw)
    assert cli.main(["run", str(path), "--quiet"]) == 0
    return path, storage, uri


def queued_params(trial) -> dict:
    """The settings a WAITING (queued) trial will run with (Optuna sets its params only when it starts)."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


def values(study: optuna.Study) -> dict[int, list[float]]:
    return {t.number: t.values for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE}


# --------------------------------------------------------------------------- the journal


@pytest.mark.parametrize("damage", [b'{"op_code":6,"worker_id":"a-1","trial_id":1,"sta', b"garbage\n",
                                    b'{"hello": 1}\n', b'{"op_code":"six"}\n'],
                         ids=["torn record", "garbage line", "JSON that is no record", "an unknown operation"])
def test_a_damaged_journal_tail_is_set_aside_with_one_warning_and_every_complete_record_survives(
        tmp_path: Path, tmp_path_factory, capsys, damage: bytes):
    path, storage, _ = finished_study(tmp_path, tmp_path_factory)
    journal = tmp_path / "optuna.journal"
    before, intact = values(load(storage)), journal.read_bytes()
    capsys.readouterr()
    with open(journal, "ab") as f:
        f.write(damage)  # a writer killed mid-write, a full disk, or another tool

    assert cli.main(["pareto", str(path)]) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line]
    assert line.startswith("ltstudy pareto: warning: storage journal") and "set them aside in" in line
    assert journal.read_bytes() == intact  # exactly the damage is gone
    (aside,) = tmp_path.glob("optuna.journal.torn-*")
    assert aside.read_bytes() == damage

    assert cli.main(["run", str(path), "--more", "1", "--quiet"]) == 0  # and the study goes on
    after = values(load(storage))
    assert len(after) == 3 and all(after[n] == v for n, v in before.items())
    journal_records(journal)


def test_no_record_is_ever_appended_to_a_torn_line(tmp_path: Path):
    """Another writer torn mid-write while this process holds the study open: the next append cuts it first."""
    from ltstudy.study.journal import JournalWarning

    storage = f"journal:{tmp_path / 'o.journal'}"
    study = optuna.create_study(study_name="s", storage=open_storage(storage))
    study.set_user_attr("a", 1)
    with open(tmp_path / "o.journal", "ab") as f:
        f.write(b'{"op_code":1,"worker_id":"x-1","study_id":0,"user_')
    with pytest.warns(JournalWarning, match="torn record"):
        study.set_user_attr("b", 2)
    journal_records(tmp_path / "o.journal")
    assert load(storage, "s").user_attrs == {"a": 1, "b": 2}


def test_damage_in_the_middle_is_refused_in_one_line_and_repair_keeps_every_readable_record(
        tmp_path: Path, tmp_path_factory, capsys):
    """The damage Optuna's own writer leaves: a record glued onto a torn one, with records after it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path, storage, _ = finished_study(tmp_path, tmp_path_factory)
    journal = tmp_path / "optuna.journal"
    with open(journal, "ab") as f:
        f.write(b'{"op_code":6,"worker_id":"a-1","trial_id":1,"sta')  # torn...
    plain = optuna.load_study(study_name="ft", storage=JournalStorage(JournalFileBackend(str(journal))))
    plain.set_user_attr("written_after_the_tear", True)  # ...then Optuna's backend glues this record onto it
    with pytest.raises(ValueError):  # and from the next record on, it cannot read its own file
        plain.set_user_attr("and_one_more", True)
    capsys.readouterr()

    assert cli.main(["pareto", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ltstudy pareto: error: storage journal") and "damaged at line" in line
    assert "ltstudy repair" in line

    assert cli.main(["repair", str(path)]) == 0
    out = capsys.readouterr().out
    assert "set aside 1 damaged line and kept every readable record" in out
    assert len(list(tmp_path.glob("optuna.journal.backup-*"))) == 1
    attrs = load(storage).user_attrs
    assert attrs["written_after_the_tear"] is True and attrs["and_one_more"] is True  # the glued record recovered
    assert len(values(load(storage))) == 2
    journal_records(journal)


# --------------------------------------------------------------------------- processes starting together


def test_runs_started_together_on_a_new_folder_make_one_mlflow_store_and_one_parent_run(tmp_path: Path):
    """(MLflow's schema migration used to race: alembic errors, a half-migrated mlflow.db, two parent runs.)"""
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, n_trials=3, cache_dir=str(tmp_path / "cache"),
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 1})
    procs = [start(tmp_path, "run", str(path), "--quiet", tag=f"r{i}") for i in range(3)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            stop(p)
    errs = [outputs(tmp_path, f"r{i}")[1] for i in range(3)]
    assert codes == [0, 0, 0], errs
    assert not [e for e in errs if "Traceback" in e or "alembic" in e.lower()]
    study = load(storage)
    assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 3  # n_trials, not more
    runs = Runs.of(uri, "ft")
    assert [r.info.run_id for r in runs.parents] == [study.user_attrs[PARENT_ATTR]]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.children} == {study.user_attrs[PARENT_ATTR]}
    assert runs.running() == []


# --------------------------------------------------------------------------- the MLflow server dies


def _fully_logged(runs: Runs, run, steps: list[int]) -> bool:
    """A trial's run holds what a run that never lost MLflow holds: every round once, its files, tags, end."""
    tags, run_id = run.data.tags, run.info.run_id
    return (run.info.status == "FINISHED" and tags.get("state") == "COMPLETE" and "feasible" in tags
            and tags.get("pareto") in ("true", "false") and runs.steps(run_id) == steps
            and {"rounds.csv", "rounds.json", "accuracy_vs_density.png"} <= {a.path for a in
                                                                             runs.client.list_artifacts(run_id)})


def _paused(proc: subprocess.Popen):
    """The process stopped (SIGSTOP) while the block runs: what the block does happens between two of its steps."""
    import contextlib

    @contextlib.contextmanager
    def pause():
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)
    return pause()


def test_a_dead_mlflow_server_stops_nothing_logging_resumes_when_it_is_back_and_repair_logs_what_it_missed(
        tmp_path: Path):
    """(Logging used to stay off for the rest of the study once the server had failed, and `repair` left out the
    trials' files, the `feasible` and `pareto` tags and the study run's counts and files.)"""
    from ltstudy.study.frontier import pareto_trials

    port = free_port()
    store, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server.start(store, artifacts, port, tmp_path / "server.log")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, n_trials=5, cache_dir=str(tmp_path / "cache"),
                       train=LONG, search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 2})
    proc = start(tmp_path, "run", str(path), "--quiet", tag="run")
    try:
        def first_trial_logged() -> bool:
            try:
                return any(r.info.status == "FINISHED" for r in Runs.of(uri, "ft").children)
            except Exception:  # (the experiment does not exist yet)
                return False

        wait_for(first_trial_logged, 300, "the first trial's MLflow run to finish", proc, interval=0.2)
        with _paused(proc):  # the server dies between two of the run's calls
            server.kill()
            server.wait(timeout=30)
        wait_for(lambda: "MLflow at" in outputs(tmp_path, "run")[1], 300, "the run to notice", proc, interval=0.1)
        with _paused(proc):  # ...and is back before the run's next trial (the study has trials left)
            server = mlflow_server.start(store, artifacts, port, tmp_path / "server.log")
        code = proc.wait(timeout=600)
    finally:
        stop(proc)
    _, err = outputs(tmp_path, "run")
    assert code == 0, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "failed" in line]
    assert line.startswith(f"ltstudy: warning: MLflow at {uri} failed") and "ltstudy repair" in line
    (line,) = [line for line in err.splitlines() if "answers again" in line]
    assert line.startswith(f"ltstudy: MLflow at {uri} answers again: logging goes on")
    study = load(storage)
    assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 5  # training went on
    try:
        runs = Runs.of(uri, "ft")
        assert _fully_logged(runs, runs.of_trial(4), [0, 1, 2])  # logged again, without `repair`
        (parent,) = runs.parents
        assert parent.info.status == "FINISHED" and parent.data.metrics["n_trials"] == 5
        missed = [n for n in range(5) if n not in {int(r.data.tags["optuna.trial"]) for r in runs.children}
                  or not _fully_logged(runs, runs.of_trial(n), [0, 1, 2])]
        assert 1 in missed  # (the trial MLflow died under)

        done = run(tmp_path, "repair", str(path), timeout=300)
        assert done.returncode == 0, done.stderr
        runs = Runs.of(uri, "ft")
        assert runs.running() == []
        assert sorted(int(r.data.tags["optuna.trial"]) for r in runs.children) == [0, 1, 2, 3, 4]
        assert all(_fully_logged(runs, r, [0, 1, 2]) for r in runs.children)  # every round once, files, tags
        best = {t.number for t in pareto_trials(load(storage))}
        assert {int(r.data.tags["optuna.trial"]) for r in runs.children if r.data.tags["pareto"] == "true"} == best
        assert {"summary.json", "round_frontier.json", "pareto.png"} <= {
            a.path for a in runs.client.list_artifacts(runs.parents[0].info.run_id)}
    finally:
        stop(server)


# --------------------------------------------------------------------------- PostgreSQL


def test_every_storage_call_of_optunas_rdb_storage_rides_out_a_restart():
    """Public or private: Optuna's cached storage calls `_set_trial_param`, `_create_new_trial` and `_get_trials`
    directly (a restart during `suggest_float` once killed a worker), and get_trial_user_attrs was left out once."""
    import re

    import optuna.storages._cached_storage as cached
    from optuna.storages import RDBStorage

    from ltstudy.study.rdb_retry import _CALLS, RetryingRDBStorage

    no_session = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    called = set(re.findall(r"self\._backend\.(\w+)\(", Path(cached.__file__).read_text())) - no_session
    assert {"_set_trial_param", "_create_new_trial", "_get_trials"} <= called
    assert called - set(_CALLS) == set()
    assert all(getattr(RetryingRDBStorage, name) is not getattr(RDBStorage, name) for name in _CALLS)


def test_a_connection_cut_during_a_suggestion_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """What PostgreSQL says to its clients on a restart (AdminShutdown), raised once while a trial's parameter is
    written through the study's cached storage: the suggestion succeeds and the parameter is stored once."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    from ltstudy.study.rdb_retry import RetryingRDBStorage

    storage = RetryingRDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setattr(RetryingRDBStorage, "retry_window", 30.0)
    study = optuna.create_study(storage=storage, study_name="cut")
    real, cuts = RDBStorage._set_trial_param_without_commit, []

    def cut_once(self, *args, **kwargs):
        if not cuts:
            cuts.append(1)
            raise sqlalchemy.exc.OperationalError(
                "SELECT trials", {}, Exception("terminating connection due to administrator command"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, "_set_trial_param_without_commit", cut_once)
    trial = study.ask()
    assert trial.suggest_float("prune_rate", 0.2, 0.5) == pytest.approx(study.trials[0].params["prune_rate"])
    assert cuts == [1]
    assert optuna.load_study(study_name="cut", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials[0].params.keys() \
        == {"prune_rate"}


def test_a_postgresql_restart_under_two_workers_loses_no_trial(tmp_path: Path, pg: PgServer):
    storage, uri = pg.create_database("optuna"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_study(tmp_path, n_trials=2, train={"iterations": 1000, "eval_every": 250},
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 2})
    assert run(tmp_path, "run", str(path), "--storage", storage, "--tracking-uri", uri, "--n-trials", "0",
               "--quiet").returncode == 0
    common = ["--storage", storage, "--tracking-uri", uri, "--quiet", "--no-cache"]
    procs = [start(tmp_path, "worker", str(path), *common, tag=f"w{i}") for i in range(2)]
    try:
        study = load(storage)
        wait_for(lambda: len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == 2, 180,
                 "two running trials", procs[0], interval=0.2)
        pg.restart()
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            stop(p)
    errs = [outputs(tmp_path, f"w{i}")[1] for i in range(2)]
    assert codes == [0, 0], errs
    assert not [e for e in errs if "Traceback" in e]
    trials = load(storage).get_trials(deepcopy=False)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) >= 2  # both trials the restart cut across
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == []


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_after_the_grace_period(
        tmp_path: Path, pg: PgServer, capsys):
    storage, uri = pg.create_database("optuna"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    grace = 5
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, heartbeat_interval=1, grace_period=grace)
    assert cli.main(["run", str(path), "--n-trials", "0", "--quiet"]) == 0
    orphan = load(storage).ask({"prune_rate": optuna.distributions.CategoricalDistribution([0.2, 0.5])})
    # (asked and never registered: no owner, no heartbeat row, which Optuna's own sweep never fails)
    assert cli.main(["repair", str(path)]) == 0
    if time.time() - orphan.datetime_start.timestamp() < grace:  # (unless the machine stalled that long)
        assert load(storage).trials[orphan.number].state == TrialState.RUNNING  # younger than the grace period
    wait_for(lambda: time.time() - orphan.datetime_start.timestamp() > grace + 0.5, 30, "the grace period")
    capsys.readouterr()
    assert cli.main(["repair", str(path)]) == 0
    assert "failed 1 stale trial (re-queued for a worker)" in capsys.readouterr().out
    trials = load(storage).trials
    assert trials[orphan.number].state == TrialState.FAIL
    assert "never registered" in trials[orphan.number].user_attrs["fail_reason"]
    assert [queued_params(t) for t in trials if t.state == TrialState.WAITING] == [orphan.params]


def test_a_trial_whose_worker_process_is_gone_is_failed_at_once_and_a_live_one_is_spared(
        tmp_path: Path, tmp_path_factory, capsys):
    path, storage, _ = finished_study(tmp_path, tmp_path_factory, n_trials=0)
    from ltstudy.engine.processes import start_time

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "120"])
    study = load(storage)
    dead, live = study.ask(), study.ask()
    host = socket.gethostname()
    dead.set_user_attr(OWNER_ATTR, f"{host}:{gone.pid}:")
    live.set_user_attr(OWNER_ATTR, f"{host}:{alive.pid}:{start_time(alive.pid)}")
    capsys.readouterr()
    try:
        assert cli.main(["repair", str(path)]) == 0
    finally:
        alive.kill()
        alive.wait()
    trials = load(storage).trials
    assert trials[dead.number].state == TrialState.FAIL and "died" in trials[dead.number].user_attrs["fail_reason"]
    assert trials[live.number].state == TrialState.RUNNING
    (requeued,) = [t for t in trials if t.state == TrialState.WAITING]
    assert OWNER_ATTR not in requeued.user_attrs  # the retry gets its own owner when it is picked up


def test_on_one_machine_a_trial_left_without_an_owner_is_failed_at_once(tmp_path: Path, tmp_path_factory, capsys):
    """Asking and registering happen under one lock beside a file storage: an unowned trial seen under that lock
    was left by a process that died in between (a kill, a full disk), so no grace period is waited for."""
    path, storage, _ = finished_study(tmp_path, tmp_path_factory, n_trials=0, grace_period=3600)
    orphan = load(storage).ask({"prune_rate": optuna.distributions.CategoricalDistribution([0.2, 0.5])})
    capsys.readouterr()
    assert cli.main(["repair", str(path)]) == 0
    assert "failed 1 stale trial" in capsys.readouterr().out
    trial = load(storage).trials[orphan.number]
    assert trial.state == TrialState.FAIL and "between asking for it and registering" in trial.user_attrs[
        "fail_reason"]


# --------------------------------------------------------------------------- SIGKILL to the parent


def test_workers_die_with_a_killed_parent_and_the_next_run_finishes_the_study(tmp_path: Path, tmp_path_factory):
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=2,
                       train=LONG, search={"prune_rate": [0.2, 0.5], "rewind_iter": 20, "rounds": 2})
    proc = start(tmp_path, "run", str(path), "--jobs", "2", "--quiet", tag="run")
    try:
        wait_for(lambda: running(storage) == 2, 180, "two running trials", proc, interval=0.2)
        workers = [w for w in children(proc.pid) if alive(w)]
        assert len(workers) >= 2
        proc.kill()  # SIGKILL: the parent cannot forward anything
        proc.wait(timeout=30)
        try:
            wait_for(lambda: not [w for w in workers if alive(w)], 90, "the workers to stop")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; their output: {outputs(tmp_path, 'run')}") from None
    finally:
        stop(proc)
    trials = load(storage).get_trials(deepcopy=False)
    assert sorted(t.state.name for t in trials) == ["FAIL", "FAIL", "WAITING", "WAITING"]
    again = run(tmp_path, "run", str(path), "--quiet", timeout=300)
    assert again.returncode == 0, again.stderr
    trials = load(storage).get_trials(deepcopy=False)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2  # n_trials, not more
    runs = Runs.of(uri, "ft")
    assert runs.running() == [] and [r.info.status for r in runs.parents] == ["FINISHED"]


# --------------------------------------------------------------------------- a full disk


class _FullDisk:
    """An `os` module whose fsync fails as a full disk does (ENOSPC), for the one module it replaces."""

    def __init__(self, real, after: int = 0):
        self._real, self.left = real, after

    def __getattr__(self, name):
        return getattr(self._real, name)

    def fsync(self, fd):
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= 1
        return self._real.fsync(fd)


def test_a_full_disk_under_the_cache_stops_the_run_with_one_line_naming_it(tmp_path: Path, tmp_path_factory,
                                                                           monkeypatch, capsys):
    import ltstudy.engine.cache as cache_module

    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=3)
    monkeypatch.setattr(cache_module, "os", _FullDisk(os))
    assert cli.main(["run", str(path), "--quiet"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"ltstudy run: no space left on the device under the training cache {tmp_path / 'cache'}; free "
                    "some space (or point it elsewhere) and run the same command again: finished trials are kept, "
                    "interrupted ones are queued again")
    (failed, queued) = load(storage).get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"].startswith("no space left")
    assert queued.state == TrialState.WAITING and queued_params(queued) == failed.params
    assert Runs.of(uri, "ft").running() == []
    monkeypatch.undo()
    assert cli.main(["run", str(path), "--quiet"]) == 0  # space again: the study finishes


def test_a_full_disk_under_the_journal_leaves_it_whole(tmp_path: Path, tmp_path_factory, monkeypatch, capsys):
    import ltstudy.study.journal as journal_module

    path, storage, _ = finished_study(tmp_path, tmp_path_factory, n_trials=1)
    journal = tmp_path / "optuna.journal"
    monkeypatch.setattr(journal_module, "os", _FullDisk(os, after=3))
    assert cli.main(["run", str(path), "--more", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"no space left on the device under the storage journal {journal}" in err
    assert "Traceback" not in err
    journal_records(journal)  # no torn line: the failed write was cut back
    monkeypatch.undo()
    assert cli.main(["repair", str(path)]) == 0  # (once there is space again)
    assert [t.state for t in load(storage).trials if t.state not in (TrialState.COMPLETE, TrialState.FAIL)] in (
        [], [TrialState.WAITING])  # nothing RUNNING; a trial that had started is queued again
    assert cli.main(["run", str(path), "--more", "1", "--quiet"]) == 0
    assert len(values(load(storage))) == 2


def test_a_full_disk_under_the_mlflow_store_is_one_warning_and_repair_fills_the_gap(tmp_path: Path,
                                                                                   tmp_path_factory, monkeypatch,
                                                                                   capsys):
    import sqlite3

    from ltstudy.study.tracking import Tracker

    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=2)
    real = Tracker.log_metrics

    def full(self, run_id, metrics, step=0):
        if "val_accuracy" in metrics and step >= 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, run_id, metrics, step)

    monkeypatch.setattr(Tracker, "log_metrics", full)
    assert cli.main(["run", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line]
    assert line.startswith(f"ltstudy: warning: MLflow at {uri} failed (OperationalError: database or disk is full)")
    assert len(values(load(storage))) == 2  # training went on
    monkeypatch.undo()
    assert cli.main(["repair", str(path)]) == 0
    runs = Runs.of(uri, "ft")
    assert runs.running() == [] and len(runs.children) == 2
    assert all(runs.steps(r.info.run_id) == [0, 1] for r in runs.children)


# --------------------------------------------------------------------------- a stop signal at any point


def _signal_after(monkeypatch, target, name: str, before: bool = False, times: int = 1):
    """Replace target.name with a call that SIGTERMs this process just after (or before) the real one."""
    real = getattr(target, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        fire = calls["n"] == times
        if fire and before:
            os.kill(os.getpid(), signal.SIGTERM)
        result = real(*args, **kwargs)
        if fire and not before:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(target, name, wrapped)


def _points():
    from ltstudy.engine import round_protocol
    from ltstudy.study import loop, optuna_api, trial_callbacks
    from ltstudy.study.mlflow_logging import StudyLog

    return {
        "just asked": (optuna_api, "ask", False, 1),
        "owner recorded": (loop, "register", False, 1),
        "run opened": (StudyLog, "start_trial", False, 1),
        "parameters logged": (StudyLog, "dataset", False, 1),
        "first evaluation": (round_protocol, "evaluate", False, 1),
        "dense round done": (trial_callbacks.SeedRounds, "on_round_end", False, 1),
        "while telling": (loop, "_tell", True, 1),
        "told": (StudyLog, "after_trial", False, 1),
    }


@pytest.mark.parametrize("point", list(_points()))
def test_a_stop_signal_at_any_point_of_a_trials_life_leaves_nothing_running(tmp_path: Path, tmp_path_factory,
                                                                           monkeypatch, capsys, point: str):
    """(A worker stopped between asking for its trial and starting it used to leave the trial RUNNING.)"""
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=2,
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 1})
    target, name, before, times = _points()[point]
    _signal_after(monkeypatch, target, name, before, times)
    assert cli.main(["run", str(path), "--quiet"]) == 130
    trials = load(storage).get_trials(deepcopy=False)
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == []
    failed = [t for t in trials if t.state == TrialState.FAIL]
    queued = [t for t in trials if t.state == TrialState.WAITING]
    if point in ("while telling", "told"):  # the tell is never cut in two: the trial is complete
        assert [t.state for t in trials] == [TrialState.COMPLETE]
    else:
        assert len(failed) == 1 and failed[0].user_attrs.get("fail_reason", "interrupted") == "interrupted"
        assert [queued_params(t) for t in queued] == [failed[0].params]  # queued again, once
    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    assert [r.info.status for r in runs.parents] == ["KILLED"]
    assert "Traceback" not in capsys.readouterr().err
