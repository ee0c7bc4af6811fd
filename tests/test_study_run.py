"""Running studies end to end against temporary Optuna and MLflow stores.

Layout under test: one MLflow experiment per study, one parent run per study,
one child run per Optuna trial (tagged mlflow.parentRunId), per-round metrics
with step = round, and no run ever left RUNNING.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ltstudy.engine.compression import CostModel
from ltstudy.engine.errors import RunFailed
from ltstudy.engine.rounds import RoundResult, TicketResult
from ltstudy.engine.search import Search
from ltstudy.study import runner as runner_module
from ltstudy.study import trial as trial_module
from ltstudy.study.attrs import EXPERIMENT_ATTR, PARENT_ATTR
from ltstudy.study.config import load_study
from ltstudy.study.curves import ticket_round
from ltstudy.study.frontier import pareto_trials
from ltstudy.study.mlflow_logging import StudyLog, flatten, rounds_csv
from ltstudy.study.runner import run_study
from ltstudy.study.session import RunOptions
from ltstudy.study.storage import open_storage
from ltstudy.study.tracking import PARENT_TAG, Tracker
from tests.engine_helpers import OnNote, OnRoundEnd
from tests.study_helpers import (
    ROUNDS,
    Stores,
    experiment_runs,
    isolate,
    metric_steps,
    parent_and_children,
    quiet_run,
    run_of_trial,
    run_quiet,
    seed_mlflow_db,
    seeded_stores,
    write_study,
)

STEPS = list(range(ROUNDS + 1))


@pytest.fixture
def stores(tmp_path: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> Stores:
    """Temporary stores (the MLflow database starts as a migrated empty copy); cwd is the temp folder."""
    return seeded_stores(monkeypatch, tmp_path, tmp_path_factory)


run = run_quiet


def assert_nothing_running(stores: Stores, name: str = "tiny") -> None:
    still = [(r.info.run_name, r.info.status) for r in experiment_runs(stores.client(), name)
             if r.info.status == "RUNNING"]
    assert still == []


def raise_in_search(monkeypatch: pytest.MonkeyPatch, on_call: int, exc: BaseException, after_round: int = 0):
    """Make the `on_call`-th ticket search (1-based) raise `exc` once round `after_round` has been reported."""
    real = trial_module.ticket_search
    calls = []

    def make(cfg, data=None, cache=None, controls=()):
        search = real(cfg, data, cache, controls)
        calls.append(cfg.prune.prune_rate)
        if len(calls) == on_call:
            events = search.events

            def failing(states=False):
                gen, reply = events(states), None
                while True:
                    try:
                        event = gen.send(reply)
                    except StopIteration as done:
                        return done.value
                    reply = yield event
                    if isinstance(event, RoundResult) and event.round == after_round:
                        raise exc

            search.events = failing
        return search

    monkeypatch.setattr(trial_module, "ticket_search", make)
    return calls


# --------------------------------------------------------------------------- a tiny study, end to end


class Finished:
    def __init__(self, stores: Stores, code: int, out: str):
        self.stores, self.code, self.out = stores, code, out
        self.client = stores.client()
        self.study = stores.study()
        self.parents, self.children = parent_and_children(self.client, "tiny")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    """3 trials of 2 rounds, with a fresh MLflow database created by the run itself."""
    root = tmp_path_factory.mktemp("e2e")
    stores = Stores(root)
    path = write_study(root, stores, study={"sampler": "tpe"})
    with quiet_run(root) as out:
        code = run(path)
    return Finished(stores, code, out.getvalue())


def test_the_run_succeeds_and_reports_the_new_trials(finished: Finished):
    assert finished.code == 0
    assert re.search(r"study 'tiny': ran 3 trials \(3 COMPLETE\) in \d+ s; 3 of n_trials = 3 finished", finished.out)
    assert [t.state for t in finished.study.trials] == [TrialState.COMPLETE] * 3


def test_one_experiment_named_after_the_study_with_one_parent_run(finished: Finished):
    names = [e.name for e in finished.client.search_experiments()]
    assert names.count("tiny") == 1
    assert len(finished.parents) == 1
    parent = finished.parents[0]
    assert parent.info.run_id == finished.study.user_attrs[PARENT_ATTR]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study"] == "tiny"


def test_one_child_run_per_trial_under_the_parent(finished: Finished):
    parent_id = finished.parents[0].info.run_id
    assert len(finished.children) == 3
    assert {r.data.tags[PARENT_TAG] for r in finished.children} == {parent_id}
    assert sorted(r.data.tags["optuna.trial"] for r in finished.children) == ["0", "1", "2"]
    for t in finished.study.trials:
        run = run_of_trial(finished.children, t.number)
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.study"] == "tiny"
        assert run.data.tags["state"] == "COMPLETE"


def test_every_child_has_one_metric_step_per_round(finished: Finished):
    for run in finished.children:
        for key in ("val_accuracy", "density", "test_accuracy", "iterations", "sparsity", "val_loss",
                    "test_accuracy_at_early_stop", "start_test_accuracy", "early_stop_iteration", "train_loss",
                    "path_iterations", "reused", "computed_iterations", "compression_ratio",
                    "compression_ratio_all_params", "params_nonzero", "dense_flops", "nonzero_flops",
                    "theoretical_speedup"):  # (the README's list)
            assert metric_steps(finished.client, run.info.run_id, key) == STEPS, key
    for t in finished.study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        sparsity = {m.step: m.value for m in finished.client.get_metric_history(run_id, "sparsity")}
        assert sparsity == {r["round"]: pytest.approx(1 - r["density"]) for r in t.user_attrs["rounds"]}


def test_logged_densities_and_accuracies_match_the_trial_rounds(finished: Finished):
    for t in finished.study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        history = {m.step: m.value for m in finished.client.get_metric_history(run_id, "density")}
        assert history == {r["round"]: pytest.approx(r["density"]) for r in t.user_attrs["rounds"]}
        assert history[0] == 1.0 and history[1] < 1.0 and history[2] < history[1]


def test_each_layer_s_density_is_a_metric_per_round_and_matches_the_masks(finished: Finished):
    for t in finished.study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        for layer in ("fc1", "fc2", "fc3"):
            history = {m.step: m.value for m in finished.client.get_metric_history(run_id, f"layer_density/{layer}")}
            assert history == {r["round"]: pytest.approx(r["layer_density"][layer]) for r in t.user_attrs["rounds"]}
        # the overall density is the layers' weighted by their sizes (LeNet-300-100 on 8x8 digits)
        sizes = {"fc1": 64 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
        for r in t.user_attrs["rounds"]:
            assert r["density"] == pytest.approx(sum(sizes[k] * d for k, d in r["layer_density"].items())
                                                 / sum(sizes.values()))


def test_each_trial_run_names_its_data_in_the_dataset_column(finished: Finished):
    for run in finished.children:
        (inp,) = finished.client.get_run(run.info.run_id).inputs.dataset_inputs
        assert inp.dataset.name == "digits" and len(inp.dataset.digest) > 8
        profile = json.loads(inp.dataset.profile)
        assert profile["train"] + profile["validation"] + profile["test"] == 1797  # scikit-learn's digits
        assert profile["classes"] == 10 and profile["input_shape"] == [1, 8, 8]


def test_child_params_describe_the_whole_trial_config(finished: Finished):
    for t in finished.study.trials:
        params = run_of_trial(finished.children, t.number).data.params
        for key in ("prune.prune_rate", "prune.rewind_iter", "prune.scope", "prune.reinit", "prune.rounds",
                    "model.name", "data.name", "seed", "train.lr", "train.iterations", "epsilon"):
            assert key in params, key
        assert params["model.name"] == "lenet-300-100" and params["data.name"] == "digits"
        assert params["prune.rounds"] == str(ROUNDS)
        assert params["prune.scope"] == t.params["scope"]
        assert float(params["prune.prune_rate"]) == t.params["prune_rate"]
        assert json.loads(params["seeds"]) == [0]


def test_child_tags_name_the_trial_and_its_searched_values(finished: Finished):
    for t in finished.study.trials:
        tags = run_of_trial(finished.children, t.number).data.tags
        assert tags["optuna.trial"] == str(t.number)
        assert tags["search.reinit"] == t.params["reinit"]
        assert tags["mlflow.runName"] == f"trial-{t.number}"
        assert tags["kind"] == t.user_attrs["kind"] == "ticket"


def test_objective_metrics_are_the_optuna_values(finished: Finished):
    for t in finished.study.trials:
        metrics = run_of_trial(finished.children, t.number).data.metrics
        assert metrics["objective.ticket_sparsity"] == pytest.approx(t.values[0])
        assert metrics["objective.train_iterations"] == pytest.approx(t.values[1])
        assert t.values[0] == pytest.approx(1 - ticket_round(t.user_attrs["rounds"], 0.01)["density"])


def test_artifacts_of_children_and_parent(finished: Finished):
    client = finished.client
    for run in finished.children:
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"rounds.csv", "rounds.json", "accuracy_vs_density.png"} <= names
        local = client.download_artifacts(run.info.run_id, "rounds.json", str(finished.stores.root / "dl"))
        rounds = json.loads(Path(local).read_text())
        assert [r["round"] for r in rounds["mean"]] == STEPS
        assert [[r["round"] for r in per] for per in rounds["per_seed"].values()] == [STEPS]
    parent_id = finished.parents[0].info.run_id
    assert {"pareto.png", "summary.json", "round_frontier.json"} <= {a.path for a in client.list_artifacts(parent_id)}
    assert client.get_experiment(finished.parents[0].info.experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"  # (MLflow 3's UI opens such an experiment on its runs table)
    local = client.download_artifacts(parent_id, "summary.json", str(finished.stores.root / "dl"))
    summary = json.loads(Path(local).read_text())
    assert [row["trial"] for row in summary] == [0, 1, 2]
    png = client.download_artifacts(parent_id, "pareto.png", str(finished.stores.root / "dl"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_artifacts_live_beside_the_database_not_in_the_working_folder(finished: Finished):
    root = finished.stores.root
    assert (root / "artifacts").is_dir()
    assert not (root / "mlruns").exists()
    assert not (root / "mlflow").exists()  # the default tracking folder was not used


def test_pareto_tags_mark_exactly_the_best_trials(finished: Finished):
    best = {t.number for t in finished.study.best_trials}
    tagged = {int(r.data.tags["optuna.trial"]) for r in finished.children if r.data.tags.get("pareto") == "true"}
    assert tagged and tagged == best
    assert finished.study.user_attrs["pareto_trials"] == sorted(best)


def test_no_run_is_left_running(finished: Finished):
    assert_nothing_running(finished.stores)


def test_trials_keep_their_rounds_and_settings_for_reports(finished: Finished):
    for t in finished.study.trials:
        assert [r["round"] for r in t.user_attrs["rounds"]] == STEPS
        assert t.user_attrs["params_all"]["prune_rate"] == t.params["prune_rate"]
        assert t.user_attrs["params_all"]["rounds"] == ROUNDS


# --------------------------------------------------------------------------- resuming


def test_running_again_completes_the_study_and_then_stops(stores: Stores, capsys):
    """n_trials is the study's total: the same command run again adds nothing (it used to add n_trials more)."""
    path = write_study(stores.root, stores, search={"prune_rate": {"low": 0.2, "high": 0.5}})
    assert run(path) == 0
    assert run(path) == 0
    assert len(stores.study().trials) == 3
    assert "already has 3 finished trials (n_trials = 3); nothing to run" in capsys.readouterr().out
    assert run(path, "--n-trials", "4") == 0  # the total, raised
    assert len(stores.study().trials) == 4


