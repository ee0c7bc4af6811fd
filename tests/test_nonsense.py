"""Settings that are legal but make no sense are refused in one line (exit 2, nothing created) or warned about.

Each case once ran with exit 0 and no word, or with a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from optuna.trial import TrialState

from ltstudy import cli
from ltstudy.study.frontier import pareto_trials
from tests.study_helpers import Stores, isolate, seed_mlflow_db, to_toml, write_study


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(monkeypatch, tmp_path)
    return tmp_path


def one_line(err: str, command: str, kind: str = "error") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ltstudy {command}: {kind}: "), lines[0]
    return lines[0]


TICKET = ["ticket", "--dataset", "digits", "--quiet", "--json", "out.json", "--save", "tickets"]


@pytest.mark.parametrize(("flags", "needle"), [
    (["--rounds", "1000", "--iterations", "1", "--eval-every", "1"], "nothing is left to prune"),
    (["--prune-rate", "0.9999", "--rounds", "50"], "would leave layer fc3 without a weight"),
    (["--one-shot", "--target-density", "1e-9"], "without a weight"),
    (["--batch-size", "100000"], "is more than the 1258 training examples"),
    (["--seed", "9223372036854775808"], "seed must be between 0 and 2^63 - 1"),
    (["--layer-rates", "fc1=0.3,fc1=0.4"], "prune.layer_rates sets fc1 twice in 'fc1=0.3,fc1=0.4'"),
], ids=["pruning stalls", "a layer emptied", "one-shot to nothing", "batch beyond the split", "seed overflow",
        "a layer's rate twice"])
def test_a_ticket_search_that_makes_no_sense_is_refused_before_training(here, capsys, flags, needle):
    assert cli.main([*TICKET, *flags]) == 2
    assert needle in one_line(capsys.readouterr().err, "ticket")
    assert os.listdir(here) == []  # no JSON, no tickets folder


@pytest.mark.parametrize(("flags", "needle"), [
    (["--momentum", "0.9", "--eval-every", "10"],
     "train.momentum and train.nesterov are SGD settings; Adam ignores them"),
    (["--eval-every", "50"], "train.eval_every (50 it) is longer than a round (20 it)"),
], ids=["momentum with adam", "eval_every past the round"])
def test_a_surprising_but_legal_setting_is_one_warning_and_runs(here, capsys, flags, needle):
    assert cli.main(["ticket", "--dataset", "digits", "--quiet", "--iterations", "20", "--rounds", "1",
                     *flags]) == 0
    assert needle in one_line(capsys.readouterr().err, "ticket", "warning")


def test_a_dense_network_at_chance_accuracy_is_refused_as_a_result(here, capsys):
    """lr = 1e6 with Adam: the loss stays finite, the network guesses, and every round would "match" it."""
    assert cli.main(["ticket", "--dataset", "digits", "--quiet", "--lr", "1e6", "--iterations", "100",
                     "--rounds", "2"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ltstudy ticket: the dense network did not learn: validation accuracy")
    assert "is chance for 10 classes" in line and "lower the learning rate" in line


def test_in_a_study_a_dense_network_at_chance_is_a_diverged_infeasible_trial_not_a_winner(here, tmp_path_factory):
    stores = Stores(here)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(here, stores, study={"n_trials": 1}, train={"lr": 1e6},
                       search={"prune_rate": 0.5, "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                               "rounds": 2})
    assert cli.main(["run", str(path), "--quiet"]) == 0
    study = stores.study()
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["diverged"] is True
    assert "did not learn" in trial.user_attrs["fail_reason"] and trial.constraints["diverged"] == 1.0
    assert [r["round"] for r in trial.user_attrs["rounds"]] == [0]  # no pruned round trained after it
    assert pareto_trials(study) == []  # so its "sparse ticket" tops nothing


@pytest.mark.parametrize(("doc", "needle"), [
    ("", "is empty"),
    ("[study]\nn_trials = 2\n", "[study] name"),
    ("[study]\nname = \"x\"\nseed = 99999999999999999999\n", "seed must be between 0 and 2^63 - 1"),
    ("[study]\nname = \"x\"\nstorage = \"sqlite:///:memory:\"\n", "in-memory SQLite database"),
    ("[study]\nname = \"x\"\n[search]\nprune_rate = 0.2\nrounds = 200\n[train]\niterations = 10\neval_every = 10\n",
     "nothing is left to prune"),
    ("[study]\nname = \"x\"\n[search]\nreinit = [\"rewind\", \"random\"]\n", "[study] controls"),
    ("[study]\nname = \"x\"\n[data]\nname = \"mnist\"\nroot = \"no-such-folder\"\n", "no-such-folder"),
    ("[study]\nname = \"x\"\ntracking_uri = \"sqlite:///:memory:\"\n",
     "tracking URI sqlite:///:memory: is an in-memory SQLite database: every run logged to it is lost"),
    ("[study]\nname = \"x\"\nstorage = \"journal:.ltstudy\"\n",
     "storage journal .ltstudy would be a file where the cache folder .ltstudy/cache needs a folder"),
    ("[study]\nname = \"x\"\ntracking_uri = \"sqlite:///.ltstudy/optuna.journal\"\n",
     "storage journal .ltstudy/optuna.journal would be the same file as the MLflow store"),
    ("[study]\nname = \"x\"\nobjectives = [\"accuracy_at_density:0.5\", \"accuracy_at_density:0.50\"]\n",
     "lists an objective twice: 'accuracy_at_density:0.5' and 'accuracy_at_density:0.50' are one"),
    ("[study]\nname = \"x\"\n[data]\nval_size = -5\n", "data.val_size must be >= 1 (examples held out for "
     "validation) or -1 (the dataset's default), got -5"),
    ("[study]\nname = \"x\"\n[prune]\nmask = \"snip-reinit\"\n", "is a control"),
], ids=["empty file", "no name", "seed overflow", "in-memory storage", "pruning stalls", "a control searched",
        "missing data", "in-memory tracking", "the journal named like the cache's folder", "one file for both stores",
        "an objective twice in two spellings", "a negative validation split", "a control as the mask"])
def test_a_study_that_makes_no_sense_is_refused_in_one_line_and_creates_nothing(here, capsys, doc, needle):
    (here / "s.toml").write_text(doc)
    assert cli.main(["run", "s.toml", "--quiet"]) == 2
    assert needle in one_line(capsys.readouterr().err, "run")
    assert sorted(os.listdir(here)) == ["s.toml"]


def test_more_threads_than_cores_is_one_warning(here, capsys, tmp_path_factory):
    stores = Stores(here)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(here, stores, study={"n_trials": 0, "threads": 64})
    assert cli.main(["run", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "warning" in line]
    assert line.startswith("ltstudy run: warning: ") and "64" in line and "cores" in line


def test_the_ui_on_a_bad_port_creates_no_store(here, capsys):
    (here / "s.toml").write_text(to_toml({"study": {"name": "x", "tracking_uri": f"sqlite:///{here}/m/mlflow.db"}}))
    assert cli.main(["ui", "s.toml", "--port", "99999"]) == 2
    assert "port" in one_line(capsys.readouterr().err, "ui")
    assert sorted(os.listdir(here)) == ["s.toml"]


@pytest.mark.parametrize("flag", ["--storage", "--tracking-uri", "--cache-dir"])
def test_a_folder_that_cannot_be_created_is_one_line_before_anything_is(here, capsys, tmp_path_factory, flag):
    """(/proc says it is writable to root, then refuses the folder: a journal there was a traceback.)"""
    target = {"--storage": "journal:/proc/ltstudy-no/optuna.journal",
              "--tracking-uri": "sqlite:////proc/ltstudy-no/mlflow.db", "--cache-dir": "/proc/ltstudy-no/cache"}[flag]
    write_study(here, None, "s.toml", study={"storage": f"journal:{here}/j/optuna.journal",
                                             "tracking_uri": f"sqlite:///{here}/m/mlflow.db"})
    assert cli.main(["run", "s.toml", flag, target, "--quiet"]) == 2
    assert "cannot be created" in one_line(capsys.readouterr().err, "run")
    assert sorted(os.listdir(here)) == ["s.toml"]


@pytest.mark.parametrize(("flags", "needle"), [
    (["--n-trials", "1", "--more", "1"], "--n-trials 1 sets the study's total and --more 1 adds to the trials "
     "already finished; give one of them"),
    (["--study-name", ""], "--study-name is empty; give a value or leave the flag out"),
    (["--storage", ""], "--storage is empty"),
], ids=["a total and more", "an empty study name", "an empty storage"])
def test_run_flags_that_contradict_or_say_nothing_are_refused(here, capsys, flags, needle):
    write_study(here, None, "s.toml")
    try:
        code = cli.main(["run", "s.toml", "--quiet", *flags])
    except SystemExit as exc:  # (argparse's own errors)
        code = exc.code
    assert code == 2
    assert needle in one_line(capsys.readouterr().err, "run")
    assert sorted(os.listdir(here)) == ["s.toml"]


@pytest.mark.parametrize(("command", "by", "needle"), [
    ("compare", "lr", "--by: lr is not searched in this study, so every trial has the same value; compare "
     "prune_rate or rewind_iter or scope or reinit"),
    ("compare", "prune_rate,prune_rate", "--by names prune_rate twice"),
    ("report", "lr", "--by: lr is not searched in this study"),
])
def test_comparing_by_a_setting_that_does_not_vary_or_twice_is_refused(here, capsys, command, by, needle):
    write_study(here, None, "s.toml")  # (refused before the study is read: none has to exist)
    assert cli.main([command, "s.toml", "--by", by]) == 2
    assert needle in one_line(capsys.readouterr().err, command)
