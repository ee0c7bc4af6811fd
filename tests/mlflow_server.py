"""A real MLflow tracking server for fault tests: `python tests/mlflow_server.py STORE_URI ARTIFACTS PORT`.

MLflow's own Flask app (the REST API `mlflow server` serves) under werkzeug
on 127.0.0.1, in a process of its own so that a test can SIGKILL it. Starting
it this way takes seconds, where `mlflow server` (uvicorn, workers) takes
many more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> None:
    store, artifacts, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = store
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = artifacts
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
    from mlflow.server import app
    from werkzeug.serving import make_server

    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def start(store: str, artifacts: Path, port: int, log: Path, timeout: float = 600) -> subprocess.Popen:
    """The server in the background, once it answers /health (`timeout` guards against a hang only: on a loaded
    machine importing MLflow's app alone can take a minute)."""
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, __file__, store, str(artifacts), str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MLflow test server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the MLflow test server did not answer within {timeout} s")


if __name__ == "__main__":
    main()
