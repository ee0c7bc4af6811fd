"""The objective vocabulary: what each objective reads from a trial's rounds."""

from __future__ import annotations

import pytest

from ltstudy.engine.errors import ConfigError
from ltstudy.study.curves import accuracy_at_density, mean_rounds, ticket_round
from ltstudy.study.objectives import parse_objective


def rnd(i: int, density: float, val: float, iterations: int = 100, **extra) -> dict:
    return {"round": i, "density": density, "val_accuracy": val, "iterations": iterations, **extra}


# dense 0.90; within ε = 0.01: rounds 0, 1 (0.95), 3 (0.893); round 2 (0.85) misses; round 4 (0.70) misses.
ROUNDS = [rnd(0, 1.0, 0.90, 100), rnd(1, 0.8, 0.95, 80), rnd(2, 0.64, 0.85, 80), rnd(3, 0.512, 0.893, 80),
          rnd(4, 0.41, 0.70, 80)]


def value(name: str, rounds=ROUNDS, epsilon: float = 0.01) -> float:
    return parse_objective(name).value(rounds, epsilon)


def test_ticket_sparsity_is_the_sparsest_round_within_epsilon_of_dense_even_after_a_miss():
    assert value("ticket_sparsity") == pytest.approx(1 - 0.512)


def test_ticket_sparsity_is_zero_when_no_pruned_round_matches_dense():
    rounds = [rnd(0, 1.0, 0.9), rnd(1, 0.8, 0.8), rnd(2, 0.64, 0.7)]
    assert value("ticket_sparsity", rounds) == 0.0


def test_epsilon_widens_what_counts_as_a_winning_ticket():
    assert value("ticket_sparsity", epsilon=0.0) == pytest.approx(1 - 0.8)
    assert value("ticket_sparsity", epsilon=0.25) == pytest.approx(1 - 0.41)


def test_a_round_exactly_epsilon_below_dense_still_matches():
    rounds = [rnd(0, 1.0, 0.9), rnd(1, 0.5, 0.9 - 0.05)]
    assert value("ticket_sparsity", rounds, epsilon=0.05) == pytest.approx(0.5)


def test_every_objective_and_the_curves_read_one_definition_of_a_round_that_matches_dense(monkeypatch):
    """A round exactly ε below dense (0.9 - 0.3 rounds below 0.6 in floats) matches: `curves.matches` says so for the
    ticket round, the ticket's sparsity and accuracy, the pruners' values at a grid density and the instability
    objective alike; with its float tolerance taken away, all of them stop counting that round together."""
    from ltstudy.study import curves

    rounds = [rnd(0, 1.0, 0.9, val_instability=0.5), rnd(1, 0.5, 0.6, val_instability=0.01),
              rnd(2, 0.25, 0.1, val_instability=0.3)]
    assert 0.6 < 0.9 - 0.3  # (the case the tolerance is for)

    def readings():
        at_grid = parse_objective("ticket_sparsity").at_grid_density(rounds, 0.5, 0.6, 0.3)
        return (curves.ticket_round(rounds, 0.3)["round"], value("ticket_sparsity", rounds, 0.3),
                value("ticket_accuracy", rounds, 0.3), at_grid, value("instability", rounds, 0.3),
                curves.Curve(0, 0, {}, rounds).ticket_sparsity(0.3))

    assert readings() == (1, 0.5, 0.6, 0.5, 0.01, 0.5)
    monkeypatch.setattr(curves, "_MATCH_TOL", 0.0)
    assert readings() == (0, 0.0, 0.9, 0.0, 0.01, 0.0)  # (instability: no pruned round matches, the first one's)


def test_ticket_accuracy_is_the_validation_accuracy_of_that_ticket():
    assert value("ticket_accuracy") == pytest.approx(0.893)
    assert ticket_round(ROUNDS, 0.01)["round"] == 3


def test_accuracy_at_density_reads_the_first_round_at_or_below_the_density():
    assert value("accuracy_at_density:0.64") == pytest.approx(0.85)  # exactly at 0.64
    assert value("accuracy_at_density:0.6") == pytest.approx(0.893)
    assert value("accuracy_at_density:1") == pytest.approx(0.90)


def test_accuracy_at_density_is_zero_when_the_search_never_got_that_sparse():
    assert value("accuracy_at_density:0.1") == 0.0
    assert accuracy_at_density(ROUNDS, 0.1, missing=None) is None


def test_train_iterations_sums_the_iterations_of_every_round():
    assert value("train_iterations") == 100 + 4 * 80


def test_directions_and_mlflow_metric_keys():
    assert [parse_objective(n).direction for n in
            ("ticket_sparsity", "ticket_accuracy", "accuracy_at_density:0.1", "train_iterations")] == \
        ["maximize", "maximize", "maximize", "minimize"]
    obj = parse_objective("accuracy_at_density:0.1")
    assert obj.density == 0.1
    assert ":" not in obj.metric_key


def test_an_objective_of_no_rounds_is_an_error_not_a_number():
    with pytest.raises(ValueError):
        parse_objective("ticket_sparsity").value([], 0.01)


def test_mean_rounds_averages_numbers_round_by_round_over_seeds():
    a = [rnd(0, 1.0, 0.90, 100, scope="global"), rnd(1, 0.8, 0.80, 80, scope="global")]
    b = [rnd(0, 1.0, 0.70, 100, scope="global"), rnd(1, 0.8, 0.60, 60, scope="global")]
    mean = mean_rounds([a, b])
    assert [r["round"] for r in mean] == [0, 1]
    assert [r["val_accuracy"] for r in mean] == pytest.approx([0.80, 0.70])
    assert [r["iterations"] for r in mean] == pytest.approx([100, 70])
    assert mean[1]["scope"] == "global"  # text is kept as is


def test_mean_rounds_stops_at_the_rounds_every_seed_finished():
    a = [rnd(0, 1.0, 0.9), rnd(1, 0.8, 0.8), rnd(2, 0.64, 0.7)]
    b = [rnd(0, 1.0, 0.7)]
    assert [r["round"] for r in mean_rounds([a, b])] == [0]


@pytest.mark.parametrize(("name", "needle"), [
    ("ticket_sparsty", "did you mean 'ticket_sparsity'"),
    ("accuracy_at_density", "needs a density in (0, 1]"),
    ("accuracy_at_density:", "needs a density in (0, 1]"),
    ("accuracy_at_density:abc", "needs a density in (0, 1]"),
    ("accuracy_at_density:0", "needs a density in (0, 1]"),
    ("accuracy_at_density:1.5", "needs a density in (0, 1]"),
    ("accuracy_at_density:nan", "needs a density in (0, 1]"),
    ("ticket_sparsity:0.1", "takes no ':' argument"),
])
def test_parse_objective_rejects_bad_names_with_a_hint(name, needle):
    with pytest.raises(ConfigError) as err:
        parse_objective(name)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
