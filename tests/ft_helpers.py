"""Helpers for the fault-tolerance, scale-out and cache tests: study files, CLI subprocesses, MLflow queries.

Every study trains LeNet-300-100 on the embedded digits on the CPU and keeps
its stores, cache and artifacts under the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from ltstudy.study.tracking import PARENT_TAG
from tests.study_helpers import to_toml


def study_toml(name: str = "ft", *, search: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
               **study: Any) -> str:
    """A study file: digits, LeNet-300-100, CPU, random sampler; keyword arguments go into [study]."""
    doc = {
        "study": {"name": name, "sampler": "random", "seed": 0, "n_trials": 1, "device": "cpu",
                  "objectives": ["ticket_sparsity", "train_iterations"], **study},
        "data": {"name": "digits"},
        "model": {"name": "lenet-300-100"},
        "train": {"iterations": 40, "eval_every": 20, "batch_size": 60, **(train or {})},
        "search": search if search is not None else {"prune_rate": [0.2, 0.5], "rewind_iter": 20, "rounds": 1},
    }
    return to_toml(doc)


def write_study(folder: Path, filename: str = "study.toml", **kw: Any) -> Path:
    path = folder / filename
    path.write_text(study_toml(**kw))
    return path


# --------------------------------------------------------------------------- the CLI in a subprocess


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LTSTUDY_CACHE_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def ltstudy_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ltstudy.cli", *args]


def start(cwd: Path, *args: str, tag: str = "cli") -> subprocess.Popen:
    """`ltstudy ARGS` in the background, stdout/stderr to cwd/TAG.out and TAG.err."""
    with open(cwd / f"{tag}.out", "w") as out, open(cwd / f"{tag}.err", "w") as err:
        return subprocess.Popen(ltstudy_cmd(*args), cwd=cwd, env=cli_env(), stdout=out, stderr=err)


def outputs(cwd: Path, tag: str) -> tuple[str, str]:
    return (cwd / f"{tag}.out").read_text(), (cwd / f"{tag}.err").read_text()


def run(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(ltstudy_cmd(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
             interval: float = 0.05) -> float:
    """Poll until `condition()`; fails after `timeout` s or if `proc` exits first. Returns the seconds waited."""
    t0 = time.monotonic()
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {what}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0


def stop(proc: subprocess.Popen) -> None:
    """Kill a process this test started if it is still running (teardown)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- MLflow


@dataclass
class Runs:
    client: MlflowClient
    parents: list
    children: list

    @classmethod
    def of(cls, uri: str, experiment: str) -> Runs:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        assert exp is not None, f"no MLflow experiment named {experiment!r}"
        runs = client.search_runs([exp.experiment_id], max_results=5000)
        return cls(client, [r for r in runs if PARENT_TAG not in r.data.tags],
                   [r for r in runs if PARENT_TAG in r.data.tags])

    @property
    def all(self) -> list:
        return self.parents + self.children

    def of_trial(self, number: int):
        (run,) = [r for r in self.children if r.data.tags.get("optuna.trial") == str(number)]
        return run

    def steps(self, run_id: str, key: str = "val_accuracy") -> list[int]:
        return sorted(m.step for m in self.client.get_metric_history(run_id, key))

    def running(self) -> list[str]:
        return [r.info.run_name for r in self.all if r.info.status == "RUNNING"]


_TEMPLATE: dict[str, Path] = {}


def sqlite_tracking(tmp_path_factory, dest: Path) -> str:
    """A sqlite MLflow store at `dest`, copied from a store migrated once per session (migrations are slow)."""
    if "db" not in _TEMPLATE:
        folder = tmp_path_factory.mktemp("mlflow-template")
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE["db"] = folder / "mlflow.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE["db"], dest)
    return f"sqlite:///{dest}"


# --------------------------------------------------------------------------- processes, from /proc


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    kids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(proc.name))
    return kids


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