def test_more_adds_trials_under_the_same_parent_run(stores: Stores):
    path = write_study(stores.root, stores, search={"prune_rate": {"low": 0.2, "high": 0.5}})
    assert run(path) == 0
    parent = stores.study().user_attrs[PARENT_ATTR]
    assert run(path, "--more", "2") == 0
    study = stores.study()
    assert len(study.trials) == 5
    assert study.user_attrs[PARENT_ATTR] == parent
    parents, children = parent_and_children(stores.client(), "tiny")
    assert [p.info.run_id for p in parents] == [parent]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == 5
    assert {c.data.tags[PARENT_TAG] for c in children} == {parent}
    assert_nothing_running(stores)


def test_a_resumed_study_does_not_replay_the_samplers_first_draws(stores: Stores):
    path = write_study(stores.root, stores, search={"prune_rate": {"low": 0.2, "high": 0.5}})
    assert run(path, "--n-trials", "2") == 0
    assert run(path, "--n-trials", "4") == 0
    rates = [t.params["prune_rate"] for t in stores.study().trials]
    assert len(set(rates)) == 4, rates


def test_a_study_cannot_be_continued_with_other_objectives(stores: Stores, capsys):
    assert run(write_study(stores.root, stores), "--n-trials", "0") == 0
    other = write_study(stores.root, stores, "other.toml", study={"objectives": ["ticket_accuracy"]})
    assert run(other) == 2
    err = capsys.readouterr().err
    assert "exists with objectives" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- failures


