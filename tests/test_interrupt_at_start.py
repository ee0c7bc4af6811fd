"""Ctrl-C in a run's first seconds, in a fresh folder: one line and exit 130, and every store it was making is
either not there or whole.

The moments are forced, not timed: an import that raises KeyboardInterrupt,
a database statement of MLflow's migration that does, a stop signal sent just
after a call returns, and one that lands in a finalizer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from ltstudy import cli
from ltstudy.study import signals
from ltstudy.study.attrs import PARENT_ATTR
from ltstudy.study.storage import open_storage
from ltstudy.study.tracking import Tracker
from tests.ft_helpers import Runs, cli_env, write_study


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """cwd is the test's folder; the signal handlers and unraisable hook a run installs are put back afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LTSTUDY_CACHE_DIR", raising=False)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    before = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def fresh_study(tmp_path: Path) -> tuple[Path, str, str]:
    """A study file whose journal and MLflow store do not exist yet; (path, storage URL, tracking URI)."""
    storage = f"journal:{tmp_path / 'optuna.journal'}"
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    path = write_study(tmp_path, storage=storage, tracking_uri=uri, cache_dir=str(tmp_path / "cache"), n_trials=1,
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": 0, "rounds": 1})
    return path, storage, uri


def test_a_ctrl_c_while_the_command_line_loads_is_one_line_and_exit_130(tmp_path: Path):
    """(At 0.5 s into a run: a KeyboardInterrupt traceback from the imports.)"""
    path, _, _ = fresh_study(tmp_path)
    code = f"""
        import importlib.abc, runpy, sys

        class CtrlC(importlib.abc.MetaPathFinder):  # the user presses Ctrl-C as the parser's modules load
            def find_spec(self, name, path=None, target=None):
                if name == "ltstudy.engine.config":
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, CtrlC())
        sys.argv = ["ltstudy", "run", {str(path)!r}]
        runpy.run_module("ltstudy.cli", run_name="__main__", alter_sys=True)  # (`python -m ltstudy.cli`)
        """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (130, "ltstudy: interrupted\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


class _CtrlCAtStatement:
    """KeyboardInterrupt as the `n`-th database statement on a store under `folder` is about to run."""

    def __init__(self, folder: Path, n: int):
        self.folder, self.left = str(folder), n

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if self.folder in str(conn.engine.url):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


@pytest.mark.parametrize("n", [1, 300, 1000])  # (a new store takes about 1,700 statements: early, middle, late)
def test_a_ctrl_c_while_the_mlflow_store_is_made_leaves_none_and_the_next_start_makes_it_whole(tmp_path: Path,
                                                                                              n: int):
    """(Twice in six tries a half-migrated mlflow.db was left, and every run after died on it: "table
    registered_models already exists".)"""
    folder = tmp_path / "mlflow"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    hook = _CtrlCAtStatement(folder, n)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            Tracker(uri)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", hook)
    assert hook.left == 0
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db.lock"]  # no store, nothing half-made

    tracker = Tracker(uri)  # the next start makes the whole store
    run = tracker.start_run(tracker.experiment_id("ft"), "a run")
    tracker.log_metrics(run, {"val_accuracy": 0.9})
    assert tracker.run_status(run) == "RUNNING"
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db", "mlflow.db.lock"]


def _signal_after(monkeypatch: pytest.MonkeyPatch, target, name: str) -> None:
    """target.name SIGTERMs this process just after its first call returns (the user's Ctrl-C at that moment)."""
    real, calls = getattr(target, name), []

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        if not calls:
            calls.append(name)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # (the handler runs here)
        return result

    monkeypatch.setattr(target, name, wrapped)


def test_a_ctrl_c_just_after_the_study_is_created_still_leaves_it_with_its_settings(tmp_path: Path,
                                                                                    monkeypatch, capsys):
    """(A study left without its settings is never checked against them: a changed file would continue it.)"""
    path, storage, _ = fresh_study(tmp_path)
    _signal_after(monkeypatch, optuna, "create_study")
    assert cli.main(["run", str(path), "--quiet"]) == 130
    assert capsys.readouterr().err.splitlines() == ["ltstudy run: interrupted"]
    attrs = optuna.load_study(study_name="ft", storage=open_storage(storage)).user_attrs
    assert {"objectives", "settings", "study_hash", "epsilon"} <= set(attrs)


def test_a_ctrl_c_just_after_the_parent_run_is_made_keeps_one_parent_run(tmp_path: Path, monkeypatch, capsys):
    """(The parent run was made but not recorded in the study: the next run made a second one.)"""
    path, storage, uri = fresh_study(tmp_path)
    _signal_after(monkeypatch, Tracker, "start_run")
    assert cli.main(["run", str(path), "--quiet"]) == 130
    monkeypatch.undo()
    study = optuna.load_study(study_name="ft", storage=open_storage(storage))
    parent = study.user_attrs.get(PARENT_ATTR)
    assert [r.info.run_id for r in Runs.of(uri, "ft").parents] == [parent]
    capsys.readouterr()
    assert cli.main(["run", str(path), "--quiet"]) == 0  # the same command continues...
    runs = Runs.of(uri, "ft")
    assert [(r.info.run_id, r.info.status) for r in runs.parents] == [(parent, "FINISHED")]  # ...under that run
    assert runs.running() == []


def test_a_stop_signal_landing_in_a_finalizer_prints_no_traceback_and_still_stops(monkeypatch):
    """(SQLAlchemy's weakref callbacks run in the first seconds: "Exception ignored in ... KeyboardInterrupt".)"""
    seen: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_type))
    signals.interrupt_on_signals()

    class Pool:
        def __del__(self):
            raise ValueError("a finalizer's own error")

    class Connection:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # (the handler raises KeyboardInterrupt here, inside the finalizer)

    Pool()
    assert seen == [ValueError]  # other errors in finalizers are shown as before
    Connection()
    assert seen == [ValueError]  # the interrupt is not
    with pytest.raises(KeyboardInterrupt):
        signals.raise_if_requested()  # and it is not lost
