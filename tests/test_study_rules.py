"""What a study compares and counts: only comparable trials, each setting once, and n_trials as the total.

Every study trains LeNet-300-100 on the embedded digits for 60 iterations per
round, with its stores in the test's temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from ltstudy.study import trial as trial_module
from ltstudy.study.sampling import setting_key
from tests.study_helpers import Stores, experiment_runs, run_quiet, seeded_stores, write_study


@pytest.fixture
def stores(tmp_path: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> Stores:
    return seeded_stores(monkeypatch, tmp_path, tmp_path_factory)


run = run_quiet


# --------------------------------------------------------------------------- one study, one set of settings


@pytest.mark.parametrize(("section", "change", "named"), [
    ("train", {"lr": 0.002}, "[train] lr 0.0012 -> 0.002"),
    ("search", {"prune_rate": [0.2, 0.35]}, "[search] prune_rate [0.2, 0.5] -> [0.2, 0.35]"),
    ("data", {"val_size": 100}, "[data] val_size -1 -> 100"),
    ("model", {"dropout": 0.1}, "[model] dropout 0.0 -> 0.1"),
    ("prune", {"output_rate": 0.5}, "[prune] output_rate 1.0 -> 0.5"),
])
def test_a_study_is_not_continued_with_other_settings(stores: Stores, capsys, section, change, named):
    assert run(write_study(stores.root, stores, study={"n_trials": 1})) == 0
    trials_before = len(stores.study().trials)
    runs_before = len(experiment_runs(stores.client(), "tiny"))
    capsys.readouterr()
    edited = write_study(stores.root, stores, "edited.toml", study={"n_trials": 2}, **{section: change})
    assert run(edited) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and named in err and "start a new study with --study-name" in err
    assert len(stores.study().trials) == trials_before  # nothing was run
    assert len(experiment_runs(stores.client(), "tiny")) == runs_before  # nor tracked


def test_the_same_settings_under_another_name_start_a_new_study(stores: Stores):
    assert run(write_study(stores.root, stores, study={"n_trials": 1})) == 0
    edited = write_study(stores.root, stores, "edited.toml", study={"n_trials": 1}, train={"lr": 0.002})
    assert run(edited, "--study-name", "tiny-lr") == 0
    assert len(stores.study("tiny-lr").trials) == 1


# --------------------------------------------------------------------------- each setting once


def test_a_space_smaller_than_n_trials_is_evaluated_once_per_setting_and_the_study_stops_there(stores: Stores,
                                                                                                capsys):
    path = write_study(stores.root, stores, study={"sampler": "tpe", "n_trials": 6},
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "scope": "layerwise",
                               "reinit": "rewind"})
    assert run(path) == 0
    assert "every one of the 4 settings of the search space has been evaluated" in capsys.readouterr().out
    trials = stores.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # no stored repeat, no fake failure
    assert len({setting_key(t.params) for t in trials}) == 4


def test_the_sampler_turns_repeats_away_so_every_trial_is_a_new_setting(stores: Stores, monkeypatch):
    """(TPE proposed 44 repeats to find 12 new settings in the quickstart; each was stored as a FAIL trial.)"""
    from ltstudy.study.sampling import NoRepeatSampler

    path = write_study(stores.root, stores, study={"sampler": "tpe", "seed": 3, "n_trials": 8},
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "scope": ["layerwise", "global"],
                               "reinit": "rewind", "rounds": 1})
    proposals = []
    real_draw = NoRepeatSampler._draw

    def draw(self, sampler, study, trial, space):
        params = real_draw(self, sampler, study, trial, space)
        proposals.append(setting_key(params))
        return params

    monkeypatch.setattr(NoRepeatSampler, "_draw", draw)
    searched = []
    real = trial_module.ticket_search
    monkeypatch.setattr(trial_module, "ticket_search",
                        lambda cfg, data=None, cache=None, controls=(): searched.append(cfg) or
                        real(cfg, data, cache, controls))
    assert run(path) == 0
    trials = stores.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8 and len(searched) == 8  # every setting, once
    assert len({setting_key(t.params) for t in trials}) == 8
    assert len(proposals) > len(set(proposals)), "no repeat was proposed: the rule is not exercised"
    children = [r for r in experiment_runs(stores.client(), "tiny") if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 8


def test_no_repeat_sampler_offers_a_repeat_only_once_the_space_is_exhausted():
    import optuna

    from ltstudy.study.sampling import NoRepeatSampler

    space = {"p": optuna.distributions.CategoricalDistribution([0.2, 0.35, 0.5]),
             "k": optuna.distributions.IntDistribution(0, 20, step=10)}
    sampler = NoRepeatSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=2), space, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_categorical("p", [0.2, 0.35, 0.5]) + t.suggest_int("k", 0, 20, step=10),
                   n_trials=9)
    assert len({setting_key(t.params) for t in study.trials}) == 9  # the whole 3 x 3 space, no repeat
    study.optimize(lambda t: t.suggest_categorical("p", [0.2, 0.35, 0.5]) + t.suggest_int("k", 0, 20, step=10),
                   n_trials=1)
    assert len({setting_key(t.params) for t in study.trials}) == 9  # the tenth can only repeat


# --------------------------------------------------------------------------- stopping when rounds stop matching


def test_stop_on_drop_unmatched_ends_each_search_at_its_first_round_that_no_longer_matches(stores: Stores):
    path = write_study(stores.root, stores, study={"n_trials": 1, "stop_on_drop": "unmatched", "epsilon": 0.0},
                       search={"prune_rate": 0.9, "rounds": 3, "scope": "layerwise", "reinit": "rewind",
                               "rewind_iter": 0})
    assert run(path) == 0
    (trial,) = stores.study().trials
    assert trial.state == TrialState.COMPLETE  # its objective is known: the ticket cannot improve past the miss
    rounds = trial.user_attrs["rounds"]
    dense = rounds[0]["val_accuracy"]
    assert rounds[-1]["val_accuracy"] < dense and all(r["val_accuracy"] >= dense for r in rounds[1:-1])
    assert len(rounds) < 4  # it stopped before the last round
    assert "no longer matches dense" in trial.user_attrs["stop_reason_seed_0"]
    assert trial.values[0] == pytest.approx(1 - rounds[-2]["density"])


# --------------------------------------------------------------------------- packed trials


@pytest.mark.parametrize("model", ["lenet-300-100", "conv-2"])
def test_a_packed_study_gives_every_trial_the_numbers_of_an_unpacked_one(tmp_path, tmp_path_factory, monkeypatch,
                                                                        model):
    """[study] pack = 4: four trials train side by side; each trial's rounds, values and MLflow run are its own."""
    results = {}
    # (conv-2 costs 5x LeNet's time per iteration: 4 trials, one full pack, is enough to show it)
    n, iterations = (6, 40) if model == "lenet-300-100" else (4, 30)
    for pack in (1, 4):
        root = tmp_path / f"pack{pack}"
        root.mkdir()
        stores = seeded_stores(monkeypatch, root, tmp_path_factory)
        path = write_study(root, stores, study={"sampler": "grid", "n_trials": n, "pack": pack},
                           model={"name": model}, train={"iterations": iterations, "eval_every": 10},
                           search={"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "reinit": ["rewind", "finetune"],
                                   "scope": "layerwise", "rounds": 2})
        assert run(path) == 0
        study = stores.study()
        how = ("wall_seconds", "reused", "computed_iterations")  # how a round was obtained, not what it measured
        results[pack] = {setting_key(t.params): (t.values, [{k: v for k, v in r.items() if k not in how}
                                                            for r in t.user_attrs["rounds"]])
                         for t in study.trials if t.state == TrialState.COMPLETE}
        children = [r for r in experiment_runs(stores.client(), "tiny") if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == n and {r.info.status for r in children} == {"FINISHED"}
    assert len(results[4]) == n
    for key, (values, rounds) in results[1].items():  # bit for bit
        for a, b in zip(rounds, results[4][key][1], strict=True):
            assert {k: v for k, v in a.items() if a[k] != b[k]} == {}, (key, {k: b[k] for k in a if a[k] != b[k]})
        assert values == results[4][key][0]


def test_two_workers_share_one_grid_and_evaluate_each_setting_once(stores: Stores):
    """Optuna names grid points by their index in a seeded shuffle: workers with other seeds meant other points."""
    path = write_study(stores.root, stores, study={"sampler": "grid", "n_trials": 8},
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "reinit": ["rewind", "finetune"],
                               "scope": "layerwise", "rounds": 1})
    assert run(path, "--jobs", "2") == 0
    trials = stores.study().trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and len({setting_key(t.params) for t in complete}) == 8
