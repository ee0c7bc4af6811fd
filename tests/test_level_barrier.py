"""The level barrier (Paul et al., ICLR 2023): the error along the linear path between successive IMP rounds'
trained weights, as a search measures it, and where a study shows it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from ltstudy import cli
from ltstudy.engine.cache import RoundCache
from ltstudy.engine.callbacks import Callback
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.level_barrier import level_path
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.stability import StabilityAnalysis
from ltstudy.study.objectives import parse_objective

# Validation at the end of each round only, so a round's recorded validation accuracy is its trained weights'.
LEVELS = {"train.iterations": 60, "train.eval_every": 60, "prune.rounds": 2, "prune.prune_rate": 0.6,
          "stability.level_points": 5}


class Ends(Callback):
    """Each round's record, and its trained weights and masks, copied (the search's model trains on)."""

    def __init__(self):
        self.records, self.ends = [], []

    def on_state(self, state):
        self.ends.append(({n: t.detach().clone() for n, t in state.trained.items()},
                          {n: m.clone() for n, m in state.masks.items()}))

    def on_round_end(self, record):
        self.records.append(record)


def searched(tiny_cfg, digits, settings=LEVELS, cache=None) -> Ends:
    seen = Ends()
    ticket_search(tiny_cfg(settings), digits, cache=cache).run(seen)
    return seen


def test_the_level_barrier_between_a_round_and_itself_is_zero(tiny_cfg, digits, make_search):
    seen = searched(tiny_cfg, digits)
    search = make_search(tiny_cfg(LEVELS))
    path = level_path(search.scratch(), seen.ends[2], seen.ends[2], 2, digits, seed=0, points=4)
    assert len(set(path.val_errors)) == 1 and len(set(path.test_errors)) == 1
    assert path.val_barrier == 0.0 and path.test_barrier == 0.0
    assert path.val_errors[0] == pytest.approx(1.0 - seen.records[2].val_accuracy, abs=1e-12)


def test_the_paths_ends_are_the_rounds_own_recorded_errors_and_the_search_walks_round_r_minus_1_to_r(
        tiny_cfg, digits, make_search):
    seen = searched(tiny_cfg, digits)
    records = seen.records
    assert [r.early_stop_iteration for r in records] == [60, 60, 60]  # (validation read the trained weights)
    assert "level_barrier" not in records[0].metrics  # (round 0 has no level before it)
    scratch = make_search(tiny_cfg(LEVELS)).scratch()
    for r in (1, 2):
        path = level_path(scratch, seen.ends[r - 1], seen.ends[r], r, digits, seed=0, points=5)
        assert path.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert path.val_errors[0] == pytest.approx(1.0 - records[r - 1].val_accuracy, abs=1e-12)
        assert path.val_errors[-1] == pytest.approx(1.0 - records[r].val_accuracy, abs=1e-12)
        assert path.test_errors[0] == pytest.approx(1.0 - records[r - 1].test_accuracy, abs=1e-12)
        assert path.test_errors[-1] == pytest.approx(1.0 - records[r].test_accuracy, abs=1e-12)
        assert records[r].metrics["level_barrier"] == path.val_barrier
        assert records[r].metrics["level_barrier_test"] == path.test_barrier


def test_the_barrier_is_what_plain_torch_code_computes_from_the_two_rounds_weights(tiny_cfg, digits):
    seen = searched(tiny_cfg, digits)
    layers = ("fc1", "fc2", "fc3")  # LeNet-300-100: three fully connected layers, ReLU between them

    def error(state, split):
        h = split.x.flatten(1)
        for i, name in enumerate(layers):
            h = h @ state[f"{name}.weight"].T + state[f"{name}.bias"]
            h = h.relu() if i < len(layers) - 1 else h
        return (h.argmax(1) != split.y).double().mean().item()

    for r in (1, 2):
        a, b = seen.ends[r - 1][0], seen.ends[r][0]
        for split, key in ((digits.val, "level_barrier"), (digits.test, "level_barrier_test")):
            errors = [error({n: (1 - alpha) * a[n] + alpha * b[n] for n in a}, split)
                      for alpha in torch.linspace(0, 1, 5).tolist()]
            assert seen.records[r].metrics[key] == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2,
                                                                 abs=1e-9)
    assert seen.records[2].metrics["level_barrier"] > 0  # (p = 0.6 on 60 iterations: the path rises, not a 0 = 0)


def test_measuring_the_levels_trains_nothing_and_changes_no_number_of_the_search(tiny_cfg, digits):
    on = searched(tiny_cfg, digits).records
    off = searched(tiny_cfg, digits, {**LEVELS, "stability.level_points": 0}).records
    for a, b in zip(on, off, strict=True):
        assert {k: v for k, v in a.to_dict().items() if not k.startswith("level_barrier") and k != "wall_seconds"} \
            == {k: v for k, v in b.to_dict().items() if k != "wall_seconds"}
    assert [r.computed_iterations for r in on] == [60, 60, 60]
    assert ["level_barrier" in r.metrics for r in on] == [False, True, True]  # (measured, not vacuously equal)


def test_a_cached_search_measures_its_levels_from_the_stored_rounds_without_training(tiny_cfg, digits, tmp_path):
    cache = RoundCache(tmp_path / "cache")
    searched(tiny_cfg, digits, {**LEVELS, "stability.level_points": 0}, cache=cache)  # (stores rounds, no levels)
    again = searched(tiny_cfg, digits, cache=cache).records
    fresh = searched(tiny_cfg, digits).records
    assert [r.reused for r in again] == [True, True, True] and [r.computed_iterations for r in again] == [0, 0, 0]
    assert ["level_barrier" in r.metrics for r in again] == [False, True, True]
    assert [r.metrics.get("level_barrier") for r in again] == [r.metrics.get("level_barrier") for r in fresh]
    assert [r.metrics.get("level_barrier_test") for r in again] == [r.metrics.get("level_barrier_test")
                                                                      for r in fresh]


@pytest.mark.parametrize("points", [1, 1001, -1])
def test_level_points_are_0_or_at_least_the_paths_two_ends(tiny_cfg, points):
    with pytest.raises(ConfigError, match=r"stability\.level_points must be 0 \(off\) or 2"):
        tiny_cfg({**LEVELS, "stability.level_points": points})


def test_the_stability_command_prints_each_rounds_level_barrier_from_flags(digits, tiny_cfg, tmp_path, capsys):
    flags = ["--dataset", "digits", "--iterations", "60", "--eval-every", "60", "--rounds", "2", "--prune-rate",
             "0.6", "--device", "cpu", "--level-points", "5"]
    assert cli.main(["stability", *flags, "--json", str(tmp_path / "levels.json")]) == 0
    out = capsys.readouterr().out
    records = StabilityAnalysis(tiny_cfg({**LEVELS, "stability.level_points": 0}), digits).levels(points=5)
    doc = json.loads((tmp_path / "levels.json").read_text())
    assert [lv["level_barrier"] for lv in doc["levels"]] == [r.metrics["level_barrier"] for r in records[1:]]
    assert doc["results"] == []  # (no copies asked for: nothing trained beside the search)
    assert "val level barrier" in out and f"{100 * records[2].metrics['level_barrier']:.2f}" in out
    assert cli.main(["stability", *flags, "--plot", str(tmp_path / "levels.png")]) == 2  # (the report draws them)
    assert "--plot draws the stability paths" in capsys.readouterr().err and not (tmp_path / "levels.png").exists()


# --------------------------------------------------------------------------- the objective


def rounds_with(barriers, densities=(1.0, 0.5, 0.25, 0.125)):
    return [{"round": i, "density": d, "val_accuracy": 0.9, **({} if i == 0 else {
        "level_barrier": barriers[i - 1], "level_barrier_test": barriers[i - 1] / 2})}
        for i, d in enumerate(densities[:len(barriers) + 1])]


def test_connected_sparsity_is_the_sparsity_reached_before_the_first_level_barrier_of_2_points():
    objective = parse_objective("connected_sparsity")
    assert objective.direction == "maximize"
    assert objective.value(rounds_with([0.001, 0.015, 0.0]), 0.01) == 0.875  # every level connected
    assert objective.value(rounds_with([0.001, 0.02, 0.0]), 0.01) == 0.5  # round 2 cuts off: a later 0 is not reached
    assert objective.value(rounds_with([0.05, 0.0, 0.0]), 0.01) == 0.0  # round 1 already cut off
    assert objective.value(rounds_with([0.001, 0.03, 0.0]), 0.01, key="test_accuracy_at_early_stop") == 0.875
    assert parse_objective("connected_sparsity:0.04").value(rounds_with([0.001, 0.03, 0.0]), 0.01) == 0.875
    with pytest.raises(ConfigError, match=r"connected_sparsity:0\.02"):
        parse_objective("connected_sparsity:2")


# --------------------------------------------------------------------------- in a study


def test_a_study_shows_the_level_barrier_in_mlflow_rounds_csv_compare_the_report_and_its_objective(
        tmp_path, tmp_path_factory, monkeypatch, capsys):
    import optuna

    from ltstudy.study.config import load_study
    from ltstudy.study.curves import matches
    from ltstudy.study.storage import open_storage
    from mlflow import MlflowClient
    from tests.study_helpers import metric_steps, run_quiet, seeded_stores, write_study

    stores = seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    objectives = {"objectives": ["connected_sparsity", "train_iterations"], "n_trials": 1}
    refused = write_study(tmp_path, stores, "refused.toml", study=objectives)
    with pytest.raises(ConfigError, match=r"connected_sparsity reads each pruned round's level barrier"):
        load_study(refused)
    path = write_study(tmp_path, stores, study=objectives, stability={"level_points": 4})
    assert run_quiet(path) == 0
    (trial,) = optuna.load_study(study_name="tiny", storage=open_storage(stores.storage)).trials
    rounds = trial.user_attrs["rounds"]
    barriers = [r["level_barrier"] for r in rounds[1:]]
    assert "level_barrier" not in rounds[0] and len(barriers) == 2
    reached = 0.0
    for r in rounds[1:]:
        if r["level_barrier"] >= 0.02:
            break
        reached = 1.0 - r["density"]
    assert trial.values[0] == reached
    client = MlflowClient(stores.tracking_uri)
    run_id = trial.user_attrs["mlflow_run_id"]
    assert metric_steps(client, run_id, "level_barrier") == [1, 2]
    assert metric_steps(client, run_id, "level_barrier_test") == [1, 2]
    csv_path = client.download_artifacts(run_id, "rounds.csv", str(tmp_path / "artifacts-out"))
    rows = list(csv.DictReader(io.StringIO(Path(csv_path).read_text())))
    assert rows[0]["level_barrier"] == "" and [float(r["level_barrier"]) for r in rows[1:]] == pytest.approx(barriers)
    capsys.readouterr()
    assert cli.main(["compare", str(path), "--metric", "level_barrier", "--json", "c.json"]) == 0
    assert "ticket level_barrier" in capsys.readouterr().out
    (row,) = [r for r in json.loads((tmp_path / "c.json").read_text())["rows"] if r["kind"] == "ticket"]
    assert row["ticket_level_barrier"] == rounds[row["curves"][0]["ticket_round"]].get("level_barrier")
    assert cli.main(["stability", str(path)]) == 0
    out = capsys.readouterr().out
    agree = sum((r["level_barrier"] < 0.02) == matches(r["val_accuracy"], rounds[0]["val_accuracy"], 0.01)
                for r in rounds[1:])
    assert f"Of 2 rounds, {agree} agree with Paul et al." in out and "val level barrier" in out
    assert cli.main(["report", str(path), "--out", "report.html"]) == 0
    section = (tmp_path / "report.html").read_text().split("<h2>Linear connectivity of successive levels</h2>")[1]
    assert section.lstrip().startswith("<figure><img") and f"Of the 2 measured rounds, {agree} agree" in section
