"""The MLflow transport: a thin, retrying wrapper over MlflowClient (what is logged: mlflow_logging.py).

Why not the fluent API or optuna-integration's MLflowCallback: the callback is
deprecated and logs no per-round values, and the fluent active-run stack is
thread-local, so trial runs are nested under the study run with an explicit
`mlflow.parentRunId` tag instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import re
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..engine.errors import DiskFull, RunFailed
from ..engine.processes import file_lock
from .mlflow_api import create_tables, store_engine
from .signals import deferred
from .storage import artifact_root, prepare_storage, redact, sqlite_path

T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # MLflow 3's UI: open on the Runs table


# MLflow caches one store per URI, and with it a SQLAlchemy connection pool: a forked `--jobs` worker inherits the
# parent's pooled connections, and two processes on one SQLite connection can corrupt the store (on a database
# server they would share one socket). A child drops them without closing them (the parent still uses them) and
# keeps the engine, so it still skips the store's set-up.
_ENGINES: weakref.WeakSet = weakref.WeakSet()
_INHERITED: list = []  # (the inherited pools, kept: freeing a connection could close it for the parent too)


def _drop_inherited_connections() -> None:
    for engine in list(_ENGINES):
        _INHERITED.append(engine.pool)
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def _quiet_mlflow_logs() -> None:
    for name in ("alembic", "mlflow.tracking", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Its session maker logs every OperationalError with a traceback (ERROR) before raising it again; a locked
    # SQLite store under load is retried here, and what is not is reported in one line (mlflow_logging.py).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


RETRY_WINDOW = 120.0  # seconds a call waits out a locked SQLite store or a database server's restart


class TrackingUnavailable(RunFailed):
    """MLflow still locked, refused or unreachable after the retries: one line (exit 1), or the log goes offline."""

    def __init__(self, uri: str | None, cause: BaseException, waited: float):
        self.cause = one_line([*_chain(cause)][-1])  # (the driver's words: MLflow's wrappers lead with their own)
        retried = f" after {waited:.0f} s of retries" if waited >= 1 else ""
        super().__init__(f"MLflow at {redact(uri or '?')} is unavailable ({self.cause}){retried}; run the same "
                         "command again once it answers: Optuna keeps every finished trial")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _chain(exc: BaseException | None):
    for _ in range(8):
        if exc is None:
            return
        yield exc
        exc = exc.__cause__ or exc.__context__


def _locked(exc: BaseException) -> bool:
    """A busy store worth waiting for: SQLite's lock held by another process, or a database server restarting."""
    from .rdb_retry import transient

    return transient(exc) or any("database is locked" in str(e) or "database table is locked" in str(e)
                                 for e in _chain(exc))


def _unreachable(exc: BaseException) -> bool:
    """A tracking server that refused or dropped the connection (MLflow's HTTP client has retried already)."""
    text = " ".join(f"{type(e).__name__} {e}" for e in _chain(exc))
    return any(s in text for s in ("ConnectionError", "Connection refused", "Max retries exceeded",
                                   "RemoteDisconnected", "ReadTimeout", "ConnectTimeout"))


def _disk_full(exc: BaseException) -> bool:
    """SQLite's words for a full disk (SQLITE_FULL), as MLflow and SQLAlchemy pass them on."""
    return any("database or disk is full" in str(e) for e in _chain(exc))


