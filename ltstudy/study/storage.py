"""Optuna storage URLs and MLflow tracking URIs: checked before anything is created.

Storage forms:
- journal:PATH         Optuna's JournalFileBackend: safe for several processes on one machine.
- sqlite:///PATH       fine for one process; refused for --jobs > 1 (SQLite locks under concurrent writers).
- postgresql://...     RDB storage (with heartbeats) for workers on many machines.
- mysql://...          RDB storage.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from ..engine.errors import ConfigError
from ..engine.processes import file_lock
from .optuna_api import quiet_experimental
from .paths import check_can_create, check_file_target, check_name_lengths, shown

_RDB_SCHEMES = ("postgresql", "mysql")


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def storage_kind(url: str) -> str:
    if url.startswith("journal:"):
        return "journal"
    if url.startswith("sqlite:///"):
        return "sqlite"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme in _RDB_SCHEMES and "://" in url:
        return "rdb"
    raise ConfigError(f"storage {shown(redact(url))!r} is not supported; use journal:PATH, sqlite:///PATH or "
                      "postgresql://user:password@host:port/db")


def check_cache_dir(path: str | os.PathLike) -> None:
    check_name_lengths(path, "cache folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"cache folder {shown(str(path))} is a file; point --cache-dir at a folder")
    check_can_create(path / "entry", "cache folder")


def journal_path(url: str) -> Path:
    return Path(url[len("journal:"):]).expanduser()


def sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///"):]).expanduser()


def check_storage(url: str, *, jobs: int = 1, timeout: float = 5.0) -> str:
    """Validate a storage URL; returns its kind. Creates nothing."""
    kind = storage_kind(url)
    if kind == "journal":
        check_file_target(journal_path(url), "storage journal")
    elif kind == "sqlite":
        if sqlite_path(url).name == ":memory:" or url.rstrip("/") == "sqlite:":
            raise ConfigError(f"storage {url} is an in-memory SQLite database, which lives only as long as one "
                              "process (and each trial opens it anew); use sqlite:///PATH or journal:PATH")
        if jobs > 1:
            raise ConfigError(f"storage {url} is SQLite, which is not safe for --jobs {jobs} concurrent workers; "
                              "use journal:PATH (one machine) or postgresql://... (many)")
        check_file_target(sqlite_path(url), "storage database")
    else:
        _check_rdb(url, timeout)
    return kind


def _check_rdb(url: str, timeout: float, what: str = "storage database") -> None:
    import sqlalchemy

    parsed = urllib.parse.urlsplit(url)
    where = f"{parsed.hostname or 'localhost'}:{parsed.port or 'default port'}"
    connect_args: dict[str, Any] = {"connect_timeout": int(max(1, timeout))} if url.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise ConfigError(f"storage {redact(url)} needs the database driver '{exc.name}'; "
                          "install it with `pip install 'ltstudy[postgres]'`") from None
    except Exception as exc:  # sqlalchemy wraps driver errors in many types
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot reach {what} at {where}: {redact(reason)}") from None


def check_places(storage_url: str, tracking_uri: str, cache_dir: str | None) -> None:
    """The stores and the cache each need a place of their own.

    `journal:.ltstudy` makes the journal a file named like the folder the default cache lives in
    (.ltstudy/cache), so every round would be trained again; a journal that is also the MLflow
    database would corrupt both. Refused before anything is created.
    """
    files: dict[str, Path] = {}
    kind = storage_kind(storage_url)
    if kind != "rdb":
        files["storage " + ("journal" if kind == "journal" else "database")] = \
            journal_path(storage_url) if kind == "journal" else sqlite_path(storage_url)
    folders: dict[str, Path] = {}
    if tracking_uri.startswith("sqlite:///"):
        files["MLflow store"] = sqlite_path(tracking_uri)
        folders["MLflow's artifact folder"] = sqlite_path(tracking_uri).parent / "artifacts"
    if cache_dir:
        folders["cache folder"] = Path(cache_dir).expanduser()
    given = {**files, **folders}
    where = {label: path.resolve() for label, path in given.items()}
    for a in files:
        for b in where:
            if a == b or not (where[a] == where[b] or where[a] in where[b].parents):
                continue
            clash = "be the same file as" if where[a] == where[b] else "be a file where"
            need = "" if where[a] == where[b] else " needs a folder"
            raise ConfigError(f"{a} {shown(str(given[a]))} would {clash} the {b} {shown(str(given[b]))}{need}; give "
                              "each its own place (e.g. storage = \"journal:.ltstudy/optuna.journal\")")


def storage_exists(url: str) -> bool:
    """False for a file-based storage whose file is not there yet (opening it would create it)."""
    kind = storage_kind(url)
    if kind == "journal":
        return journal_path(url).is_file()
    if kind == "sqlite":
        return sqlite_path(url).is_file()
    return True


def prepare_storage(url: str, flag: str = "--storage") -> None:
    """Create the folder of a file-based store (after validation, which tried it; `flag` names the setting)."""
    kind = storage_kind(url)
    if kind in ("journal", "sqlite"):
        path = journal_path(url) if kind == "journal" else sqlite_path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # (os.access cannot tell for root, nor for /proc and read-only mounts)
            raise ConfigError(f"{path} cannot be created: {exc.strerror or exc} ({path.parent}); point {flag} at "
                              "a writable folder") from None


def open_storage(url: str, *, heartbeat: tuple[int, int, int] | None = None):
    """The Optuna storage object for `url`.

    `heartbeat` = (interval, grace period, max retries) gives RDB storages
    heartbeats: a trial whose worker died (no heartbeat for the grace period)
    is failed and re-queued with the same parameters by the next worker.
    A journal is checked for a torn tail first, and written so that it never
    gets one (journal.py); an RDB storage retries across a server restart
    (rdb_retry.py). A stop signal never cuts a call to either in two.
    """
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from .journal import SafeJournalBackend, SafeJournalStorage, check_journal
    from .rdb_retry import RetryingRDBStorage

    kind = storage_kind(url)
    prepare_storage(url)
    if kind == "journal":
        check_journal(journal_path(url))
        return SafeJournalStorage(SafeJournalBackend(str(journal_path(url))))
    if kind == "sqlite":
        return RetryingRDBStorage(url)
    kwargs: dict[str, Any] = {}
    with quiet_experimental():
        if heartbeat:
            interval, grace, retries = heartbeat
            kwargs = {"heartbeat_interval": interval, "grace_period": grace,
                      "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=retries)}
        return schema_race_safe(lambda: RetryingRDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **kwargs))


def schema_race_safe(create, attempts: int = 8):
    """Run `create` (which may build a database schema), retrying when another process builds it at the same moment.

    Workers started together on an empty PostgreSQL database all try to create
    the tables; all but one fail with a unique violation or "already exists".
    Retrying sees the finished schema.
    """
    import random
    import time

    for attempt in range(attempts):
        try:
            return create()
        except Exception as exc:
            text = f"{type(exc).__name__} {exc} {getattr(exc, 'orig', '')}".lower()
            racing = any(s in text for s in ("uniqueviolation", "unique constraint", "duplicate key", "already exists",
                                             "integrityerror"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- MLflow


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Validate an MLflow tracking URI without creating anything."""
    if uri.startswith("sqlite:") and (not uri.startswith("sqlite:///") or sqlite_path(uri).name == ":memory:"):
        raise ConfigError(f"tracking URI {uri} is an in-memory SQLite database: every run logged to it is lost when "
                          "the process ends; use sqlite:///PATH (default sqlite:///mlflow/mlflow.db) or http://host:port")
    if uri.startswith("sqlite:///"):
        check_file_target(sqlite_path(uri), "MLflow store")
    elif uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                pass
        except Exception as exc:  # URLError, timeouts, HTTP errors
            raise ConfigError(f"cannot reach the MLflow server at {redact(uri)} ({exc}); start it with "
                              "mlflow/serve.sh or fix --tracking-uri") from None
    elif uri.startswith(("postgresql", "mysql")):
        _check_rdb(uri, timeout, what="MLflow tracking database")
    else:
        raise ConfigError(f"tracking URI {shown(redact(uri))!r} is not supported (the ./mlruns file store was "
                          "removed in MLflow 3); use sqlite:///mlflow/mlflow.db or http://host:port")


def artifact_root(uri: str) -> str | None:
    """Where a local SQLite store keeps artifacts: an `artifacts/` folder beside the database."""
    if uri.startswith("sqlite:///"):
        return (sqlite_path(uri).resolve().parent / "artifacts").as_uri()
    return None  # a server decides


def tracking_lock(storage_url: str):
    """Processes on one machine attach MLflow to a study one at a time (`<file>.mlflow.lock`)."""
    return storage_lock(storage_url, "mlflow")


def ask_lock(storage_url: str | None):
    """Processes on one machine ask for trials one at a time (`<file>.ask.lock`), so each sampler sees the
    settings the others just drew (a trial's settings reach the storage only after its sampler ran)."""
    return storage_lock(storage_url, "ask") if storage_url else contextlib.nullcontext()


@contextlib.contextmanager
def storage_lock(storage_url: str, purpose: str):
    """An exclusive lock beside a file storage (`<file>.<purpose>.lock`); nothing for a database server."""
    kind = storage_kind(storage_url)
    if kind == "rdb":
        yield
        return
    path = journal_path(storage_url) if kind == "journal" else sqlite_path(storage_url)
    with file_lock(path.with_name(f"{path.name}.{purpose}.lock")):
        yield