def test_a_trial_that_raises_fails_alone_and_the_study_finishes(stores: Stores, monkeypatch):
    calls = raise_in_search(monkeypatch, on_call=2, exc=RuntimeError("boom"), after_round=1)
    assert run(write_study(stores.root, stores)) == 0
    assert len(calls) == 3
    study = stores.study()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed = study.trials[1]
    assert failed.user_attrs["fail_reason"] == "RuntimeError: boom"
    assert [r["round"] for r in failed.user_attrs["rounds"]] == [0, 1]  # what it finished is kept
    parents, children = parent_and_children(stores.client(), "tiny")
    bad = run_of_trial(children, 1)
    assert bad.info.status == "FAILED"
    assert bad.data.tags["reason"] == "RuntimeError: boom"
    assert bad.data.tags["state"] == "FAIL"
    assert [run_of_trial(children, n).info.status for n in (0, 2)] == ["FINISHED", "FINISHED"]
    assert parents[0].info.status == "FINISHED"
    assert_nothing_running(stores)


def always_failing(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ticket search raises before it trains (as a damaged cache once made every trial fail)."""
    calls: list[float] = []

    def make(cfg, data=None, cache=None, controls=()):
        calls.append(cfg.prune.prune_rate)
        raise KeyError("theta0")

    monkeypatch.setattr(trial_module, "ticket_search", make)
    return calls


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_run_whose_every_trial_failed_exits_1_with_one_line_saying_why(stores: Stores, monkeypatch, capsys,
                                                                        command):
    """(It used to exit 0 after "0 of 4 finished"; a worker retried the failing trials forever.)"""
    calls = always_failing(monkeypatch)
    from ltstudy import cli

    assert cli.main([command, str(write_study(stores.root, stores)), "--quiet"]) == 1
    assert len(calls) == 3  # n_trials of them: a worker stops after as many failures in a row
    assert [t.state for t in stores.study().trials] == [TrialState.FAIL] * 3
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"ltstudy {command}: every trial it ran failed (3): KeyError: 'theta0' (trials 0, 1, 2); each "
                    "trial's reason is in its MLflow run")
    assert_nothing_running(stores)


def test_a_run_where_some_trials_failed_and_others_finished_exits_0(stores: Stores, monkeypatch, capsys):
    raise_in_search(monkeypatch, on_call=1, exc=RuntimeError("boom"))
    assert run(write_study(stores.root, stores, study={"n_trials": 2})) == 0
    assert [t.state for t in stores.study().trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "failed" not in capsys.readouterr().err


def test_a_diverging_trial_is_a_bad_result_not_a_failure(stores: Stores):
    """NaN loss: COMPLETE with worst values and an infeasible constraint, so samplers learn to avoid the region."""
    path = write_study(stores.root, stores, study={"n_trials": 1, "min_dense_accuracy": 0.5},
                       train={"optimizer": "sgd"}, search={"lr": [1e6]})
    assert run(path) == 0
    study = stores.study()
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert trial.values == [0.0, pytest.approx(trial.values[1])] and trial.values[1] > 0  # no ticket; iterations run
    assert trial.constraints["diverged"] == 1.0
    assert trial.user_attrs["diverged"] is True
    assert trial.user_attrs["fail_reason"].startswith("diverged: training loss became nan")
    assert pareto_trials(study) == [] and study.best_trials == []
    _, (child,) = parent_and_children(stores.client(), "tiny")
    assert child.info.status == "FINISHED"
    assert child.data.tags["state"] == "DIVERGED" and child.data.tags["feasible"] == "False"
    assert "diverged" in child.data.tags["reason"] and "lower the learning rate" in child.data.tags["reason"]
    assert_nothing_running(stores)


def test_ctrl_c_closes_every_run_and_exits_130(stores: Stores, monkeypatch, capsys):
    raise_in_search(monkeypatch, on_call=2, exc=KeyboardInterrupt(), after_round=1)
    path = write_study(stores.root, stores)
    assert run(path) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and len(err.splitlines()) == 1, err  # one clean line, no Optuna traceback
    study = stores.study()
    done = [t for t in study.trials if t.state != TrialState.WAITING]
    assert [t.state for t in done] == [TrialState.COMPLETE, TrialState.FAIL]  # the third never started
    assert done[1].user_attrs["fail_reason"] == "interrupted"
    parents, children = parent_and_children(stores.client(), "tiny")
    assert len(children) == 2
    interrupted = run_of_trial(children, 1)
    assert (interrupted.info.status, interrupted.data.tags["reason"]) == ("FAILED", "interrupted")
    assert metric_steps(stores.client(), interrupted.info.run_id, "val_accuracy") == [0, 1]
    assert parents[0].info.status == "KILLED"
    assert_nothing_running(stores)


def test_after_ctrl_c_the_same_command_continues_under_the_same_parent(stores: Stores, monkeypatch):
    raise_in_search(monkeypatch, on_call=1, exc=KeyboardInterrupt())
    path = write_study(stores.root, stores)
    assert run(path) == 130
    parent = stores.study().user_attrs[PARENT_ATTR]
    monkeypatch.undo()
    isolate(monkeypatch, stores.root)
    assert run(path, "--n-trials", "1") == 0
    study = stores.study()
    assert study.user_attrs[PARENT_ATTR] == parent
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 1
    parents, _ = parent_and_children(stores.client(), "tiny")
    assert [(p.info.run_id, p.info.status) for p in parents] == [(parent, "FINISHED")]
    assert_nothing_running(stores)


def test_a_study_that_aborts_with_an_error_marks_its_parent_run_failed(stores: Stores, monkeypatch):
    def crash(*args, **kwargs):
        raise RunFailed("1 worker process(es) exited with codes [1]")

    monkeypatch.setattr(runner_module, "run_local_workers", crash)
    cfg = load_study(write_study(stores.root, stores))
    with pytest.raises(RunFailed):
        run_study(cfg, RunOptions(jobs=2))
    (parent,), _ = parent_and_children(stores.client(), "tiny")
    assert parent.info.status == "FAILED"


@pytest.mark.parametrize("pack", [1, 2])
def test_a_study_callback_hears_every_round_of_every_search_from_its_watcher_bound_to_trial_and_seed(
        stores: Stores, pack: int):
    """(Rounds reached the study's callback only through the trial's own method, `on_trial_round`.)"""
    from ltstudy.study.callbacks import StudyCallback

    class Watching(StudyCallback):
        def __init__(self):
            self.heard: list[tuple] = []

        def watch(self, trial, seed):
            return OnRoundEnd(lambda rec: self.heard.append((trial, seed, rec.control, rec.round)))

    path = write_study(stores.root, stores, study={"n_trials": 2, "replicates": 2, "controls": ["random-mask"],
                                                    "pack": pack, "sampler": "grid"},
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                               "rounds": 1})
    watching = Watching()
    run_study(load_study(path), RunOptions(), watching)
    expected = [(t, seed, control, r) for t in (0, 1) for seed in (0, 1)
                for control, r in (("", 0), ("random-mask", 1), ("", 1))]  # (a level's control before the ticket)
    assert sorted(watching.heard) == sorted(expected)
    for t in (0, 1):  # each search's own order
        for seed in (0, 1):
            assert [h[2:] for h in watching.heard if h[:2] == (t, seed)] == [("", 0), ("random-mask", 1), ("", 1)]


def test_stop_on_drop_prunes_the_trial_and_keeps_its_rounds(stores: Stores):
    path = write_study(stores.root, stores, study={"n_trials": 1, "stop_on_drop": True, "max_accuracy_drop": 0.0},
                       search={"prune_rate": 0.9, "rounds": 3, "scope": "layerwise", "reinit": "rewind",
                               "rewind_iter": 0})
    assert run(path) == 0
    (trial,) = stores.study().trials
    assert trial.state == TrialState.PRUNED
    rounds = trial.user_attrs["rounds"]
    stopped_at = rounds[-1]["round"]
    assert 1 <= stopped_at < 3  # it stopped before the last round
    assert rounds[0]["val_accuracy"] - rounds[-1]["val_accuracy"] > 0.0  # the round that dropped
    assert all(r["val_accuracy"] >= rounds[0]["val_accuracy"] for r in rounds[1:-1])  # none dropped before
    assert f"at round {stopped_at}" in trial.user_attrs["stop_reason"]
    # It carries its constraint values, so samplers see it as infeasible rather than as feasible.
    assert trial.constraints["accuracy_drop"] == pytest.approx(rounds[0]["val_accuracy"] - rounds[-1]["val_accuracy"])
    assert trial.constraints["accuracy_drop"] > 0
    _, (child,) = parent_and_children(stores.client(), "tiny")
    assert child.info.status == "KILLED"
    assert child.data.tags["reason"].startswith("pruned: accuracy drop")
    assert child.data.tags["state"] == "PRUNED"
    assert metric_steps(stores.client(), child.info.run_id, "val_accuracy") == list(range(stopped_at + 1))
    assert_nothing_running(stores)


# --------------------------------------------------------------------------- single objective and constraints


@pytest.fixture(scope="module")
def constrained(tmp_path_factory):
    """A single-objective study with both constraints: 2 trials."""
    root = tmp_path_factory.mktemp("single")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(root, stores, study={"objectives": ["ticket_sparsity"], "n_trials": 2,
                                            "max_accuracy_drop": 0.5, "min_dense_accuracy": 0.5})
    with quiet_run(root):
        assert run(path) == 0
    return stores


def test_a_single_objective_study_reports_values_keyed_by_density_not_by_round(constrained: Stores):
    from ltstudy.study.objectives import parse_objective

    for t in constrained.study().trials:
        assert t.state == TrialState.COMPLETE
        rounds = t.user_attrs["rounds"]
        expected = parse_objective("ticket_sparsity").intermediate_values(rounds, 0.01)
        assert expected and t.intermediate_values == pytest.approx(expected)
        assert t.value == pytest.approx(1 - ticket_round(rounds, 0.01)["density"])


def _synthetic_rounds(rate: float, n: int, accuracy) -> list[RoundResult]:
    return [RoundResult(round=r, density=(1 - rate) ** r, weights_remaining=0, val_loss=0.1, val_accuracy=accuracy(r),
                        early_stop_iteration=60, test_accuracy=0.9, test_accuracy_at_early_stop=0.9, train_loss=0.1,
                        iterations=60, wall_seconds=0.0) for r in range(n + 1)]


def test_the_median_pruner_does_not_kill_a_low_p_trial_before_it_reaches_the_density(stores: Stores, monkeypatch):
    """accuracy_at_density:X used to report 0 at every round before density X, so the median pruner killed every
    low-p trial early (a p = 0.2 trial that would score 0.95 was pruned at round 4 against p = 0.5 trials at 0.80)."""
    class Scripted(Search):
        """Prepared rounds: p = 0.5 has fallen to 0.80 at density 0.125 (round 3); p = 0.2 keeps 0.95 to round 10."""

        kind = "ticket"
        cost = CostModel({"fc": 100}, {"fc": 100}, 110)  # (one layer: the compression metric has its numbers)

        def __init__(self, cfg, data=None, cache=None, controls=()):
            p = cfg.prune.prune_rate
            self.rounds = (_synthetic_rounds(0.5, 10, lambda r: [0.97, 0.90, 0.85, 0.80][r] if r < 4 else 0.8 - r / 50)
                           if p == 0.5 else _synthetic_rounds(0.2, 10, lambda r: 0.97 if r < 3 else 0.95))
            self.done = []

        def _events(self, states):
            for rec in self.rounds:
                self.done.append(rec)
                yield rec

        def result(self, stopped=None):
            return TicketResult({}, list(self.done), "cpu", stopped)

    monkeypatch.setattr(trial_module, "ticket_search", Scripted)
    path = write_study(stores.root, stores, study={"objectives": ["accuracy_at_density:0.15"], "n_trials": 5,
                                                   "sampler": "grid", "pruner": "median"},
                       search={"prune_rate": [0.5, 0.2], "rewind_iter": [0, 10, 20, 30], "scope": "layerwise",
                               "reinit": "rewind", "rounds": 10})
    cfg = load_study(path)
    storage = open_storage(stores.storage)
    study = optuna.create_study(storage=storage, study_name="tiny", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for k in (0, 10, 20, 30):  # the pruner's startup trials: p = 0.5, scoring 0.80 (k does not matter here)
        study.enqueue_trial({"prune_rate": 0.5, "rewind_iter": k})
    study.enqueue_trial({"prune_rate": 0.2, "rewind_iter": 0})
    from ltstudy.study.callbacks import StudyCallback
    from ltstudy.study.loop import run_trials
    from ltstudy.study.sampling import make_pruner
    from ltstudy.study.trial import TrialContext

    study.pruner = make_pruner(cfg)[0]
    tracker = Tracker(stores.tracking_uri)
    exp = tracker.experiment_id("tiny")
    ctx = TrialContext(cfg, StudyLog(tracker), exp, tracker.start_run(exp, "tiny"), StudyCallback())
    run_trials(study, storage, ctx, budget=5, target=5)
    low_p = study.trials[-1]
    assert low_p.params["prune_rate"] == 0.2
    assert low_p.state == TrialState.COMPLETE and low_p.value == pytest.approx(0.95)
    assert [t.value for t in study.trials[:4]] == [pytest.approx(0.80)] * 4


def test_constraints_follow_the_documented_formulas(constrained: Stores):
    client = constrained.client()
    for t in constrained.study().trials:
        rounds = t.user_attrs["rounds"]
        constraints = {k: v for k, v in t.system_attrs.items() if k.startswith("constraints:")}
        drop = rounds[0]["val_accuracy"] - rounds[-1]["val_accuracy"] - 0.5
        dense = 0.5 - rounds[0]["val_accuracy"]
        assert constraints == {"constraints:accuracy_drop": pytest.approx(drop),
                               "constraints:dense_accuracy": pytest.approx(dense)}
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert metrics["constraint.accuracy_drop"] == pytest.approx(drop)
        feasible = drop <= 0 and dense <= 0
        assert client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["feasible"] == str(feasible)


def test_a_single_objective_studys_best_trial_respects_the_constraints(constrained: Stores):
    study = constrained.study()
    feasible = [t for t in study.trials if all(v <= 0 for v in t.constraints.values())]
    assert feasible  # digits trains far above 0.5 in 60 iterations, and loses less than 0.5 by round 2
    assert [t.number for t in pareto_trials(study)] == [max(feasible, key=lambda t: t.value).number]


def test_a_single_objective_study_with_no_feasible_trial_has_no_best_trial():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=1.0, system_attrs={"constraints:dense_accuracy": 0.2}))
    assert pareto_trials(study) == []


# --------------------------------------------------------------------------- grid


def test_a_grid_study_runs_every_grid_point_once(stores: Stores):
    path = write_study(stores.root, stores, study={"sampler": "grid", "n_trials": 3},
                       search={"prune_rate": {"low": 0.2, "high": 0.4, "step": 0.1}, "rewind_iter": 0,
                               "scope": "global", "reinit": "rewind"})
    assert run(path) == 0
    trials = stores.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params["prune_rate"] for t in trials) == [0.2, 0.3, 0.4]


# --------------------------------------------------------------------------- replicates


def test_replicates_average_the_objectives_over_seeds(stores: Stores):
    path = write_study(stores.root, stores, study={"n_trials": 1, "replicates": 2})
    assert run(path) == 0
    (trial,) = stores.study().trials
    assert trial.state == TrialState.COMPLETE
    client = stores.client()
    _, (child,) = parent_and_children(client, "tiny")
    run_id = child.info.run_id
    assert json.loads(child.data.params["seeds"]) == [0, 1]
    assert child.data.params["replicates"] == "2"
    per_seed = {}
    for seed in (0, 1):
        assert metric_steps(client, run_id, f"seed_{seed}/val_accuracy") == STEPS
        per_seed[seed] = [{"round": m.step, "val_accuracy": m.value, "iterations": 0,
                           "density": d.value}
                          for m, d in zip(sorted(client.get_metric_history(run_id, f"seed_{seed}/val_accuracy"),
                                                 key=lambda m: m.step),
                                          sorted(client.get_metric_history(run_id, f"seed_{seed}/density"),
                                                 key=lambda m: m.step))]
    assert metric_steps(client, run_id, "val_accuracy") == STEPS
    mean = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}
    for r in STEPS:
        assert mean[r] == pytest.approx((per_seed[0][r]["val_accuracy"] + per_seed[1][r]["val_accuracy"]) / 2)
    expected = sum(1 - ticket_round(per_seed[s], 0.01)["density"] for s in (0, 1)) / 2
    assert trial.values[0] == pytest.approx(expected)
    assert child.data.metrics["objective.ticket_sparsity"] == pytest.approx(expected)


# --------------------------------------------------------------------------- tracking pieces


def test_sweep_orphans_closes_runs_as_optuna_recorded_their_trial(stores: Stores):
    tracker = Tracker(stores.tracking_uri)
    study = optuna.create_study(storage=open_storage(stores.storage), study_name="tiny", direction="maximize")
    exp = tracker.experiment_id("tiny")
    parent = tracker.start_run(exp, "tiny")
    study.ask()  # trial 0: still running (a live worker's)
    finished_trial = study.ask()
    study.tell(finished_trial, 1.0)  # trial 1: complete, but its worker died before closing the run
    stopped = study.ask()  # trial 2: told FAIL with its reason, but the worker's MLflow write failed
    stopped.set_user_attr("fail_reason", "interrupted")
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    runs = {n: tracker.start_run(exp, f"trial-{n}", tags={"optuna.trial": n}, parent_run_id=parent)
            for n in (0, 1, 2, 9)}  # 9: no such trial
    study.set_user_attr(EXPERIMENT_ATTR, exp)
    study.set_user_attr(PARENT_ATTR, parent)
    assert StudyLog(tracker).sweep_orphans(study) == 3
    client = stores.client()
    assert client.get_run(runs[0]).info.status == "RUNNING"
    finished = client.get_run(runs[1])  # Optuna is the record of truth: the trial finished
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["reason"] == "closed as Optuna recorded it (MLflow missed the end)"
    assert client.get_run(runs[2]).info.status == "FAILED"
    assert client.get_run(runs[2]).data.tags["reason"] == "interrupted"  # (as Optuna recorded it)
    unknown = client.get_run(runs[9])
    assert unknown.info.status == "FAILED"
    assert unknown.data.tags["reason"] == "worker stopped before the trial finished"
    assert client.get_run(parent).info.status == "RUNNING"  # only child runs are swept


def test_a_sweep_spares_a_run_another_worker_opens_between_its_two_listings(stores: Stores, monkeypatch):
    """(Three workers on PostgreSQL: a worker's start-up sweep listed Optuna's trials, another worker then started
    a trial and opened its run, and the sweep, listing RUNNING runs next, closed that live run as FAIL.)"""
    tracker = Tracker(stores.tracking_uri)
    study = optuna.create_study(storage=open_storage(stores.storage), study_name="tiny", direction="maximize")
    exp = tracker.experiment_id("tiny")
    parent = tracker.start_run(exp, "tiny")
    study.set_user_attr(EXPERIMENT_ATTR, exp)
    study.set_user_attr(PARENT_ATTR, parent)
    live = study.ask()  # a worker's trial, running with its run
    live_run = tracker.start_run(exp, "trial-0", tags={"optuna.trial": live.number}, parent_run_id=parent)
    opened: list[str] = []

    def another_worker_starts_a_trial() -> None:
        if not opened:
            opened.append("")
            trial = study.ask()
            opened[0] = tracker.start_run(exp, f"trial-{trial.number}", tags={"optuna.trial": trial.number},
                                          parent_run_id=parent)

    def then_another_worker(real):  # whichever listing the sweep makes first, the new trial comes right after it
        def listing(*args, **kwargs):
            result = real(*args, **kwargs)
            another_worker_starts_a_trial()
            return result
        return listing

    monkeypatch.setattr(study, "get_trials", then_another_worker(study.get_trials))
    monkeypatch.setattr(tracker, "child_runs", then_another_worker(tracker.child_runs))
    assert StudyLog(tracker).sweep_orphans(study) == 0
    client = stores.client()
    assert opened and client.get_run(opened[0]).info.status == "RUNNING"
    assert client.get_run(live_run).info.status == "RUNNING"


def test_a_reopened_run_forgets_why_it_ended_last_time(stores: Stores):
    """(A resumed study's run kept `reason=interrupted` after it completed.)"""
    tracker = Tracker(stores.tracking_uri)
    run_id = tracker.start_run(tracker.experiment_id("tiny"), "tiny")
    tracker.end_run(run_id, "KILLED", reason="interrupted")
    assert tracker.reopen_run(run_id)
    tracker.end_run(run_id)
    run = stores.client().get_run(run_id)
    assert run.info.status == "FINISHED" and "reason" not in run.data.tags
    assert not tracker.reopen_run("0" * 32)  # (a run that is not there: the caller starts a new one)


class _Server:
    """A tracking server as StudyLog sees it: up or down, and whether its writes go through."""

    uri = "http://127.0.0.1:5999"

    def __init__(self):
        self.up, self.writes, self.runs = True, True, 0

    def server_answers(self) -> bool:
        return self.up

    def start_run(self, *args, **kwargs) -> str:
        if not self.writes:
            raise ConnectionError("Connection refused")
        self.runs += 1
        return f"run-{self.runs}"

    def log_metrics(self, *args, **kwargs) -> None:
        if not self.writes:
            raise ConnectionError("Connection refused")


def test_logging_goes_offline_when_the_server_fails_and_comes_back_with_the_next_trial_it_answers_for(
        monkeypatch):
    """(Logging used to stay off for the rest of the study once the server had failed.)"""
    from types import SimpleNamespace

    from ltstudy.study import mlflow_logging

    server, lines, clock = _Server(), [], [1000.0]
    monkeypatch.setattr(mlflow_logging.time, "monotonic", lambda: clock[0])
    log = StudyLog(server, notes=OnNote(lines.append))
    trial = SimpleNamespace(number=0, study=SimpleNamespace(study_name="tiny"), set_user_attr=lambda k, v: None)

    def start() -> str | None:
        return log.start_trial("1", "parent", trial, "ticket", "hash", {})

    assert start() == "run-1"
    server.up = server.writes = False
    log.round("run-1", {"round": 1, "val_accuracy": 0.9})  # the server died mid-trial
    assert len(lines) == 1 and lines[0].startswith("ltstudy: warning: MLflow at http://127.0.0.1:5999 failed")
    assert start() is None and log.offline  # still down: no run, nothing tried
    server.up = server.writes = True
    log.round("run-1", {"round": 2, "val_accuracy": 0.9})  # (a trial begun before: not where it reconnects)
    assert log.offline and len(lines) == 1
    assert start() == "run-2" and log.offline is None  # the next trial: back
    assert lines[1] == ("ltstudy: MLflow at http://127.0.0.1:5999 answers again: logging goes on; `ltstudy repair "
                        "STUDY.toml` logs what it missed meanwhile")
    server.writes = False  # a server that answers but keeps failing: asked again after 30 s, then 60 s
    log.round("run-2", {"round": 1, "val_accuracy": 0.9})
    server.writes = True
    assert start() is None and len(lines) == 3
    clock[0] += 31
    assert start() == "run-3" and len(lines) == 4


def run_contents(client, run, ignore: tuple[str, ...] = ("rebuilt_from_optuna",)) -> dict:
    """What a run holds, ids and clocks aside: state, tags, params, every metric's history, dataset, files."""
    import tempfile

    run_id = run.info.run_id
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for a in client.list_artifacts(run_id):
            local = Path(client.download_artifacts(run_id, a.path, tmp))
            files[a.path] = (json.loads(local.read_text()) if a.path.endswith(".json") else
                             local.read_text() if a.path.endswith(".csv") else local.read_bytes()[:8])
    return {"status": run.info.status, "params": run.data.params,
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k not in ignore},
            "metrics": {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
                        for key in run.data.metrics},
            "inputs": sorted((i.dataset.name, i.dataset.digest, i.dataset.profile)
                             for i in client.get_run(run_id).inputs.dataset_inputs),
            "files": files}


def test_repair_rebuilds_everything_a_study_s_runs_hold_from_optuna_alone(stores: Stores, tmp_path_factory,
                                                                          capsys):
    """(`repair` used to rebuild runs, parameters, rounds and states, but not each trial's files, its `feasible`
    and `pareto` tags, nor the study run's counts and files.) Into an empty store, it makes what the run made."""
    import shutil

    from ltstudy import cli

    path = write_study(stores.root, stores, study={"n_trials": 2, "replicates": 2, "controls": ["random-reinit"],
                                                   "max_accuracy_drop": 0.5})
    assert run(path) == 0
    again = Stores(stores.root / "rebuilt")
    seed_mlflow_db(tmp_path_factory, again.db)
    shutil.copyfile(stores.journal, again.journal)
    capsys.readouterr()
    assert cli.main(["repair", str(path), "--storage", again.storage, "--tracking-uri", again.tracking_uri]) == 0
    assert ("rebuilt from Optuna: 3 MLflow runs created, 26 rounds logged, the files of 2 trials, the study's "
            "summary") in capsys.readouterr().out
    (live_parent,), live = parent_and_children(stores.client(), "tiny")
    (parent,), rebuilt = parent_and_children(again.client(), "tiny")
    number = lambda r: r.data.tags["optuna.trial"]  # noqa: E731
    assert sorted(map(number, rebuilt)) == sorted(map(number, live)) == ["0", "1"]
    for made, lost in zip(sorted(rebuilt, key=number), sorted(live, key=number), strict=True):
        assert run_contents(again.client(), made) == run_contents(stores.client(), lost)
    contents = run_contents(again.client(), made)
    assert {"rounds.csv", "rounds.json", "accuracy_vs_density.png"} <= set(contents["files"])
    assert {"feasible", "pareto", "state"} <= set(contents["tags"])
    assert contents["metrics"]["seed_1/control/random-reinit/val_accuracy"]  # (every seed's control too)
    assert run_contents(again.client(), parent, ("reason",)) == run_contents(stores.client(), live_parent)
    assert {"summary.json", "round_frontier.json", "pareto.png"} <= set(run_contents(again.client(), parent)["files"])
    assert parent.data.tags["reason"] == "closed by ltstudy repair"
    assert cli.main(["repair", str(path), "--storage", again.storage, "--tracking-uri", again.tracking_uri]) == 0
    assert "rebuilt" not in capsys.readouterr().out  # nothing is logged twice


def test_tracker_logs_more_params_than_one_mlflow_batch_holds(stores: Stores):
    tracker = Tracker(stores.tracking_uri)
    run_id = tracker.start_run(tracker.experiment_id("many"), "many")
    params = {f"p{i:03d}": i for i in range(250)} | {"a_list": [1, 2], "a_dict": {"x": 1}}
    tracker.log_params(run_id, params)
    logged = stores.client().get_run(run_id).data.params
    assert len(logged) == 252
    assert logged["p249"] == "249"
    assert json.loads(logged["a_list"]) == [1, 2] and json.loads(logged["a_dict"]) == {"x": 1}


def test_a_dataset_two_workers_insert_at_once_is_linked_to_both_runs(stores: Stores, monkeypatch):
    """MLflow looks a dataset up, then inserts it: the worker that loses that race gets the unique key's error."""
    from mlflow.exceptions import MlflowException

    tracker = Tracker(stores.tracking_uri)
    exp = tracker.experiment_id("race")
    winner, loser = tracker.start_run(exp, "winner"), tracker.start_run(exp, "loser")
    real = tracker.client.log_inputs
    calls = []

    def racing(run_id, datasets=None, **kw):
        calls.append(run_id)
        if len(calls) == 1:  # the other worker inserts the dataset between our look-up and our insert
            real(winner, datasets=datasets, **kw)
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(run_id, datasets=datasets, **kw)

    monkeypatch.setattr(tracker.client, "log_inputs", racing)
    tracker.log_dataset(loser, "digits", "a" * 40, "digits", {"train": 1})
    client = stores.client()
    for run_id in (winner, loser):
        (inp,) = client.get_run(run_id).inputs.dataset_inputs
        assert inp.dataset.name == "digits"
    assert calls == [loser, loser]

    def broken(run_id, datasets=None, **kw):
        raise MlflowException("INVALID_PARAMETER_VALUE: something else")

    monkeypatch.setattr(tracker.client, "log_inputs", broken)
    with pytest.raises(MlflowException, match="something else"):  # (any other error is not retried)
        tracker.log_dataset(loser, "digits", "b" * 40, "digits", {"train": 1})


def test_flatten_and_rounds_csv():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": {}, "f": [1]}) == {"a.b": 1, "a.c.d": 2, "e": {}, "f": [1]}
    csv = rounds_csv([{"round": 0, "density": 1.0, "layer_density": {"fc1": 1.0}},
                      {"round": 1, "density": 0.8, "layer_density": {"fc1": 0.8}}])
    assert csv == "round,density,layer_density/fc1\n0,1.0,1.0\n1,0.8,0.8\n"  # a column per layer
    assert rounds_csv([]) == ""


# --------------------------------------------------------------------------- worker processes


def test_jobs_2_runs_every_trial_once_in_worker_processes(stores: Stores):
    path = write_study(stores.root, stores, study={"n_trials": 4},
                       search={"prune_rate": {"low": 0.2, "high": 0.5}})
    assert run(path, "--jobs", "2") == 0
    study = stores.study()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    parents, children = parent_and_children(stores.client(), "tiny")
    assert len(parents) == 1
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags[PARENT_TAG] for c in children} == {parents[0].info.run_id}
    assert_nothing_running(stores)
    # The workers sample independently: no two trials got the same draw.
    rates = [t.params["prune_rate"] for t in study.trials]
    assert len(set(rates)) == 4, rates


