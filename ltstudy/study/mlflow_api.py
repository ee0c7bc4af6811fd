"""The few things ltstudy needs from MLflow beyond its public API, in one place, each with its reason.

- `store_engine(client)`: the SQLAlchemy engine behind a client's database
  store. A forked `--jobs` worker must drop the connections it inherited
  (tracking.py); MLflow caches one store per URI and exposes neither it nor its
  engine publicly, so the engine is read from the client's tracking client.
- `create_tables(path)`: MLflow's schema in a new SQLite file. Opening a store
  migrates it in place, in dozens of steps a Ctrl-C can cut (tracking.create_store
  makes a temporary file whole, then renames it in); the public routes (opening a
  client, `mlflow db upgrade`) migrate in place too, so its table-initialising
  function is called on the temporary file.
- `server_app()`: the ASGI app that `mlflow ui` serves (its FastAPI app, which
  mounts the Flask one), wrapped by `ltstudy ui` (cli/mlflow_ui.py); MLflow's
  public `mlflow.server.app` is the Flask app alone, without the routes the UI
  of MLflow 3 calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def store_engine(client: Any) -> Any | None:
    """The SQLAlchemy engine of a client's database store; None for a server (or if MLflow moved it)."""
    tracking = getattr(client, "_tracking_client", None)  # (private: see the module docstring)
    return getattr(getattr(tracking, "store", None), "engine", None)


def create_tables(path: Path) -> None:
    """MLflow's schema, every migration applied, in the SQLite file `path` (made if missing)."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine  # (private: see above)

    engine = create_sqlalchemy_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def server_app() -> Any:
    """The ASGI app `mlflow ui` serves."""
    from mlflow.server.fastapi_app import app  # (not public API: see the module docstring)

    return app
