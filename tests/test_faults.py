"""Fault tolerance: killed workers, interrupted runs, repair, and bad database URLs.

A worker that dies mid-trial (SIGKILL) is detected by Optuna's heartbeat on
PostgreSQL; the next worker fails its trial, re-queues it with the same
parameters, closes the dead run in MLflow and resumes from the last
checkpointed round. SIGTERM or SIGINT to `ltstudy run` (or SIGTERM to a
worker: pre-emption) ends the trial as FAIL ('interrupted'), closes every
MLflow run, queues the trial once and exits 130; running again resumes that
trial, whose run holds every round of the trial once (the dead attempt's run
keeps what it had logged). `ltstudy repair` fails stale trials and closes
orphaned runs without touching live ones. A bad database URL fails at its
first connection attempt, with one line that never shows the password.

The PostgreSQL tests use the private server of tests/pg.py (skipped without
PostgreSQL's server binaries).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ltstudy import cli
from ltstudy.engine.cache import RoundCache
from ltstudy.engine.ticket import TicketSearch
from ltstudy.study.attrs import LINEAGE_ATTR, PARENT_ATTR, RUN_ATTR
from ltstudy.study.config import load_study
from ltstudy.study.storage import open_storage
from ltstudy.study.tracking import Tracker
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

# Rounds long enough (about a second each) to signal a run between two of them.
LONG = {"iterations": 1200, "eval_every": 200, "batch_size": 60}
K = 20  # rewind iteration: the dense checkpoint stores θ_0 and θ_20, so round 1's makes 3 entries


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """cwd is the test's folder; pytest keeps its own SIGINT and SIGTERM handlers (`ltstudy run` replaces them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LTSTUDY_CACHE_DIR", raising=False)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def stored_rounds(path: Path, params: dict, cache: RoundCache, digits) -> list[int]:
    """The rounds of a trial with `params` whose checkpoint is in `cache`."""
    cfg = load_study(path)
    search = TicketSearch(cfg.trial_config(params, cfg.study.seed), data=digits, cache=cache)
    return [r.round for r in search.restore()]  # (the prefix is followed through the entries' digests)


def assert_each_run_holds_its_rounds_once(runs: Runs, dead_run: str, retry_run: str, n_rounds: int,
                                          before: list[int]) -> None:
    """The retry's run holds every round of the trial once, those it took from the cache too (no `repair`
    needed); the stopped attempt's run keeps the rounds it had logged, once each."""
    assert runs.steps(retry_run) == list(range(n_rounds + 1))
    dead = runs.steps(dead_run)
    assert dead == sorted(set(dead)) and set(dead) <= set(before), (dead, before)


# --------------------------------------------------------------------------- SIGKILL, heartbeat, retry


