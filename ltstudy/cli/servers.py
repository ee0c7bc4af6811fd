"""`ltstudy ui` and `ltstudy dashboard`: the MLflow UI and optuna-dashboard on a study's stores, on 127.0.0.1.

Each server runs in its own process group until Ctrl-C or SIGTERM, and is then
stopped with everything it started. Its URL is printed once it answers (MLflow's
UI takes tens of seconds to start). The MLflow UI opens in its model-training
workflow, wherever one clicks (mlflow_ui.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..engine.errors import ConfigError
from ..study.signals import interrupt_on_signals, stop_process_group
from ..study.storage import (
    artifact_root,
    check_storage,
    check_tracking_uri,
    journal_path,
    redact,
    sqlite_path,
    storage_exists,
    storage_kind,
)
from ..study.tracking import Tracker
from .common import command_line, load_study_file

RUN_FLAGS = ("--storage", "--study-name", "--tracking-uri")  # the flags of `run` that choose a study's stores
# optuna-dashboard's command as its package declares it (the console script's entry point), run by this interpreter:
# the script itself may not be on PATH, and its module is private.
DASHBOARD = [sys.executable, "-c", "import sys; from importlib.metadata import entry_points; (script,) = entry_points("
             "group='console_scripts', name='optuna-dashboard'); sys.argv[0] = 'optuna-dashboard'; "
             "sys.exit(script.load()())"]


def ui(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    uri = cfg.tracking_uri(args.tracking_uri)
    check_tracking_uri(uri)
    if uri.startswith("sqlite:///"):  # (before anything opens the store: opening one creates it)
        _check_port_free(args.host, args.port)
        if not sqlite_path(uri).is_file():
            raise ConfigError(f"no MLflow store at {redact(uri)} yet; `{command_line('run', args, RUN_FLAGS)}` "
                              "creates it")
    page = _runs_page(uri, args.study_name or cfg.study.name)
    if not uri.startswith("sqlite:///"):
        print(f"{redact(uri).rstrip('/')}/{page}")  # a server already: its runs page
        return 0
    from . import mlflow_ui

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1", "--app-name", mlflow_ui.PLUGIN]
    root = artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    with tempfile.TemporaryDirectory(prefix="ltstudy-ui-") as tmp:
        # (MLflow finds its app plugins by entry point; ltstudy itself must be importable by its server too)
        paths = [str(mlflow_ui.plugin_path(Path(tmp))), str(Path(__file__).resolve().parents[2]),
                 os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        return serve(cmd, f"MLflow UI for {uri}: http://{args.host}:{args.port}/{page}", env)


def _runs_page(uri: str, name: str) -> str:
    """The path of the study's runs page: the Runs table, not MLflow 3's GenAI overview.

    MLflow 3.17's UI opens an experiment on its GenAI view unless the URL asks
    for the model-training workflow (the experiment's kind tag is not read).
    """
    try:
        exp = Tracker(uri).client.get_experiment_by_name(name)
    except Exception:
        exp = None
    if exp is None:
        return "#/experiments?workflowType=machine_learning"
    return f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"


def dashboard(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    url = args.storage or cfg.study.storage
    check_storage(url)
    if not storage_exists(url):
        raise ConfigError(f"no Optuna storage at {redact(url)} yet; `{command_line('run', args, RUN_FLAGS)}` "
                          "creates it")
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ConfigError("optuna-dashboard is not installed; install it with `pip install optuna-dashboard` (or, "
                          "in a clone of ltstudy, `pip install -e '.[dashboard]'`)")
    _check_port_free(args.host, args.port)
    name = args.study_name or cfg.study.name
    study_id = _study_id(url, name)
    target = str(journal_path(url)) if storage_kind(url) == "journal" else url
    cmd = [*DASHBOARD, target, "--host", args.host, "--port", str(args.port)]
    if storage_kind(url) == "journal":
        cmd += ["--storage-class", "JournalFileStorage"]
    page = f"dashboard/studies/{study_id}" if study_id is not None else "dashboard"  # (the study, not the list)
    return serve(cmd, f"optuna-dashboard for {redact(url)}: http://{args.host}:{args.port}/{page}")


def _study_id(url: str, name: str) -> int | None:
    """The storage's id of the study (optuna-dashboard's URL of a study holds it), or None if it is not there."""
    from ..study.storage import open_storage

    storage = open_storage(url)
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def serve(cmd: list[str], banner: str, env: dict[str, str] | None = None) -> int:
    """Run a server in its own process group until Ctrl-C or SIGTERM, then stop it and everything it started.

    The banner (which ends with the server's URL) is printed once the server answers.
    """
    interrupt_on_signals()
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    try:
        if not _answers(proc, banner.rsplit(" ", 1)[-1]):
            print(f"ltstudy: the server exited with code {proc.returncode} before it answered (its own words are "
                  "above)", file=sys.stderr)
            return 1
        print(f"{banner}  (Ctrl-C to stop)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process_group(proc)


def _answers(proc: subprocess.Popen, url: str) -> bool:
    """Wait until the server at `url` answers a request (True), or until it exits first (False)."""
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url.split("#")[0], timeout=5):
                return True
        except urllib.error.HTTPError:  # (an error page is an answer: it is up)
            return True
        except OSError:  # refused, reset, timed out: still starting
            time.sleep(0.25)
    return False


def _check_port_free(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None
