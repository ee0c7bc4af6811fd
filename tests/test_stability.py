"""Stability to SGD noise (Frankle et al. 2020): two copies from one start, the error along the path between them."""

from __future__ import annotations

import json

import pytest
import torch

from ltstudy import cli
from ltstudy.engine import pruning
from ltstudy.engine.connectivity import instability, interpolate_state, path_errors
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.round_protocol import evaluate
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.stability import StabilityAnalysis, earliest_stable
from tests.engine_helpers import OnRoundEnd

SHORT = {"train.iterations": 100, "train.eval_every": 50, "prune.rounds": 2, "prune.prune_rate": 0.5}


def test_instability_is_the_paths_worst_error_above_the_mean_of_its_ends():
    assert instability([0.10, 0.30, 0.12]) == pytest.approx(0.30 - 0.11)
    assert instability([0.10, 0.05, 0.12]) == pytest.approx(0.12 - 0.11)  # (never below max - mean of the ends)


@pytest.mark.parametrize("where", ["dense", "ticket"])
def test_two_copies_with_the_same_data_order_are_one_network_and_instability_zero(tiny_cfg, digits, where):
    cfg = tiny_cfg(SHORT, prune__rewind_iter=20)
    analysis = StabilityAnalysis(cfg, digits, points=5, copy_seed=cfg.resolved_seeds.data_order)
    (result,) = analysis.dense([20]) if where == "dense" else analysis.ticket([2])
    assert result.data_orders[0] == result.data_orders[1]
    assert len(set(result.val_errors)) == 1 and result.val_instability == 0.0
    assert result.test_instability == 0.0


def test_the_paths_ends_are_the_copies_own_errors_and_copy_a_is_the_tickets_own_round(tiny_cfg, digits):
    cfg = tiny_cfg(SHORT, prune__rewind_iter=20)
    seen = []
    ticket_search(cfg, digits).run(OnRoundEnd(seen.append))
    (result,) = StabilityAnalysis(cfg, digits, points=7).ticket([2])
    assert result.data_orders[0] != result.data_orders[1]
    assert result.alphas[0] == 0.0 and result.alphas[-1] == 1.0 and len(result.alphas) == 7
    # The end state of the search's own round 2, read at the end of training (the record's test accuracy).
    assert result.test_errors[0] == pytest.approx(1.0 - seen[2].test_accuracy, abs=1e-12)
    assert result.density == pytest.approx(seen[2].density)


def test_each_point_of_the_path_is_the_mixture_masked_and_the_ends_evaluate_as_the_states(tiny_cfg, make_search,
                                                                                        digits):
    search = make_search(tiny_cfg(SHORT))
    search.run()
    masks = search.masks
    a = {n: t.clone() for n, t in search.model.state_dict().items()}
    b = {n: t + 0.01 * torch.randn_like(t) * masks.get(n.removesuffix(".weight"), 1) for n, t in a.items()}
    model = search.model
    for alpha in (0.0, 0.3, 1.0):
        path_errors(model, a, b, alpha, masks, digits, seed=0)
        state = model.state_dict()
        for n, m in masks.items():
            assert torch.equal(state[f"{n}.weight"] * (1 - m), torch.zeros_like(m)), (n, alpha)  # the mask holds
        mixed = interpolate_state(a, b, alpha)
        assert all(torch.allclose(state[n], mixed[n] * (masks[n[:-7]] if n[:-7] in masks and n.endswith(".weight")
                                                        else 1)) for n in state)
    for state, alpha in ((a, 0.0), (b, 1.0)):
        model.load_state_dict(state)
        pruning.apply_masks(model, masks)
        own = 1.0 - evaluate(model, digits.val, 2048).accuracy
        assert path_errors(model, a, b, alpha, masks, digits, seed=0)[0] == own


def test_the_earliest_stable_k_is_the_smallest_dense_k_below_the_threshold(tiny_cfg, digits):
    results = StabilityAnalysis(tiny_cfg(SHORT), digits, points=3).dense([0, 40])
    for r in results:
        r.val_errors = [0.1, 0.1 + (0.05 if r.k == 0 else 0.0), 0.1]
    assert earliest_stable(results).k == 40
    assert earliest_stable(results, threshold=0.06).k == 0


def test_patience_is_refused_because_both_copies_train_to_the_end(tiny_cfg, digits):
    with pytest.raises(ConfigError, match=r"set train\.patience = 0"):
        StabilityAnalysis(tiny_cfg(SHORT, train__patience=2), digits)