def _retry(fn: Callable[..., T]) -> Callable[..., T]:
    """Retry with backoff while the store is locked or its database server restarts, for up to RETRY_WINDOW s.

    Several local worker processes share one SQLite store, and on a loaded
    machine one of them can hold its lock for seconds. What is still locked
    after the window, and a tracking server that refused the connection,
    raise TrackingUnavailable (one line, never a traceback); any other error
    goes through at once. A stop signal waits for the attempt under way
    (signals.deferred: a KeyboardInterrupt inside an SQLite commit left the
    store's write lock held by this process, so closing the trial's run then
    waited on its own lock, and every other worker's writes with it), never
    for the wait between attempts.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.monotonic()
        delay = 0.05
        while True:
            try:
                with deferred():
                    return fn(*args, **kwargs)
            except TrackingUnavailable:  # (a nested call has waited already)
                raise
            except Exception as exc:
                uri = getattr(args[0], "uri", None) if args else None
                if _disk_full(exc) and args and isinstance(args[0], Tracker):
                    raise DiskFull.no_space(f"the MLflow store {redact(args[0].uri)}") from exc
                if _unreachable(exc) and not _locked(exc):
                    raise TrackingUnavailable(uri, exc, 0.0) from exc
                if not _locked(exc):
                    raise
                waited = time.monotonic() - start
                if waited + delay > RETRY_WINDOW:
                    raise TrackingUnavailable(uri, exc, waited) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
    return wrapper


# A concurrent insert of the same dataset: SQLite's, PostgreSQL's and MySQL's words for it.
_DUPLICATE_DATASET = re.compile(r"UNIQUE constraint failed: datasets\.|unique constraint \"dataset_pk\"|"
                                r"Duplicate entry .* for key '(datasets\.)?(PRIMARY|dataset_pk)'")

# A dead tracking server must not hold a study up for minutes: MLflow's default is 7 retries with exponential
# backoff (about 245 s per call). A few quick retries, then the study log goes offline (mlflow_logging.py).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class Tracker:
    """Thin, retrying wrapper over MlflowClient with the study's run layout."""

    def __init__(self, tracking_uri: str):
        _quiet_mlflow_logs()
        # MLflow prints a "View run ... at" line per run on a server; a study has hundreds.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if tracking_uri.startswith(("http://", "https://")):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        self.uri = tracking_uri
        if tracking_uri.startswith("sqlite:///"):
            prepare_storage(tracking_uri, "--tracking-uri")  # the folder of mlflow.db
        self.client = self._open()
        engine = store_engine(self.client)  # (a database store)
        if engine is not None:
            _ENGINES.add(engine)

    @_retry
    def _open(self):
        """The client; opening a store reads its schema, which a busy SQLite file can refuse for a while."""
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("sqlite:///"):
            # The first client of a new store runs its schema migrations, which are not safe for processes that
            # start at once (duplicate columns, a half-migrated database): one process creates it, under a lock,
            # and whole or not at all (create_store).
            with store_lock(self.uri):
                create_store(self.uri)
                return MlflowClient(tracking_uri=self.uri)
        # A database server's schema is built the same way; workers starting together retry the race.
        from .storage import schema_race_safe

        return schema_race_safe(lambda: MlflowClient(tracking_uri=self.uri))

    def server_answers(self, timeout: float = 3.0) -> bool:
        """Whether a tracking server answers its health check now (False for a database store: it has none)."""
        if not self.uri.startswith(("http://", "https://")):
            return False
        import urllib.request

        try:
            with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout):
                return True
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"Tracker({redact(self.uri)})"

    # ------------------------------------------------------------------ experiments and runs

    @_retry
    def experiment_id(self, name: str) -> str:
        """The study's experiment, created once (race-safe), marked as a model-training experiment.

        MLflow 3's UI opens an experiment without a kind on its GenAI (traces)
        view; the kind tag makes it open on the Runs table, where the study's
        parent run and its nested trial runs are.
        """
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            root = artifact_root(self.uri)
            try:
                return self.client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None,
                                                     tags={KIND_TAG: KIND})
            except Exception as exc:  # another worker created it a moment ago
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise exc from None
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if exp.tags.get(KIND_TAG) != KIND:
            self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id

    @_retry
    def start_run(self, experiment_id: str, name: str, tags: Mapping[str, Any] | None = None,
                  parent_run_id: str | None = None) -> str:
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        return self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    @_retry
    def run(self, run_id: str):
        """The run, or None when the store has no such run (or it was deleted)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return None if run.info.lifecycle_stage == "deleted" else run

    @_retry
    def reopen_run(self, run_id: str) -> bool:
        """Mark an existing run RUNNING again (a resumed study), without its last end's reason; False if it no
        longer exists."""
        run = self.run(run_id)
        if run is None:
            return False
        if "reason" in run.data.tags:  # ("interrupted": it is running again, and may end otherwise)
            self.client.delete_tag(run_id, "reason")
        self.client.update_run(run_id, status="RUNNING")
        return True

    @_retry
    def end_run(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(run_id, "reason", reason[:5000])
        self.client.set_terminated(run_id, status=status)

    @_retry
    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    @_retry
    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    @_retry
    def artifact_names(self, run_id: str) -> set[str]:
        """The paths at the top of a run's artifacts."""
        return {a.path for a in self.client.list_artifacts(run_id)}

    # ------------------------------------------------------------------ values

    @_retry
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(run_id, params=items[i:i + 100])

    @_retry
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(run_id, metrics=items)

    @_retry
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_retry
    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: Mapping[str, Any]) -> None:
        """The runs table's Dataset column: the data a run trained on (name, digest, source, split sizes)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest[:36], source_type="ltstudy", source=json.dumps({"name": source}),
                          profile=json.dumps(dict(profile)))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except Exception as exc:
            # MLflow looks the experiment's dataset up, then inserts it: two workers' first trials race on that
            # insert, and the loser's unique key fails. The dataset exists now, so a second call links to it.
            if not _DUPLICATE_DATASET.search(str(exc)):
                raise
            self.client.log_inputs(run_id, datasets=inputs)

    @_retry
    def log_files(self, run_id: str, files: Mapping[str, str | bytes | Callable[[Path], None]],
                  artifact_path: str | None = None) -> None:
        """Log text, bytes, or a writer callback's output as artifacts named by the keys."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                if callable(content):
                    content(path)
                elif isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
                self.client.log_artifact(run_id, str(path), artifact_path)

    @_retry
    def log_dir(self, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
        """Log a folder's files (e.g. saved tickets) as artifacts under `artifact_path`."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    # ------------------------------------------------------------------ queries

    @_retry
    def child_runs(self, experiment_id: str, parent_run_id: str, status: str | None = None) -> list:
        flt = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
        if status:
            flt += f" and attributes.status = '{status}'"
        runs, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=flt, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs


def create_store(tracking_uri: str) -> None:
    """Make a new SQLite store whole or not at all (under `store_lock`): migrate a temporary file, rename it in.

    MLflow migrates a new store in place, in dozens of steps: a Ctrl-C among
    them left `mlflow.db` half-made, and every later run died on it ("table
    registered_models already exists"). A store that is there is left alone.
    """
    path = sqlite_path(tracking_uri)
    if path.is_file() and path.stat().st_size > 0:
        return
    tmp = path.with_name(path.name + ".creating")
    leftovers = (tmp, tmp.with_name(tmp.name + "-journal"))  # (and SQLite's rollback journal beside it)
    try:
        for leftover in leftovers:  # (of a creator that was killed)
            leftover.unlink(missing_ok=True)
        create_tables(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        for leftover in leftovers:
            with contextlib.suppress(OSError):
                leftover.unlink()
        if _disk_full(exc):
            raise DiskFull.no_space(f"the MLflow store {path}") from exc
        DiskFull.check(exc, f"the MLflow store {path}")
        raise


def store_lock(tracking_uri: str):
    """An exclusive lock beside a SQLite store (`mlflow.db.lock`), held while a process first opens it."""
    path = sqlite_path(tracking_uri)
    return file_lock(path.with_name(path.name + ".lock"))
