"""Scale-out: many `ltstudy worker` processes on one PostgreSQL study and one PostgreSQL MLflow store.

The study is created once with `ltstudy run ... --n-trials 0`; then 4 worker
processes run 10 short trials each at the same time. Every trial must finish,
exactly once, in Optuna and in MLflow; and the database password must never
leak into outputs, MLflow params or tags, Optuna attributes or any file.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ltstudy.study.attrs import PARENT_ATTR, RUN_ATTR
from ltstudy.study.storage import open_storage
from tests.ft_helpers import Runs, cli_env, ltstudy_cmd, write_study
from tests.pg import PgServer

pytest_plugins = ["tests.pg"]

WORKERS, N = 4, 40
ROUNDS = 1


@dataclass
class Load:
    root: Path
    password: str
    storage: str
    tracking_uri: str
    create: subprocess.CompletedProcess
    workers: list[tuple[int, str, str]]  # (exit code, stdout, stderr)
    wall_seconds: float

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="load", storage=open_storage(self.storage))


@pytest.fixture(scope="module")
def load(pg_server: PgServer, tmp_path_factory) -> Load:
    root = tmp_path_factory.mktemp("load")
    storage, uri = pg_server.create_database("optuna"), pg_server.create_database("mlflow")
    path = write_study(root, name="load", n_trials=N, cache_dir=str(root / "cache"),
                       train={"iterations": 20, "eval_every": 20},
                       search={"prune_rate": {"low": 0.2, "high": 0.5}, "rewind_iter": [0, 10],
                               "scope": ["layerwise", "global"], "rounds": ROUNDS})
    common = ["--storage", storage, "--tracking-uri", uri, "--quiet"]
    create = subprocess.run(ltstudy_cmd("run", str(path), "--n-trials", "0", *common), cwd=root, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert create.returncode == 0, create.stderr
    t0 = time.monotonic()
    procs = [subprocess.Popen(ltstudy_cmd("worker", str(path), *common), cwd=root,
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(WORKERS)]
    workers = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, 400 - (time.monotonic() - t0)))
            workers.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    wall = time.monotonic() - t0
    print(f"\n{WORKERS} workers, {N} trials on PostgreSQL: {wall:.1f} s wall")
    return Load(root, pg_server.password, storage, uri, create, workers, wall)


def _worker_counts(load: Load) -> list[int]:
    import re

    return [int(re.search(r": (\d+) trials \((\d+) COMPLETE\)", out).group(1)) for _, out, _ in load.workers]


def test_every_worker_runs_trials_until_the_study_has_n_trials_and_exits_cleanly(load: Load):
    for code, _, err in load.workers:
        assert code == 0, err
    counts = _worker_counts(load)
    assert all(c > 0 for c in counts), counts  # all four took part
    # Workers stop once finished + running trials reach n_trials; ones that start a trial at the very same moment
    # may each finish one more.
    assert N <= sum(counts) <= N + WORKERS - 1


def test_optuna_has_every_trial_once_and_complete(load: Load):
    trials = load.study().get_trials(deepcopy=False)
    assert len(trials) == sum(_worker_counts(load))
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert all(len(t.user_attrs["rounds"]) == ROUNDS + 1 for t in trials)
    assert len({t.user_attrs[RUN_ATTR] for t in trials}) == len(trials)


def test_mlflow_has_one_finished_run_per_trial_with_every_round_once(load: Load):
    study = load.study()
    runs = Runs.of(load.tracking_uri, "load")
    (parent,) = runs.parents
    assert parent.info.run_id == study.user_attrs[PARENT_ATTR]
    n = len(study.get_trials(deepcopy=False))
    assert len(runs.children) == n
    assert sorted(int(r.data.tags["optuna.trial"]) for r in runs.children) == list(range(n))
    assert {r.info.status for r in runs.all} == {"FINISHED"}
    assert {r.data.tags["state"] for r in runs.children} == {"COMPLETE"}
    for t in study.get_trials(deepcopy=False):
        run = runs.of_trial(t.number)
        assert run.info.run_id == t.user_attrs[RUN_ATTR]
        history = runs.client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(ROUNDS + 1))
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == [
            r["val_accuracy"] for r in t.user_attrs["rounds"]]


def test_the_database_password_never_leaks(load: Load):
    pw = load.password
    assert pw in load.storage and pw in load.tracking_uri  # the URLs given on the command line carry it
    texts = [load.create.stdout, load.create.stderr] + [s for _, out, err in load.workers for s in (out, err)]
    assert not [t for t in texts if pw in t]
    assert "***@127.0.0.1" in load.create.stdout  # the tracking URI is shown redacted

    runs = Runs.of(load.tracking_uri, "load")
    for run in runs.all:
        values = [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags]
        assert not [v for v in values if pw in v], run.info.run_name
    study = load.study()
    attrs = [study.user_attrs] + [a for t in study.get_trials(deepcopy=False)
                                  for a in (t.user_attrs, t.system_attrs)]
    assert pw not in json.dumps(attrs, default=str)

    leaked = [p for p in load.root.rglob("*") if p.is_file() and pw.encode() in p.read_bytes()]
    assert leaked == []
    assert any(load.root.rglob("*.png")), "artifacts were written under the test folder"