def test_the_command_prints_the_table_writes_the_json_and_marks_the_earliest_stable_k(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["stability", "--dataset", "digits", "--device", "cpu", "--iterations", "60", "--eval-every", "30",
                     "--rounds", "1", "--prune-rate", "0.5", "--k", "0,20", "--ticket-rounds", "1", "--points", "4",
                     "--json", "out.json", "--plot", "out.png"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [(r["label"], r["k"], r["round"]) for r in doc["results"]] == [("dense", 0, 0), ("dense", 20, 0),
                                                                           ("ticket", 0, 1)]
    stable = [r["k"] for r in doc["results"] if r["label"] == "dense" and r["val_instability"] < 0.02]
    assert doc["earliest_stable_k"] == (min(stable) if stable else None)
    assert f"earliest stable k: {doc['earliest_stable_k']}" in out or "is stable at 2 points" in out
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [([], "nothing to measure"), (["--k", "0,x"], "whole numbers"),
                                            (["--k", "500"], "--k 500 must be in [0, 60)"),
                                            (["--ticket-rounds", "9", "--rounds", "2"], "has rounds 1..2; raise"),
                                            (["--ticket-rounds", "0"], "counts pruned rounds from 1")])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["stability", "--dataset", "digits", "--device", "cpu", "--iterations", "60", "--eval-every", "30",
                     *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_batch_norm_statistics_are_recomputed_on_the_training_subset_at_each_point(tiny_cfg, make_search, digits):
    search = make_search(tiny_cfg(SHORT, model__name="resnet-20", train__iterations=20,
                                    train__eval_every=20, prune__rounds=1))
    search.run()
    model, masks = search.model, search.masks
    a = {n: t.clone() for n, t in model.state_dict().items()}
    b = {n: t * 0.9 if t.is_floating_point() else t for n, t in a.items()}
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first_bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()) if m.training else None)
    try:
        path_errors(model, a, b, 0.5, masks, digits, seed=0)
    finally:
        hook.remove()
    inputs = torch.cat(seen)
    assert len(inputs) == len(digits.train) // 256 * 256  # (equal batches: each example counts once)
    assert torch.allclose(first_bn.running_mean, inputs.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not torch.allclose(first_bn.running_mean, a[next(n for n in a if n.endswith("running_mean"))])


# --------------------------------------------------------------------------- measured as a search goes, in a study


def test_a_search_with_stability_points_measures_each_pruned_round_as_the_analysis_does(tiny_cfg, digits):
    cfg = tiny_cfg(SHORT, prune__rewind_iter=20, stability__points=5)
    rounds = ticket_search(cfg, digits).run().rounds
    assert "val_instability" not in rounds[0].metrics  # (the dense round has no start to compare from)
    alone = StabilityAnalysis(cfg.replace({"stability.points": 0}), digits, points=5).ticket([1, 2])
    assert [(r.metrics["val_instability"], r.metrics["test_instability"]) for r in rounds[1:]] == [
        (s.val_instability, s.test_instability) for s in alone]


def test_the_instability_objective_is_logged_per_round_and_needs_the_measurement(tmp_path, tmp_path_factory,
                                                                                monkeypatch):
    import optuna

    from ltstudy.study.config import load_study
    from ltstudy.study.storage import open_storage
    from mlflow import MlflowClient
    from tests.study_helpers import metric_steps, run_quiet, seeded_stores, write_study

    stores = seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    objectives = {"objectives": ["ticket_sparsity", "instability"], "n_trials": 1}
    refused = write_study(tmp_path, stores, "refused.toml", study=objectives)
    with pytest.raises(ConfigError, match=r"instability is measured only with \[stability\] points > 0"):
        load_study(refused)
    path = write_study(tmp_path, stores, study=objectives, stability={"points": 4})
    assert run_quiet(path) == 0
    (trial,) = optuna.load_study(study_name="tiny", storage=open_storage(stores.storage)).trials
    rounds = trial.user_attrs["rounds"]
    assert trial.values[1] == min((r for r in rounds[1:] if r["val_accuracy"] >= rounds[0]["val_accuracy"] - 0.01
                                   - 1e-12), key=lambda r: (r["density"], -r["val_accuracy"]),
                                  default=rounds[1])["val_instability"]
    client = MlflowClient(stores.tracking_uri)
    assert metric_steps(client, trial.user_attrs["mlflow_run_id"], "val_instability") == [1, 2]
    assert load_study(path).settings()["stability"] == {"points": 4}  # (the others at their defaults)
    assert rounds[1]["computed_iterations"] == 2 * rounds[1]["iterations"]  # (the round and its second copy)
    assert cli.main(["report", str(path), "--out", "report.html"]) == 0
    section = (tmp_path / "report.html").read_text().split("<h2>Stability to SGD noise</h2>")[1]
    assert section.lstrip().startswith("<figure><img")


def test_a_study_measures_the_dense_network_at_each_k_and_only_the_chosen_rounds(tmp_path, tmp_path_factory,
                                                                                monkeypatch, capsys):
    """`[stability] dense_ks` and `rounds`: each path in its round's record, in MLflow against k, summarised over
    seeds by `ltstudy stability STUDY.toml` and in the report; the numbers are `ltstudy stability`'s from flags."""
    import optuna

    from ltstudy.engine.data import load_dataset
    from ltstudy.study.config import load_study
    from ltstudy.study.storage import open_storage
    from mlflow import MlflowClient
    from tests.study_helpers import metric_steps, run_quiet, seeded_stores, write_study

    stores = seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    path = write_study(tmp_path, stores, study={"n_trials": 1, "replicates": 2},
                       search={"prune_rate": 0.5, "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind"},
                       stability={"points": 4, "dense_ks": [0, 20], "rounds": [2]})
    assert run_quiet(path) == 0
    (trial,) = optuna.load_study(study_name="tiny", storage=open_storage(stores.storage)).trials
    per_seed = trial.user_attrs["rounds_per_seed"]
    for rounds in per_seed:
        assert [(p["label"], p["k"]) for p in rounds[0]["stability_paths"]] == [("dense", 0), ("dense", 20)]
        assert rounds[0]["val_instability"] == rounds[0]["stability_paths"][0]["val_instability"]  # (k = 0: round 0)
        assert rounds[1]["stability_paths"] == [] and "val_instability" not in rounds[1]  # (round 1 not asked)
        assert [(p["label"], p["round"]) for p in rounds[2]["stability_paths"]] == [("ticket", 2)]
    # The same numbers as measuring from flags, seed by seed (copy A of k = 0 being round 0 either way).
    study_cfg = load_study(path)
    for seed, rounds in zip(trial.user_attrs["seeds"], per_seed, strict=True):
        cfg = study_cfg.trial_config(trial.user_attrs["params_all"], seed)
        alone = StabilityAnalysis(cfg.replace({"stability.points": 0, "stability.dense_ks": [],
                                               "stability.rounds": []}), load_dataset(cfg.data, "cpu"),
                                  points=4).measure([0, 20], [2])
        assert [s.val_instability for s in alone] == [p["val_instability"] for p in rounds[0]["stability_paths"]
                                                      + rounds[2]["stability_paths"]]
    client = MlflowClient(stores.tracking_uri)
    run_id = trial.user_attrs["mlflow_run_id"]
    assert metric_steps(client, run_id, f"seed_{trial.user_attrs['seeds'][0]}/dense_val_instability") == [0, 20]
    # ... and the mean over the seeds unprefixed, as every round metric's mean is
    for split in ("val", "test"):
        logged = {m.step: m.value for m in client.get_metric_history(run_id, f"dense_{split}_instability")}
        assert logged == {k: pytest.approx(sum(r[0]["stability_paths"][i][f"{split}_instability"]
                                               for r in per_seed) / 2) for i, k in enumerate((0, 20))}
    capsys.readouterr()
    assert cli.main(["stability", str(path), "--json", "summary.json", "--plot", "k.png"]) == 0
    out = capsys.readouterr().out
    (setting,) = json.loads((tmp_path / "summary.json").read_text())["settings"]
    means = [sum(rounds[0]["stability_paths"][i]["val_instability"] for rounds in per_seed) / 2 for i in (0, 1)]
    assert [s["val_instability"]["mean"] for s in setting["starts"][:2]] == pytest.approx(means, abs=1e-12)
    assert [s["n"] for s in setting["starts"]] == [2, 2, 2]
    stable = [k for k, m in zip((0, 20), means, strict=True) if m < 0.02]
    assert setting["earliest_stable_k"] == (stable[0] if stable else None)
    assert ("earliest stable k: " in out) == bool(stable)
    assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["report", str(path), "--out", "report.html"]) == 0
    section = (tmp_path / "report.html").read_text().split("<h2>Stability to SGD noise</h2>")[1]
    assert section.count("<figure>") == 3  # instability against k, against density, the error along the paths
    figures = section.split("</figure>")
    assert "earliest stable k" in figures[0] and "earliest stable k" not in figures[1]
    stable = [k for k, m in zip((0, 20), means, strict=True) if m < 0.02]
    assert (f"rewinding point: k = {stable[0]}." if stable else "none of the k measured") in figures[0]