def test_jobs_2_with_a_sqlite_storage_is_refused_before_anything_is_created(tmp_path: Path, monkeypatch, capsys):
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    path = write_study(tmp_path, stores, study={"storage": f"sqlite:///{tmp_path}/optuna.db"})
    assert run(path, "--jobs", "2") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not safe for --jobs 2" in err
    assert not (tmp_path / "optuna.db").exists()
    assert stores.created() == []


def test_values_are_finite_numbers(finished: Finished):
    for t in finished.study.trials:
        assert all(math.isfinite(v) for v in t.values)


def test_save_tickets_logs_every_round_to_the_trials_run_and_no_cache_keeps_no_checkpoint(stores: Stores):
    path = write_study(stores.root, stores, study={"n_trials": 1, "save_tickets": True,
                                                   "cache_dir": str(stores.root / "cache")},
                       search={"prune_rate": {"low": 0.2, "high": 0.5}})
    assert run(path, "--no-cache") == 0
    (trial,) = stores.study().trials
    client = stores.client()
    run_id = trial.user_attrs["mlflow_run_id"]
    rounds = {a.path for a in client.list_artifacts(run_id, "tickets/seed_0")}
    assert rounds == {f"tickets/seed_0/round_{r:02d}" for r in STEPS}
    files = {Path(a.path).name for a in client.list_artifacts(run_id, "tickets/seed_0/round_01")}
    assert {"mask.safetensors", "init.safetensors", "trained.safetensors", "ticket.json"} <= files
    assert not (stores.root / "cache").exists()  # --no-cache: every round trained, nothing kept
    assert all(not r["reused"] for r in trial.user_attrs["rounds"])


def _child_connection(uri: str, results) -> None:
    """In a forked child: whether the inherited pool is empty, then a query on the child's own connection."""
    tracker = Tracker(uri)  # (MLflow's cached store: the parent's, with its engine)
    engine = tracker.client._tracking_client.store.engine
    inherited = engine.pool.checkedin()
    results.put((inherited, [e.experiment_id for e in tracker.client.search_experiments()]))


def test_a_forked_worker_opens_its_own_tracking_connection(stores: Stores):
    """Two processes on one SQLite connection can corrupt the store: a `--jobs` worker (forked) gets its own."""
    import multiprocessing

    tracker = Tracker(stores.tracking_uri)
    exp = tracker.experiment_id("fork")
    engine = tracker.client._tracking_client.store.engine
    assert engine.pool.checkedin() == 1  # (the parent's connection, pooled: what a fork would inherit)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_child_connection, args=(stores.tracking_uri, results))
    child.start()
    inherited, experiments = results.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and inherited == 0 and exp in experiments
