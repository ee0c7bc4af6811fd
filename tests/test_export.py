"""Tickets to take away: every round's mask and weights on disk, loadable and retrainable to the same numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltstudy import cli
from ltstudy.engine import pruning
from ltstudy.engine.cache import RoundCache
from ltstudy.engine.export import TicketSaver, load_ticket
from ltstudy.engine.round_protocol import evaluate
from ltstudy.engine.searches import ticket_search
from tests.study_helpers import Stores, isolate, quiet_run, seed_mlflow_db, write_study

SAME = ("val_accuracy", "val_loss", "early_stop_iteration", "test_accuracy", "test_accuracy_at_early_stop",
        "start_test_accuracy", "train_loss")


def same_numbers(result, record: dict) -> None:
    got = {"val_accuracy": result.val_accuracy, "val_loss": result.val_loss,
           "early_stop_iteration": result.early_stop_iteration, "test_accuracy": result.test_accuracy,
           "test_accuracy_at_early_stop": result.test_accuracy_at_early_stop,
           "start_test_accuracy": result.start_test_accuracy, "train_loss": result.train_loss}
    assert got == {k: record[k] for k in SAME}


@pytest.mark.parametrize("overrides", [
    {"prune.rewind_iter": 20},
    {"prune.reinit": "finetune", "prune.rewind_iter": 20},
    {"prune.reinit": "random", "model.dropout": 0.2},
    {"prune.mask": "random", "prune.rewind_iter": 20},
], ids=["rewind-k20", "finetune", "random-reinit-control", "random-mask-control"])
def test_a_saved_round_loads_into_the_model_and_retrains_to_the_same_numbers(tiny_cfg, digits, tmp_path, overrides):
    cfg = tiny_cfg({**overrides, "prune.rounds": 2})
    search = ticket_search(cfg, digits)
    saver = TicketSaver(tmp_path / "tickets", cfg)
    rounds = search.run(saver).rounds
    assert [p.name for p in saver.written] == ["round_00", "round_01", "round_02"]
    for rec in rounds:
        ticket = load_ticket(tmp_path / "tickets" / f"round_{rec.round:02d}")
        assert ticket.record["density"] == rec.density
        init = ticket.model("init")
        for name, w in pruning.weights(init, ticket.masks).items():
            assert not w[~ticket.masks[name]].any(), f"round {rec.round}: a pruned weight of {name} is not 0"
        assert pruning.density(ticket.float_masks()) == pytest.approx(rec.density)
        # The start accuracy is the ticket's own, before any training (Frankle & Carbin: how much is training's).
        assert evaluate(init, digits.test, 2048).accuracy == rec.start_test_accuracy
        same_numbers(ticket.retrain(digits), rec.to_dict())
        trained = ticket.model("trained")
        assert evaluate(trained, digits.test, 2048).accuracy == rec.test_accuracy


def test_rounds_from_the_cache_are_saved_with_the_weights_they_started_from(tiny_cfg, digits, tmp_path):
    cfg = tiny_cfg({"prune.rewind_iter": 20, "prune.rounds": 2})
    cache = RoundCache(tmp_path / "cache")
    ticket_search(cfg, digits, cache).run()
    again = ticket_search(cfg, digits, cache)
    saver = TicketSaver(tmp_path / "from-cache", cfg)
    assert all(r.reused for r in again.run(saver).rounds)
    fresh = ticket_search(cfg, digits)
    fresh_saver = TicketSaver(tmp_path / "trained", cfg)
    fresh.run(fresh_saver)
    assert [p.name for p in saver.written] == [p.name for p in fresh_saver.written] == ["round_00", "round_01",
                                                                                        "round_02"]
    for folder in saver.written:
        a, b = load_ticket(folder), load_ticket(tmp_path / "trained" / folder.name)
        for part in ("masks", "init", "trained"):
            assert getattr(a, part).keys() == getattr(b, part).keys()
            assert all(torch.equal(getattr(a, part)[k], getattr(b, part)[k]) for k in getattr(a, part)), part


def test_ticket_save_writes_every_round_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["ticket", "--dataset", "digits", "--iterations", "40", "--eval-every", "20", "--rounds", "1",
                     "--device", "cpu", "--save", "out"])
    assert code == 0
    assert "wrote 2 tickets: out/round_00 .. round_01" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out" / "round_01").iterdir()) == [
        "init.safetensors", "mask.safetensors", "ticket.json", "trained.safetensors"]


@pytest.fixture(scope="module")
def study_with_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(root, stores, study={"sampler": "grid", "n_trials": 4, "cache_dir": str(root / "cache")},
                       search={"prune_rate": [0.2, 0.5], "reinit": ["rewind", "finetune"], "rewind_iter": 0,
                               "scope": "layerwise", "rounds": 2})
    with quiet_run(root):
        assert cli.main(["run", str(path), "--quiet"]) == 0
    return stores, path


def test_export_writes_the_sparsest_matching_ticket_and_logs_it_to_the_trials_run(study_with_cache, tmp_path,
                                                                                monkeypatch, capsys):
    import re

    stores, path = study_with_cache
    isolate(monkeypatch, stores.root)
    assert cli.main(["export", str(path), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    number, r = map(int, re.search(r"\(trial (\d+), seed 0, round (\d+)", out).groups())
    study = stores.study()
    best = study.trials[number]
    assert out.startswith(f"wrote {tmp_path / 't' / f'round_{r:02d}'} (trial {number}, seed 0, round {r}")

    # The default is the sparsest winning ticket of the study: a round within ε = 0.01 of its own dense round's
    # validation accuracy, from a ticket trial (never a control), and no ticket trial has a sparser such round.
    def matching(t):
        rounds = t.user_attrs["rounds"]
        return [q for q in rounds if q["val_accuracy"] >= rounds[0]["val_accuracy"] - 0.01]

    assert best.user_attrs["kind"] == "ticket"
    assert best.user_attrs["rounds"][r] in matching(best)
    others = [q for t in study.trials if t.user_attrs["kind"] == "ticket" for q in matching(t)]
    assert min(q["density"] for q in others) == best.user_attrs["rounds"][r]["density"]
    assert "every round from the training cache" in out
    ticket = load_ticket(tmp_path / "t" / f"round_{r:02d}")
    assert ticket.record["val_accuracy"] == best.user_attrs["rounds"][r]["val_accuracy"]
    same_numbers(ticket.retrain(), best.user_attrs["rounds"][r])
    arts = stores.client().list_artifacts(best.user_attrs["mlflow_run_id"], f"ticket/round_{r:02d}")
    assert {Path(a.path).name for a in arts} == {"init.safetensors", "mask.safetensors", "ticket.json",
                                                 "trained.safetensors"}


def test_export_of_a_given_trial_and_round_and_bad_choices_in_one_line(study_with_cache, tmp_path, monkeypatch,
                                                                       capsys):
    stores, path = study_with_cache
    isolate(monkeypatch, stores.root)
    assert cli.main(["export", str(path), "--trial", "1", "--round", "2", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "round_02" / "ticket.json").is_file()
    capsys.readouterr()
    for flags, needle in ((["--trial", "99"], "has no trial 99"), (["--trial", "1", "--round", "7"], "rounds 0..2"),
                          (["--seed", "5"], "not one of the study's training seeds")):
        assert cli.main(["export", str(path), *flags, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and needle in err