def test_the_copies_come_from_the_cache_the_second_time(tiny_cfg, digits, tmp_path):
    from ltstudy.engine.cache import RoundCache

    cfg = tiny_cfg(SHORT, prune__rewind_iter=20)
    cache = RoundCache(tmp_path / "cache")
    first = StabilityAnalysis(cfg, digits, cache, points=4).measure([0, 30], [1, 2])
    again = StabilityAnalysis(cfg, digits, cache, points=4).measure([0, 30], [1, 2])
    assert sum(s.trained_iterations for s in first) > 0
    assert [s.trained_iterations for s in again] == [0, 0, 0, 0]
    assert [s.val_errors for s in again] == [s.val_errors for s in first]
    fresh = StabilityAnalysis(cfg, digits, points=4).measure([0, 30], [1, 2])
    assert [s.val_errors for s in fresh] == [s.val_errors for s in first]  # (what the cache holds is what trains)


@pytest.mark.parametrize("settings, message", [
    ({"stability.dense_ks": [0]}, "set stability.points too"),
    ({"stability.copy_seed": 5}, "set stability.points too"),  # (a second copy's seed, with no second copy)
    ({"stability.points": 4, "stability.rounds": [0]}, "count pruned rounds from 1"),
])
def test_what_stability_measures_needs_the_measurement_and_real_rounds(tiny_cfg, settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(SHORT).replace(settings)


@pytest.mark.parametrize("settings", [{"stability.rounds": [3]}, {"stability.dense_ks": [100]}])
def test_rounds_past_the_search_and_k_past_the_round_are_refused_before_training(tiny_cfg, digits, settings):
    with pytest.raises(ConfigError, match=r"within the search's rounds 1\.\.2 .* below the round's 100 iterations"):
        ticket_search(tiny_cfg(SHORT).replace({"stability.points": 4, **settings}), digits)


def test_the_study_plan_counts_the_stability_copies(tmp_path):
    from ltstudy.study.config import load_study
    from ltstudy.study.engine_checks import plan
    from tests.study_helpers import write_study

    path = write_study(tmp_path, search={"rewind_iter": 0}, stability={"points": 4, "dense_ks": [0, 20], "rounds": [2]})
    got = plan(load_study(path), trials=3)
    # Copy B of round 2 (60); the dense k = 0: copy B (60); k = 20: two copies of 40 and the 20-iteration replay.
    assert got.stability == 60 + 60 + (2 * 40 + 20)
    assert got.total_iterations == 3 * 1 * (60 * (2 + 1) + got.stability)


def test_the_start_kind_is_one_enum_and_records_holding_its_strings_still_read():
    """Round records in caches and Optuna's user attrs hold "dense" and "ticket": they read back as the kinds."""
    from ltstudy.engine.connectivity import Stability
    from ltstudy.engine.linear_paths import StartKind
    from ltstudy.study.curves import Curve
    from ltstudy.study.stability_summary import earliest_stable_k, summarise

    def path(label, k, round_, val):
        return {"label": label, "k": k, "round": round_, "density": 1.0 if label == "dense" else 0.5,
                "alphas": [0.0, 1.0], "val_errors": [0.1, 0.1], "test_errors": [0.1, 0.1], "val_instability": val,
                "test_instability": val}

    stored = [{"round": 0, "stability_paths": [path("ticket", 0, 1, 0.0), path("dense", 20, 0, 0.01),
                                               path("dense", 0, 0, 0.3)]}]
    summaries = summarise([Curve(0, 0, {}, stored)])
    assert [(s.label, s.k) for s in summaries] == [(StartKind.DENSE, 0), (StartKind.DENSE, 20), (StartKind.TICKET, 0)]
    assert all(type(s.label) is StartKind for s in summaries)
    assert earliest_stable_k(summaries).k == 20
    assert json.loads(json.dumps(summaries[0].to_dict()))["label"] == "dense"
    measured = Stability("ticket", 0, 1, 0.5, [0.0, 1.0], [0.1, 0.1], [0.1, 0.1], (0, 1))
    assert measured.label is StartKind.TICKET and measured.to_dict()["label"] == "ticket"
