"""What the command line says is true: the help of --jobs and of worker, where a hint points, what was written."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ltstudy import cli
from ltstudy.study import workers
from tests.study_helpers import Stores, isolate, quiet_run, seed_mlflow_db, study_doc, to_toml


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(monkeypatch, tmp_path)
    return tmp_path


def main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # (--help)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_help_of_jobs_says_the_threads_each_worker_process_takes(capsys):
    code, out, _ = main(capsys, "run", "--help")
    assert code == 0
    jobs = " ".join(out[out.index("\n  --jobs N"):].split("--tracking-uri")[0].split())  # (its help, not the usage)
    assert "cores/N" not in jobs and "each trains with [study].threads torch threads" in jobs
    # (what the worker process does: the study's threads, not the machine's cores over N)
    assert "set_threads(cfg.study.threads, alone=False)" in inspect.getsource(workers.worker_main)


def test_the_help_of_worker_says_the_first_worker_creates_the_study(capsys):
    code, out, _ = main(capsys, "worker", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "--n-trials 0" not in text and "the first worker creates it, with its MLflow parent run" in text
    assert "creating it if it does not exist yet" in inspect.getdoc(workers.run_worker)


def test_after_a_run_under_another_name_the_hint_names_it(here, capsys, tmp_path_factory):
    stores = Stores(here)
    seed_mlflow_db(tmp_path_factory, stores.db)
    (here / "s.toml").write_text(to_toml(study_doc(stores)))
    code, out, _ = main(capsys, "run", "s.toml", "--quiet", "--n-trials", "0", "--study-name", "my run")
    assert code == 0
    assert "browse with `ltstudy ui s.toml --study-name 'my run'`" in out


def test_the_ui_hint_for_a_missing_store_names_the_study_given(here, capsys):
    (here / "s.toml").write_text(to_toml(study_doc(study={"tracking_uri": f"sqlite:///{here}/m/mlflow.db"})))
    code, _, err = main(capsys, "ui", "s.toml", "--study-name", "other")
    assert code == 2
    assert "`ltstudy run s.toml --study-name other` creates it" in err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-trial study whose rounds measured their stability (so `stability STUDY.toml` has numbers)."""
    root = tmp_path_factory.mktemp("writes")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    doc = study_doc(stores, study={"n_trials": 1, "cache_dir": str(root / "cache")}, stability={"points": 2},
                    search={"prune_rate": 0.5, "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                            "rounds": 1})
    (root / "study.toml").write_text(to_toml(doc))
    with quiet_run(root):
        assert cli.main(["run", str(root / "study.toml"), "--quiet"]) == 0
    return root / "study.toml"


TICKET = ["--dataset", "digits", "--iterations", "40", "--eval-every", "20", "--rounds", "1", "--quiet"]


@pytest.mark.parametrize(("argv", "written"), [
    (["ticket", *TICKET, "--json", "t.json", "--save", "tickets"], ["t.json", "tickets"]),
    (["stability", *TICKET[:-1], "--k", "0", "--json", "s.json", "--plot", "s.png"], ["s.json", "s.png"]),
    (["stability", "{study}", "--json", "ss.json", "--plot", "ss.png"], ["ss.json", "ss.png"]),
    (["pareto", "{study}", "--json", "p.json", "--plot", "p.svg"], ["p.json", "p.svg"]),
    (["compare", "{study}", "--json", "c.json", "--plot", "c.pdf"], ["c.json", "c.pdf"]),
    (["report", "{study}", "--out", "r.html"], ["r.html"]),
    (["export", "{study}", "--out", "exported"], ["exported"]),
], ids=["ticket", "stability", "stability of a study", "pareto", "compare", "report", "export"])
def test_every_command_that_writes_a_file_says_wrote_path(here, capsys, finished, argv, written):
    code, out, err = main(capsys, *[str(finished) if a == "{study}" else a for a in argv])
    assert code == 0, err
    said = [line for line in out.splitlines() if line.startswith("wrote ")]
    for path in written:
        assert (here / path).exists()
        assert any(f" {path}" in line for line in said), (path, said)  # ("wrote 2 tickets: tickets/round_00 ..")


def test_a_hint_shows_a_password_in_a_url_as_stars():
    import argparse

    from ltstudy.cli.common import command_line

    args = argparse.Namespace(study_file="s.toml", study_name=None, storage="postgresql://u:secret@db:5432/optuna",
                              tracking_uri="http://x:pw@mlflow:5000")
    line = command_line("run", args, ("--storage", "--study-name", "--tracking-uri"))
    assert "secret" not in line and "pw@" not in line
    assert line == "ltstudy run s.toml --storage 'postgresql://u:***@db:5432/optuna' --tracking-uri 'http://x:***@mlflow:5000'"
