"""The round-level frontier: non-dominated (density, validation accuracy) points over all trials."""

from __future__ import annotations

import warnings

import optuna
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from ltstudy.study.compare_plots import plot_compare
from ltstudy.study.frontier import non_dominated, pareto_trials, round_frontier, round_points, undertrained
from ltstudy.study.plots import plot_pareto
from tests.report_helpers import kind_for

# Few distinct values so that duplicates and ties in either coordinate are common.
DENSITIES = st.sampled_from([1.0, 0.8, 0.64, 0.512, 0.41, 0.2])
ACCURACIES = st.sampled_from([0.5, 0.7, 0.85, 0.9, 0.95])
POINTS = st.lists(st.fixed_dictionaries({"density": DENSITIES, "val_accuracy": ACCURACIES}), max_size=30)


def dominates(a: dict, b: dict) -> bool:
    """a is at least as sparse and as accurate as b, and strictly better in one."""
    return (a["density"] <= b["density"] and a["val_accuracy"] >= b["val_accuracy"]
            and (a["density"] < b["density"] or a["val_accuracy"] > b["val_accuracy"]))


@settings(max_examples=300)
@given(POINTS)
def test_no_frontier_point_is_dominated_by_any_input_point(points):
    for p in non_dominated(points):
        assert not any(dominates(q, p) for q in points)


@settings(max_examples=300)
@given(POINTS)
def test_every_omitted_point_is_dominated_by_some_input_point(points):
    kept = {id(p) for p in non_dominated(points)}
    for p in points:
        if id(p) not in kept:
            assert any(dominates(q, p) for q in points), p


@given(POINTS)
def test_the_frontier_is_a_selection_of_the_input_sorted_by_density(points):
    front = non_dominated(points)
    assert all(any(p is q for q in points) for p in front)
    assert len({id(p) for p in front}) == len(front)
    assert [p["density"] for p in front] == sorted(p["density"] for p in front)


def test_duplicate_points_are_kept_together():
    a, b = {"density": 0.5, "val_accuracy": 0.9}, {"density": 0.5, "val_accuracy": 0.9}
    assert non_dominated([a, b, {"density": 0.5, "val_accuracy": 0.8}]) == [a, b]


def test_other_coordinates_can_be_named():
    pts = [{"x": 1, "y": 1}, {"x": 2, "y": 0}, {"x": 0, "y": 0}]
    assert non_dominated(pts, x="x", y="y") == [{"x": 0, "y": 0}, {"x": 1, "y": 1}]


# --------------------------------------------------------------------------- from trials


def fake_trial(number: int, rounds: list[tuple[float, float]], state=TrialState.COMPLETE, seeds=(0,), **settings):
    params_all = {"prune_rate": 0.2, "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind", **settings}
    trial = optuna.trial.create_trial(
        state=state, values=[0.0, 1.0] if state == TrialState.COMPLETE else None,
        params={"prune_rate": params_all["prune_rate"]},
        distributions={"prune_rate": CategoricalDistribution([0.2, 0.5])},
        user_attrs={"params_all": params_all, "seeds": list(seeds), "kind": kind_for(params_all),
                    "rounds": [{"round": i, "density": d, "val_accuracy": a, "test_accuracy": a - 0.01,
                                "test_accuracy_at_early_stop": a - 0.02, "iterations": 60}
                               for i, (d, a) in enumerate(rounds)]})
    trial.number = number  # create_trial leaves it for the storage to assign
    return trial


def test_round_frontier_labels_every_point_with_its_trial_round_and_settings():
    trials = [
        fake_trial(0, [(1.0, 0.90), (0.8, 0.91), (0.64, 0.80)], prune_rate=0.2, rewind_iter=20, scope="global",
                   reinit="random"),
        fake_trial(1, [(1.0, 0.92), (0.5, 0.90), (0.25, 0.85)], prune_rate=0.5),
    ]
    front = round_frontier(trials)
    by_place = {(p["trial"], p["round"]): p for p in front}
    # (1.0, 0.92) dominates (1.0, 0.90); (0.8, 0.91) survives; (0.64, 0.80) is beaten by (0.5, 0.90).
    assert set(by_place) == {(1, 0), (0, 1), (1, 1), (1, 2)}
    assert by_place[(0, 1)] == {"trial": 0, "round": 1, "density": 0.8, "val_accuracy": 0.91, "val_loss": None,
                                "test_accuracy": 0.91 - 0.01, "test_accuracy_at_early_stop": 0.91 - 0.02,
                                "prune_rate": 0.2, "rewind_iter": 20, "scope": "global", "reinit": "random",
                                "kind": "control: random re-init"}
    assert by_place[(1, 2)]["prune_rate"] == 0.5
    assert by_place[(1, 2)]["scope"] == "layerwise"
    assert by_place[(1, 2)]["reinit"] == "rewind"


def test_pruned_trials_count_and_failed_ones_do_not():
    trials = [fake_trial(0, [(1.0, 0.9)]),
              fake_trial(1, [(1.0, 0.9), (0.5, 0.95)], state=TrialState.PRUNED),
              fake_trial(2, [(1.0, 0.99), (0.1, 0.99)], state=TrialState.FAIL)]
    assert {p["trial"] for p in round_points(trials)} == {0, 1}
    assert [(p["trial"], p["round"]) for p in round_frontier(trials)] == [(1, 1)]


