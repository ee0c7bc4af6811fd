"""Helpers for the study-layer tests: tiny study files and temporary Optuna / MLflow stores.

Every study here trains LeNet-300-100 on the embedded digits for 60 iterations
per round on the CPU, and keeps its journal, MLflow database and artifacts in
the test's own temporary folder.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from ltstudy.study.storage import open_storage
from ltstudy.study.tracking import PARENT_TAG

TINY_STUDY: dict[str, dict[str, Any]] = {
    "study": {
        "name": "tiny",
        "sampler": "random",
        "seed": 0,
        "n_trials": 3,
        "objectives": ["ticket_sparsity", "train_iterations"],
        "device": "cpu",
    },
    "data": {"name": "digits"},
    "model": {"name": "lenet-300-100"},
    "train": {"iterations": 60, "eval_every": 20, "batch_size": 60},
    "search": {
        "prune_rate": [0.2, 0.5],
        "rewind_iter": [0, 20],
        "scope": ["layerwise", "global"],
        "reinit": ["rewind", "finetune"],
        "rounds": 2,
    },
}
ROUNDS = 2  # TINY_STUDY's rounds after the dense round 0


# --------------------------------------------------------------------------- TOML


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(doc: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- stores


@dataclass(frozen=True)
class Stores:
    """The Optuna journal and the MLflow database of one test, both under `root`."""

    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def storage(self) -> str:
        return f"journal:{self.journal}"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.db}"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri)

    def study(self, name: str = "tiny") -> optuna.Study:
        return optuna.load_study(study_name=name, storage=open_storage(self.storage, heartbeat=False))

    def created(self) -> list[str]:
        """Names of any store files or folders that exist (for 'nothing was created' checks)."""
        return [p.name for p in (self.journal, self.db, self.root / "artifacts", self.root / ".ltstudy",
                                 self.root / "mlflow") if p.exists()]


def isolate(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Work in `root`, with no environment variable pointing at a shared store or cache."""
    mp.chdir(root)
    for var in ("MLFLOW_TRACKING_URI", "LTSTUDY_CACHE_DIR"):
        mp.delenv(var, raising=False)


@contextlib.contextmanager
def quiet_run(root: Path):
    """For module-scoped fixtures: isolate in `root`, capture stdout, keep pytest's SIGTERM handler.

    (`ltstudy run` turns SIGTERM into Ctrl-C for its own process.) Yields the stdout buffer.
    """
    import signal

    before = signal.getsignal(signal.SIGTERM)
    buf = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
            isolate(mp, root)
            yield buf
    finally:
        signal.signal(signal.SIGTERM, before)


_TEMPLATE_DB: Path | None = None


def seed_mlflow_db(tmp_path_factory, dest: Path) -> None:
    """Copy an empty, already-migrated MLflow database to `dest`.

    Creating an MLflow SQLite store runs its schema migrations, which takes
    seconds; the end-to-end test creates one for real, the others start from
    a copy of a store made once per test session.
    """
    global _TEMPLATE_DB
    if _TEMPLATE_DB is None:
        folder = tmp_path_factory.mktemp("mlflow-template")
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE_DB = folder / "mlflow.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE_DB, dest)


def seeded_stores(mp: pytest.MonkeyPatch, root: Path, tmp_path_factory) -> Stores:
    """Stores in `root` (isolated), the MLflow database starting as a migrated empty copy."""
    isolate(mp, root)
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    return stores


def run_quiet(path: Path, *flags: str) -> int:
    """`ltstudy run PATH --quiet FLAGS...`: the exit code."""
    from ltstudy import cli

    return cli.main(["run", str(path), "--quiet", *flags])


def study_doc(stores: Stores | None = None, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """TINY_STUDY with its tables updated by `sections` (a value of None deletes the key).

    With `stores`, [study] points at its journal and MLflow database.
    """
    doc = copy.deepcopy(TINY_STUDY)
    if stores is not None:
        doc["study"].update(storage=stores.storage, tracking_uri=stores.tracking_uri)
    for section, changes in sections.items():
        table = doc.setdefault(section, {})
        for key, value in changes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    return doc


def write_study(folder: Path, stores: Stores | None = None, filename: str = "study.toml",
                **sections: dict[str, Any]) -> Path:
    """Write a tiny study file into `folder` and return its path (see `study_doc`)."""
    path = folder / filename
    path.write_text(to_toml(study_doc(stores, **sections)))
    return path


def free_port() -> int:
    """A local TCP port nothing listens on (for 'unreachable server' checks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- MLflow queries


def experiment_runs(client: MlflowClient, name: str) -> list:
    """Every run of the experiment called `name`, whatever its status."""
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no MLflow experiment named {name!r}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def parent_and_children(client: MlflowClient, name: str) -> tuple[list, list]:
    runs = experiment_runs(client, name)
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    return parents, children


def run_of_trial(children: list, number: int):
    (run,) = [r for r in children if r.data.tags.get("optuna.trial") == str(number)]
    return run


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))
