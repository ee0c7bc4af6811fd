"""A full disk under a study's stores, command by command: one line naming the place, nothing corrupted, nothing
half-written left behind, and the commands that only read keep working.

Two ways to fill a disk without a mount: a file-size limit on the command's
process (RLIMIT_FSIZE = 0: the kernel refuses every write that would grow or
touch a file, with EFBIG where a full disk says ENOSPC), and SQLite's own
"database or disk is full" injected into MLflow's database calls, where
MLflow's error handling, logging included, runs as it would.
"""

from __future__ import annotations

import resource
import signal
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from ltstudy import cli
from ltstudy.study.storage import open_storage
from tests.ft_helpers import cli_env, ltstudy_cmd, sqlite_tracking, write_study

TORN = b'{"op_code":6,"worker_id":"a-1","trial_id":1,"sta'


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LTSTUDY_CACHE_DIR", raising=False)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def finished_study(tmp_path: Path, tmp_path_factory) -> tuple[Path, str, str]:
    """A finished two-trial study; (study file, storage URL, tracking URI)."""
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=2,
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 1})
    assert cli.main(["run", str(path), "--quiet"]) == 0
    return path, storage, uri


def complete(storage: str) -> int:
    study = optuna.load_study(study_name="ft", storage=open_storage(storage))
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def on_a_full_disk(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`ltstudy ARGS` whose process may not grow or write any file."""
    return subprocess.run(ltstudy_cmd(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)))


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "cache" not in p.parts)


def test_on_a_full_disk_reading_commands_work_and_the_others_stop_in_one_line(tmp_path: Path, tmp_path_factory,
                                                                            capsys):
    """(A torn tail, the mark of a write a full disk cut short, made every command crash with a raw OSError.)"""
    path, storage, _ = finished_study(tmp_path, tmp_path_factory)
    journal = tmp_path / "optuna.journal"
    intact = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(TORN)
    files = listing(tmp_path)

    pareto = on_a_full_disk(tmp_path, "pareto", str(path))
    assert pareto.returncode == 0 and "Pareto" in pareto.stdout
    assert pareto.stderr.splitlines() == [f"ltstudy pareto: warning: storage journal {journal} ended in {len(TORN)} "
                                          "damaged bytes (a writer killed mid-write, or a full disk); dropped them (no "
                                          "room left on the device for a copy) and continued from the last complete "
                                          "record"]
    assert journal.read_bytes() == intact
    for command in ("compare", "studies"):
        done = on_a_full_disk(tmp_path, command, str(path))
        assert (done.returncode, done.stderr) == (0, ""), command

    report = on_a_full_disk(tmp_path, "report", str(path), "--out", "r.html")
    assert report.returncode == 1
    assert report.stderr.startswith("ltstudy report: a file under r.html reached the largest size allowed")
    assert len(report.stderr.splitlines()) == 1

    more = on_a_full_disk(tmp_path, "run", str(path), "--more", "1", "--quiet")
    assert more.returncode == 1
    assert more.stderr.splitlines() == [f"ltstudy run: a file under the storage journal {journal} reached the largest "
                                        "size allowed (ulimit -f, or the file system's limit); free some space (or "
                                        "point it elsewhere) and run the same command again: finished trials are "
                                        "kept, interrupted ones are queued again"]
    repair = on_a_full_disk(tmp_path, "repair", str(path))
    assert repair.returncode == 0 and repair.stderr == ""

    assert journal.read_bytes() == intact  # nothing corrupted...
    assert listing(tmp_path) == files  # ...and nothing left behind
    capsys.readouterr()
    assert cli.main(["run", str(path), "--more", "1", "--quiet"]) == 0  # room again: the study goes on
    assert complete(storage) == 3


class _SqliteFull:
    """SQLite's "database or disk is full" for MLflow's writes to `db`, from the `after`-th on."""

    def __init__(self, db: Path, after: int = 0):
        self.db, self.left = str(db), after

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if self.db in str(conn.engine.url) and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            if self.left <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            self.left -= 1


@pytest.fixture
def mlflow_disk_full(tmp_path: Path):
    """Install a _SqliteFull on every SQLAlchemy engine; removed after the test."""
    installed: list[_SqliteFull] = []

    def install(after: int = 0) -> None:
        hook = _SqliteFull(tmp_path / "mlflow.db", after)
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", hook)
        installed.append(hook)

    yield install
    for hook in installed:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", hook)


def test_a_full_disk_under_the_mlflow_store_as_a_run_starts_stops_it_in_one_line(tmp_path: Path, tmp_path_factory,
                                                                                 capfd, mlflow_disk_full):
    """(MLflow printed its traceback of the failed update, then the run died with its own, 234 lines in all.)"""
    path, storage, uri = finished_study(tmp_path, tmp_path_factory)
    capfd.readouterr()
    mlflow_disk_full()
    assert cli.main(["run", str(path), "--more", "1", "--quiet"]) == 1
    _out, err = capfd.readouterr()
    assert err.splitlines() == [f"ltstudy run: no space left on the device under the MLflow store {uri}; free some "
                                "space (or point it elsewhere) and run the same command again: finished trials are "
                                "kept, interrupted ones are queued again"]
    assert complete(storage) == 2


def test_a_full_disk_under_the_mlflow_store_mid_run_is_one_warning_without_mlflows_tracebacks(
        tmp_path: Path, tmp_path_factory, capfd, mlflow_disk_full):
    path, storage, uri = finished_study(tmp_path, tmp_path_factory)
    capfd.readouterr()
    mlflow_disk_full(after=3)  # (the parent run reopens, the trial's run opens: then the disk is full)
    assert cli.main(["run", str(path), "--more", "1", "--quiet"]) == 0
    err = capfd.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith(f"ltstudy: warning: MLflow at {uri} failed (DiskFull: no space left on the device under "
                           f"the MLflow store {uri}")
    assert complete(storage) == 3  # training went on