def test_failed_and_diverged_trials_are_not_on_the_frontier():
    trials = [fake_trial(0, [(1.0, 0.9), (0.5, 0.85)]),
              fake_trial(1, [(1.0, 0.9), (0.5, 0.99)], state=TrialState.FAIL),
              fake_trial(2, [(1.0, 0.95), (0.2, 0.99)])]
    trials[2].user_attrs["diverged"] = True
    assert {p["trial"] for p in round_points(trials)} == {0}


def test_plots_of_a_study_with_nothing_finished_are_written_without_warnings(tmp_path):
    failed = [fake_trial(0, [(1.0, 0.9)], state=TrialState.FAIL)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_pareto(failed, [], tmp_path / "pareto.png")
        plot_compare(failed, ["prune_rate"], tmp_path / "compare.png")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- the trial-level front


def add(study: optuna.Study, dense: float, sparsity: float, iterations: float = 120.0, diverged: bool = False,
        **constraints: float) -> int:
    """A complete trial of a (ticket_sparsity max, train_iterations min) study whose dense network reached `dense`;
    its number."""
    rate = len(study.trials) / 1000  # (a setting of its own)
    study.add_trial(optuna.trial.create_trial(
        values=[sparsity, iterations], params={"prune_rate": rate},
        distributions={"prune_rate": optuna.distributions.FloatDistribution(0.0, 1.0)},
        user_attrs={"rounds": [{"round": 0, "density": 1.0, "val_accuracy": dense}], "diverged": diverged},
        system_attrs={f"constraints:{k}": v for k, v in constraints.items()}))
    return study.trials[-1].number


def two_objectives() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"])


def test_a_trial_whose_dense_network_is_far_below_the_studys_best_is_off_the_front():
    """lr = 0.2: the dense network reached 60.6% (96.1% at the default rate), and its 28%-density tickets "matched"
    it and dominated every real result."""
    study = two_objectives()
    good = add(study, dense=0.961, sparsity=0.5)
    poor = add(study, dense=0.606, sparsity=0.72)  # sparser at the same cost: it dominates the good trial
    assert {t.number for t in study.best_trials} == {poor}  # what Optuna alone answers
    assert [t.number for t in pareto_trials(study)] == [good]  # the front without it: the good trial stands
    assert undertrained(study.trials) == {poor: (0.606, 0.961)}


def test_max_dense_gap_says_how_far_below_is_too_far():
    study = two_objectives()
    add(study, dense=0.961, sparsity=0.5)
    close = add(study, dense=0.93, sparsity=0.6)  # 3.1 points below: within the default 0.05
    assert [t.number for t in pareto_trials(study)] == [close]
    assert [t.number for t in pareto_trials(study, max_dense_gap=0.02)] == [0]
    assert [t.number for t in pareto_trials(study, max_dense_gap=1.0)] == [close]


def test_the_flag_is_judged_against_every_trial_so_far_and_never_written_into_a_trial():
    """A later trial with a better dense network flags an earlier one; Optuna's record of each trial is untouched."""
    study = two_objectives()
    first = add(study, dense=0.80, sparsity=0.7)
    assert [t.number for t in pareto_trials(study)] == [first]
    before = [(t.values, t.constraints, t.user_attrs, t.system_attrs) for t in study.trials]
    later = add(study, dense=0.96, sparsity=0.4)
    assert [t.number for t in pareto_trials(study)] == [later]
    assert [(t.values, t.constraints, t.user_attrs, t.system_attrs) for t in study.trials[:1]] == before


def test_the_best_dense_network_counts_from_pruned_and_infeasible_trials_but_not_diverged_ones():
    study = two_objectives()
    ok = add(study, dense=0.90, sparsity=0.5)
    add(study, dense=0.97, sparsity=0.1, dense_accuracy=0.01)  # infeasible, yet its dense network trained
    assert ok in undertrained(study.trials)
    other = two_objectives()
    kept = add(other, dense=0.90, sparsity=0.5)
    add(other, dense=0.99, sparsity=0.9, diverged=True)  # (its rounds are not a result)
    assert undertrained(other.trials) == {} and [t.number for t in pareto_trials(other)] == [kept]


VALUES = st.tuples(st.sampled_from([0.0, 0.2, 0.5, 0.7]), st.sampled_from([60.0, 120.0, 240.0]),
                   st.sampled_from([-0.1, 0.0, 0.3]))


@settings(max_examples=200, deadline=None)
@given(st.lists(VALUES, max_size=12), st.booleans())
def test_without_an_undertrained_trial_the_front_is_optunas_best_trials(rows, constrained):
    study = two_objectives()
    for sparsity, iterations, constraint in rows:
        add(study, dense=0.95, sparsity=sparsity, iterations=iterations,
            **({"dense_accuracy": constraint} if constrained else {}))
    assert sorted(t.number for t in pareto_trials(study)) == sorted(t.number for t in study.best_trials)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.2, 0.5]), min_size=1, max_size=8))
def test_a_single_objective_front_is_optunas_best_trial(values):
    study = optuna.create_study(direction="maximize")
    for v in values:
        study.add_trial(optuna.trial.create_trial(
            value=v, params={"prune_rate": len(study.trials) / 100},
            distributions={"prune_rate": optuna.distributions.FloatDistribution(0.0, 1.0)},
            user_attrs={"rounds": [{"round": 0, "density": 1.0, "val_accuracy": 0.9}]}))
    assert [t.number for t in pareto_trials(study)] == [study.best_trial.number]