def test_a_killed_worker_s_trial_is_retried_by_the_next_worker_from_its_checkpoint(
        tmp_path: Path, pg: PgServer, digits):
    storage, uri = pg.create_database("optuna"), pg.create_database("mlflow")
    cache = RoundCache(tmp_path / "cache")
    path = write_study(tmp_path, heartbeat_interval=1, grace_period=3, cache_dir=str(cache.root), train=LONG,
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": K, "rounds": 4})
    common = ["--storage", storage, "--tracking-uri", uri]
    assert cli.main(["run", str(path), *common, "--n-trials", "0", "--quiet"]) == 0

    worker_a = start(tmp_path, "worker", str(path), *common, "--n-trials", "1", "--quiet", tag="a")
    try:
        waited = wait_for(lambda: cache.stats().entries >= 3, 120, "round 1's checkpoint", worker_a)
        worker_a.send_signal(signal.SIGKILL)
        assert worker_a.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop(worker_a)
    killed_at = time.monotonic()
    study = optuna.load_study(study_name="ft", storage=open_storage(storage))
    (attempt,) = study.get_trials(deepcopy=False)
    assert attempt.state == TrialState.RUNNING  # nobody has noticed yet
    before_kill = stored_rounds(path, attempt.params, cache, digits)
    assert before_kill[:2] == [0, 1] and before_kill == list(range(len(before_kill)))
    assert len(before_kill) < 5, "the worker finished every round before it was killed; lengthen the rounds"
    a_run = attempt.user_attrs[RUN_ATTR]

    time.sleep(max(0.0, 3 + 1 - (time.monotonic() - killed_at)))  # past the grace period
    b = run(tmp_path, "worker", str(path), *common, "--n-trials", "1", "--quiet", timeout=180)
    assert b.returncode == 0, b.stderr
    assert "1 trial (1 COMPLETE); repaired 1 stale trials and 1 runs at start-up" in b.stdout

    first, retry = study.get_trials(deepcopy=False)
    assert first.state == TrialState.FAIL and first.number == 0
    assert retry.state == TrialState.COMPLETE and retry.number == 1
    assert retry.params == first.params
    assert retry.system_attrs.get("failed_trial") == 0  # Optuna's heartbeat retry
    rounds = retry.user_attrs["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3, 4]
    assert [r["reused"] for r in rounds] == [r in before_kill for r in range(5)]
    assert [r["computed_iterations"] for r in rounds if r["reused"]] == [0] * len(before_kill)
    # Nothing trained twice: each later round trains T - k iterations (θ_k came from the checkpoint).
    trained = [r["computed_iterations"] for r in rounds if not r["reused"]]
    assert trained == [LONG["iterations"] - K] * (5 - len(before_kill))

    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    dead, retried = runs.of_trial(0), runs.of_trial(1)
    assert dead.info.run_id == a_run and dead.info.status == "FAILED" and dead.data.tags["state"] == "FAIL"
    assert dead.data.tags["reason"]
    assert retried.info.status == "FINISHED" and retried.data.tags["retry_of"] == a_run
    assert retried.data.tags["retry_of_trial"] == "0"
    assert retry.user_attrs[LINEAGE_ATTR] == [a_run]
    assert_each_run_holds_its_rounds_once(runs, a_run, retried.info.run_id, 4, before_kill)
    print(f"kill after {waited:.1f} s; rounds checkpointed before the kill (reused by the retry): {before_kill}")


# --------------------------------------------------------------------------- SIGTERM / SIGINT to `ltstudy run`


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_closes_everything_and_the_same_command_resumes_the_trial(
        tmp_path: Path, tmp_path_factory, digits, signum, capsys):
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    cache = RoundCache(tmp_path / "cache")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(cache.root), train=LONG,
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": K, "rounds": 3})

    proc = start(tmp_path, "run", str(path), "--n-trials", "1", "--quiet", tag="run")
    try:
        wait_for(lambda: cache.stats().entries >= 3, 120, "round 1's checkpoint", proc)
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        stop(proc)
    out, err = outputs(tmp_path, "run")
    assert code == 130, err
    assert "interrupted: finished trials are kept" in err
    assert re.search(r"study 'ft': ran 1 trial \(1 FAIL\) in \d+ s; 0 of n_trials = 1 finished", out)

    study = optuna.load_study(study_name="ft", storage=open_storage(storage))
    interrupted, queued = study.get_trials(deepcopy=False)
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["fail_reason"] == "interrupted"
    assert queued.state == TrialState.WAITING
    assert queued.system_attrs["fixed_params"] == interrupted.params  # enqueued with the same settings
    done = stored_rounds(path, interrupted.params, cache, digits)
    assert done[:2] == [0, 1] and done == list(range(len(done))) and len(done) < 4
    assert [r["round"] for r in interrupted.user_attrs["rounds"]] == done[: len(interrupted.user_attrs["rounds"])]

    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    (parent,) = runs.parents
    assert parent.info.status == "KILLED"
    first_run = runs.of_trial(0)
    assert first_run.info.status == "FAILED" and first_run.data.tags["state"] == "FAIL"
    assert first_run.data.tags["reason"] == "interrupted"

    # The same command again: the queued copy runs first and loads the finished rounds.
    assert cli.main(["run", str(path), "--n-trials", "1", "--quiet"]) == 0
    assert re.search(r"study 'ft': ran 1 trial \(1 COMPLETE\) in \d+ s; 1 of n_trials = 1 finished",
                     capsys.readouterr().out)
    resumed = study.get_trials(deepcopy=False)[1]
    assert resumed.state == TrialState.COMPLETE and resumed.params == interrupted.params
    assert [r["reused"] for r in resumed.user_attrs["rounds"]] == [r in done for r in range(4)]
    assert all(r["computed_iterations"] == 0 for r in resumed.user_attrs["rounds"] if r["reused"])
    assert not resumed.user_attrs.get("fail_reason")  # its own outcome, not its predecessor's
    assert len(study.get_trials(deepcopy=False)) == 2

    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    assert [p.info.run_id for p in runs.parents] == [parent.info.run_id]
    assert runs.parents[0].info.status == "FINISHED"
    assert "reason" not in runs.parents[0].data.tags  # it completed: no longer "interrupted"
    second_run = runs.of_trial(1)
    assert second_run.info.status == "FINISHED" and second_run.data.tags["retry_of"] == first_run.info.run_id
    assert_each_run_holds_its_rounds_once(runs, first_run.info.run_id, second_run.info.run_id, 3, done)


def test_a_preempted_worker_queues_its_trial_once_and_the_next_worker_resumes_it(tmp_path: Path, pg: PgServer,
                                                                                   digits, capsys):
    """SIGTERM (a scheduler's pre-emption) to `ltstudy worker` on PostgreSQL with heartbeats on."""
    storage, uri = pg.create_database("optuna"), pg.create_database("mlflow")
    cache = RoundCache(tmp_path / "cache")
    path = write_study(tmp_path, heartbeat_interval=1, grace_period=2, cache_dir=str(cache.root), train=LONG,
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": K, "rounds": 3})
    common = ["--storage", storage, "--tracking-uri", uri]
    assert cli.main(["run", str(path), *common, "--n-trials", "0", "--quiet"]) == 0

    worker = start(tmp_path, "worker", str(path), *common, "--n-trials", "1", "--quiet", tag="w")
    try:
        wait_for(lambda: cache.stats().entries >= 3, 120, "round 1's checkpoint", worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 130
    finally:
        stop(worker)
    _, err = outputs(tmp_path, "w")
    assert "interrupted: the running trial is failed and queued again" in err
    study = optuna.load_study(study_name="ft", storage=open_storage(storage))
    first, queued = study.get_trials(deepcopy=False)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    assert queued.state == TrialState.WAITING
    done = stored_rounds(path, first.params, cache, digits)
    assert done[:2] == [0, 1] and len(done) < 4

    time.sleep(2.5)  # past the grace period: a stale heartbeat would now be noticed (there must be none)
    assert cli.main(["worker", str(path), *common, "--n-trials", "1", "--quiet"]) == 0
    assert "1 trial (1 COMPLETE); repaired 0 stale trials and 0 runs at start-up" in capsys.readouterr().out
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]  # queued once, not twice
    assert trials[1].params == first.params
    assert [r["reused"] for r in trials[1].user_attrs["rounds"]] == [r in done for r in range(4)]
    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    assert runs.of_trial(0).info.status == "FAILED"
    assert runs.of_trial(1).data.tags["retry_of"] == runs.of_trial(0).info.run_id
    assert_each_run_holds_its_rounds_once(runs, runs.of_trial(0).info.run_id, runs.of_trial(1).info.run_id, 3, done)


# --------------------------------------------------------------------------- ltstudy repair


def test_repair_fails_stale_trials_and_closes_orphaned_runs_but_spares_live_ones(tmp_path: Path, pg: PgServer,
                                                                                 capsys):
    from ltstudy.study.optuna_api import Heartbeat

    storage, uri = pg.create_database("optuna"), pg.create_database("mlflow")
    path = write_study(tmp_path, heartbeat_interval=1, grace_period=3)
    common = ["--storage", storage, "--tracking-uri", uri]
    assert cli.main(["run", str(path), *common, "--n-trials", "0", "--quiet"]) == 0
    capsys.readouterr()

    hb_storage = open_storage(storage, heartbeat=(1, 3, 3))
    study = optuna.load_study(study_name="ft", storage=hb_storage)
    tracker = Tracker(uri)
    exp_id, parent = study.user_attrs["mlflow_experiment_id"], study.user_attrs[PARENT_ATTR]

    failed = study.ask()  # a trial that failed, whose worker never closed its run
    failed_run = tracker.start_run(exp_id, "trial-0", {"optuna.trial": failed.number}, parent_run_id=parent)
    study.tell(failed, state=TrialState.FAIL)
    dead, live = study.ask(), study.ask()  # RUNNING; one worker died, the other is alive
    dead_run = tracker.start_run(exp_id, "trial-1", {"optuna.trial": dead.number}, parent_run_id=parent)
    live_run = tracker.start_run(exp_id, "trial-2", {"optuna.trial": live.number}, parent_run_id=parent)
    hb_storage.record_heartbeat(dead._trial_id)  # its last beat
    with Heartbeat(hb_storage, study, live.number):  # the live worker beats every second throughout
        time.sleep(3.5)  # the dead one is past the grace period
        assert cli.main(["repair", str(path), *common]) == 0
        out = capsys.readouterr().out
        assert "'ft': failed 1 stale trial (re-queued for a worker), closed 2 MLflow runs" in out, out

        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        assert states == {0: TrialState.FAIL, 1: TrialState.FAIL, 2: TrialState.RUNNING, 3: TrialState.WAITING}
        client = Runs.of(uri, "ft").client
        assert client.get_run(failed_run).info.status == "FAILED"
        assert client.get_run(dead_run).info.status == "FAILED"
        assert client.get_run(dead_run).data.tags["state"] == "FAIL"
        assert client.get_run(live_run).info.status == "RUNNING"

        # Idempotent: nothing left to repair.
        assert cli.main(["repair", str(path), *common]) == 0
        assert "failed 0 stale trials (re-queued for a worker), closed 0 MLflow runs" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad database URLs


def _bad_urls(pg: PgServer) -> dict[str, tuple[str, str]]:
    """name -> (URL, the password in it)."""
    return {
        "closed port": (pg.url("ft", password="s3cret-closed-port", port=free_port()), "s3cret-closed-port"),
        "wrong password": (pg.url("postgres", password="s3cret-wrong-pw"), "s3cret-wrong-pw"),
    }


@pytest.fixture
def pg_connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, int | None]]:
    """Every connection attempt this process makes to PostgreSQL: (its password, its connect timeout)."""
    import psycopg

    real, seen = psycopg.connect, []

    def connect(*args, **kwargs):
        seen.append((kwargs.get("password"), kwargs.get("connect_timeout")))
        return real(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", connect)  # (what SQLAlchemy's psycopg dialect calls)
    return seen


@pytest.mark.parametrize("case", ["closed port", "wrong password"])
@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_bad_storage_url_fails_at_its_first_attempt_with_one_line_naming_host_and_port(
        tmp_path: Path, pg: PgServer, pg_connections, capsys, case, command):
    """Fast means one connection attempt, bounded by its connect timeout: never the retries that ride out a
    restart of a database that was reachable (rdb_retry.py, minutes)."""
    url, password = _bad_urls(pg)[case]
    port = re.search(r":(\d+)/", url).group(1)
    path = write_study(tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli.main([command, str(path), "--storage", url, "--quiet"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ltstudy {command}: error: cannot reach storage database at 127.0.0.1:{port}")
    if case == "wrong password":
        assert "password authentication failed" in lines[0]
    assert password not in err + out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlflow").exists()
    assert [timeout for pw, timeout in pg_connections if pw == password] == [5]


def test_a_bad_tracking_url_fails_the_same_way(tmp_path: Path, pg: PgServer, pg_connections, capsys):
    url, password = _bad_urls(pg)["wrong password"]
    path = write_study(tmp_path)
    code = cli.main(["run", str(path), "--storage", pg.create_database("optuna"), "--tracking-uri", url])
    assert code == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"ltstudy run: error: cannot reach MLflow tracking database at 127.0.0.1:{pg.port}: ")
    assert password not in out + err
    assert [timeout for pw, timeout in pg_connections if pw == password] == [5]  # one attempt, bounded


def test_pg_fixture_refuses_a_wrong_password(pg: PgServer):
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=pg.host, port=pg.port, user="lt", password="wrong", dbname="postgres",
                        connect_timeout=5).close()
    assert os.path.isdir(pg.root)


# --------------------------------------------------------------------------- SIGTERM to `ltstudy run --jobs 2`


def test_sigterm_to_run_with_jobs_reaches_every_worker_and_leaves_nothing_running(tmp_path: Path, tmp_path_factory):
    """Kubernetes, Slurm or `kill PID` signal the parent only: it must forward, wait, and not leave workers behind."""
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    cache = RoundCache(tmp_path / "cache")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(cache.root), n_trials=2,
                       train=LONG, search={"prune_rate": [0.2, 0.5], "rewind_iter": K, "rounds": 3})
    proc = start(tmp_path, "run", str(path), "--jobs", "2", "--quiet", tag="run")
    try:
        study = None

        def both_running() -> bool:
            nonlocal study
            try:
                study = study or optuna.load_study(study_name="ft", storage=open_storage(storage))
            except (KeyError, FileNotFoundError):  # the parent has not created it yet
                return False
            # (and each has its MLflow run: a signal before that leaves a trial with no run until `repair`)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return len(running) == 2 and all(RUN_ATTR in t.user_attrs for t in running)

        wait_for(both_running, 120, "two running trials with their runs", proc, interval=0.2)
        workers = children(proc.pid)
        assert len([w for w in workers if alive(w)]) >= 2
        proc.send_signal(signal.SIGTERM)  # the parent only
        code = proc.wait(timeout=300)  # (a bound against a hang: the workers must stop by themselves, below)
    finally:
        stop(proc)
    _, err = outputs(tmp_path, "run")
    assert code == 130, err
    assert not [w for w in workers if alive(w)], "a worker outlived its parent"
    assert "Traceback" not in err
    trials = optuna.load_study(study_name="ft", storage=open_storage(storage)).get_trials(deepcopy=False)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    # Each worker closed its own trial (one killed after the parent's grace period would have left it RUNNING).
    assert len(interrupted) == 2 and all(t.user_attrs["fail_reason"] == "interrupted" for t in interrupted)
    assert sum(t.state == TrialState.WAITING for t in trials) == 2  # both queued to resume
    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    assert {runs.of_trial(t.number).data.tags["reason"] for t in interrupted} == {"interrupted"}
    assert runs.parents[0].info.status == "KILLED"


# --------------------------------------------------------------------------- a fleet starting on an empty database


def test_workers_started_together_on_an_empty_database_create_one_study_and_all_work(tmp_path: Path, pg: PgServer):
    """(One of two workers used to die with a traceback: UniqueViolation while Optuna created its schema.)"""
    storage, uri = pg.create_database("optuna"), pg.create_database("mlflow")
    path = write_study(tmp_path, n_trials=4, search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0,
                                                     "rounds": 1})
    common = ["--storage", storage, "--tracking-uri", uri, "--quiet"]
    procs = [start(tmp_path, "worker", str(path), *common, tag=f"w{i}") for i in range(3)]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            stop(p)
    results = [outputs(tmp_path, f"w{i}") for i in range(3)]
    assert codes == [0, 0, 0], [err for _, err in results]
    assert not [err for _, err in results if "Traceback" in err]
    assert sum("created the study" in out for out, _ in results) == 1
    study = optuna.load_study(study_name="ft", storage=open_storage(storage))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert 4 <= len(complete) <= 4 + 2
    runs = Runs.of(uri, "ft")
    assert len(runs.parents) == 1 and runs.parents[0].info.run_id == study.user_attrs[PARENT_ATTR]
    assert runs.running() == []


# --------------------------------------------------------------------------- MLflow failing as a trial starts


def test_a_tracking_failure_as_a_trial_starts_stops_nothing_and_repair_closes_its_run(tmp_path: Path,
                                                                                    tmp_path_factory, monkeypatch,
                                                                                    capsys):
    """Optuna is the record of truth: the trial trains; MLflow, offline for the rest of the run, is mended later."""
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri)

    real = Tracker.log_params

    def unreachable(self, run_id, params):
        if "seeds" in params:  # a trial's parameters, logged right after its run is created
            raise ConnectionError("tracking server went away")
        return real(self, run_id, params)

    monkeypatch.setattr(Tracker, "log_params", unreachable)
    assert cli.main(["run", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "MLflow at" in line]
    assert line.startswith(f"ltstudy: warning: MLflow at {uri} failed (ConnectionError: tracking server went away)")
    assert "Traceback" not in err
    (trial,) = optuna.load_study(study_name="ft", storage=open_storage(storage)).get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE
    assert Runs.of(uri, "ft").running() != []  # what MLflow missed...
    monkeypatch.undo()
    assert cli.main(["repair", str(path)]) == 0  # ...is logged once it is back
    runs = Runs.of(uri, "ft")
    assert runs.running() == []
    assert runs.of_trial(0).info.status == "FINISHED" and runs.of_trial(0).data.params["seeds"] == "[0]"


@pytest.fixture
def stop_signals():
    """This process's SIGINT/SIGTERM handlers as a study installs them; the test's own ones back afterwards."""
    from ltstudy.study import signals

    saved = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    signals.interrupt_on_signals()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _signal_once_inside(calls: list):
    """A hook that signals this process the first time it runs, and lets the handler run there."""
    def hook(*args, **kwargs):
        if not calls:
            calls.append("signalled")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
    return hook


def test_a_stop_signal_whose_interrupt_was_swallowed_still_stops_the_loop(stop_signals):
    """A SIGTERM landing in a finalizer or a library's `except BaseException` must not be lost."""
    from ltstudy.study import signals

    signals.raise_if_requested()  # nothing asked yet
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # (the handler runs here, in the main thread)
    except BaseException:  # (what a careless finalizer does)
        pass
    with signals.deferred():
        signals.raise_if_requested()  # (never inside a section that must not be cut)
    with pytest.raises(KeyboardInterrupt):
        signals.raise_if_requested()
    signals.interrupt_on_signals()  # a fresh start forgets the old request
    signals.raise_if_requested()


def test_a_stop_signal_never_cuts_an_mlflow_write_in_two(stop_signals):
    """(A KeyboardInterrupt inside an SQLite commit left MLflow's store locked by the interrupted process.)"""
    from ltstudy.study.tracking import _retry

    steps: list = []

    @_retry
    def write():
        _signal_once_inside(steps)()  # (the handler runs in here: the write must go on to its end)
        steps.append("committed")

    with pytest.raises(KeyboardInterrupt):
        write()
    assert steps == ["signalled", "committed"]  # and the interrupt came right after it



def test_a_stop_signal_as_the_journal_lock_is_released_is_a_plain_interrupt(tmp_path: Path, monkeypatch,
                                                                            stop_signals):
    """(A SIGTERM between Optuna's rename and unlink of its lock made it unlink twice: a worker's traceback.)"""
    from ltstudy.study.journal import SafeJournalBackend

    journal = tmp_path / "optuna.journal"
    backend = SafeJournalBackend(str(journal))
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        real_unlink(path, *args, **kwargs)
        if str(path).endswith(".rename"):  # the lock, as its holder releases it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # (the handler runs here, inside Optuna's release)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(KeyboardInterrupt):  # not FileNotFoundError from a second unlink
        backend.append_logs([{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}])
    monkeypatch.undo()
    assert [line[:11] for line in journal.read_bytes().splitlines()] == [b'{"op_code":']
    assert list(tmp_path.iterdir()) == [journal]  # no lock left behind


def test_a_stop_signal_never_cuts_a_journal_storage_call_in_two(tmp_path: Path, monkeypatch, stop_signals):
    """(Optuna replays the journal record by record: a cut replay leaves this process's copy a record short.)"""
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    fresh = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    for _ in range(3):
        storage.create_new_trial(study_id)  # (records `fresh` replays on its next call)
    from optuna.storages.journal._storage import JournalStorageReplayResult

    calls: list = []
    apply = JournalStorageReplayResult._apply_create_trial
    hook = _signal_once_inside(calls)

    def apply_create_trial(self, log):  # (Optuna has counted the record as read just before this)
        hook()
        return apply(self, log)

    monkeypatch.setattr(JournalStorageReplayResult, "_apply_create_trial", apply_create_trial)
    with pytest.raises(KeyboardInterrupt):
        fresh.get_all_trials(study_id)
    assert calls == ["signalled"]
    assert len(fresh.get_all_trials(study_id)) == 3  # its copy is whole


def test_a_stop_signal_never_cuts_an_rdb_storage_call_in_two(tmp_path: Path, stop_signals):
    """(A KeyboardInterrupt inside an SQLite transaction loses the write, and can leave the file locked.)"""
    import sqlalchemy

    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    calls: list = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", _signal_once_inside(calls))
    with pytest.raises(KeyboardInterrupt):
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    assert calls == ["signalled"]
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]  # the write went through whole
