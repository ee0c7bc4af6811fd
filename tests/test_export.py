"""Tickets to take away: every round's mask and weights on disk, loadable and retrainable to the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
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

COSTS = ("compression_ratio", "compression_ratio_all_params", "params_total", "params_nonzero", "dense_flops",
         "nonzero_flops", "theoretical_speedup")


def strict(text: str):
    """JSON as RFC 8259 has it: NaN and Infinity are not numbers there (other readers refuse them)."""
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


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
    doc = strict((tmp_path / "t" / f"round_{r:02d}" / "ticket.json").read_text())  # (from the cache: filled too)
    assert {k: doc["round"][k] for k in COSTS} == {k: best.user_attrs["rounds"][r][k] for k in COSTS}
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


# --------------------------------------------------------------------------- a ticket is complete and self-describing


@pytest.mark.parametrize("overrides", [{}, {"prune.mask": "random"}], ids=["ticket", "control"])
def test_every_saved_ticket_is_strict_json_with_its_compression_and_flops_filled(tiny_cfg, digits, tmp_path,
                                                                                overrides):
    cfg = tiny_cfg({**overrides, "prune.rounds": 2})
    cache = RoundCache(tmp_path / "cache")
    for name in ("trained", "from-cache"):  # (the second from the cache: its rounds go another way to the saver)
        saver = TicketSaver(tmp_path / name, cfg)
        rounds = ticket_search(cfg, digits, cache).run(saver).rounds
        assert len(saver.written) == 3
        for rec, folder in zip(rounds, saver.written, strict=True):
            doc = strict((folder / "ticket.json").read_text())
            assert {k: doc["round"][k] for k in COSTS} == {k: rec.metrics[k] for k in COSTS}
            assert doc["round"]["params_total"] == sum(p.numel() for p in load_ticket(folder).model().parameters())
            assert doc["round"]["compression_ratio"] == pytest.approx(1 / rec.density)


def test_ticket_save_and_json_write_strict_json_with_every_cost_filled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ticket", "--dataset", "digits", "--iterations", "40", "--eval-every", "20", "--rounds", "1",
                     "--device", "cpu", "--save", "out", "--json", "out.json", "--quiet"]) == 0
    rounds = strict(Path("out.json").read_text())["rounds"]
    for r in rounds:
        saved = strict((tmp_path / "out" / f"round_{r['round']:02d}" / "ticket.json").read_text())["round"]
        assert all(saved[k] == r[k] and r[k] > 0 for k in COSTS)


def test_the_strict_writer_writes_null_for_numbers_that_do_not_exist():
    from ltstudy.engine import strict_json

    doc = {"a": float("nan"), "b": [1.5, float("inf"), (-float("inf"), 2)], "c": {"d": 0.0}, "e": "NaN"}
    assert strict(strict_json.dumps(doc)) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": 0.0}, "e": "NaN"}


def test_every_json_file_ltstudy_writes_goes_through_the_strict_writer():
    """json.dump(s) writes NaN tokens by default; only these calls do not write a record of ours to a file: a hash's
    canonical text, Optuna's own journal format and attributes, and MLflow's parameters and dataset profile."""
    import ast

    allowed = {("engine/strict_json.py", "dumps"), ("engine/hashing.py", "dumps"), ("study/session.py", "dumps"),
               ("study/journal.py", "dumps"), ("study/tracking.py", "dumps")}
    root = Path(__file__).resolve().parents[1] / "ltstudy"
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "json" \
                    and node.attr in ("dump", "dumps"):
                found.add((path.relative_to(root).as_posix(), node.attr))
    assert found <= allowed, found - allowed


EVALUATE = """
import sys
import numpy as np
import torch
from sklearn.datasets import load_digits
from ltstudy.engine.export import load_ticket

torch.set_num_threads(1)
d = load_digits()
x = (d.images / 16.0).astype(np.float32)[:, None]  # as the digits loader scales them
test = np.sort(np.random.default_rng(12345).permutation(len(d.target))[:len(d.target) // 5])  # its held-out 20%
ticket = load_ticket(sys.argv[1])
with torch.no_grad():
    predicted = ticket.model("trained").eval()(ticket.preprocess(x[test])).argmax(1).numpy()
print(int((predicted == d.target[test]).sum()), len(test), ticket.record["test_accuracy"])
print("DATA", "ltstudy.engine.data" in sys.modules)
"""


def test_an_exported_tickets_own_preprocess_gives_its_recorded_accuracy_in_plain_pytorch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ticket", "--dataset", "digits", "--iterations", "60", "--eval-every", "20", "--rounds", "1",
                     "--device", "cpu", "--save", "out", "--quiet"]) == 0
    for folder in ("out/round_00", "out/round_01"):
        proc = subprocess.run([sys.executable, "-c", EVALUATE, folder], capture_output=True, text=True, timeout=300,
                              check=True)
        counts, data = proc.stdout.splitlines()
        correct, n, recorded = counts.split()
        assert data == "DATA False"  # (ltstudy's data module never imported: the ticket alone)
        assert int(correct) / int(n) == float(recorded), folder


def test_retrain_trains_with_one_thread_as_the_cli_does_and_gives_the_callers_count_back(tiny_cfg, digits, tmp_path,
                                                                                       monkeypatch):
    from ltstudy.engine import training

    cfg = tiny_cfg({"prune.rounds": 1})
    saver = TicketSaver(tmp_path / "t", cfg)
    ticket_search(cfg, digits).run(saver)
    seen = []
    real = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    ticket = load_ticket(saver.written[1])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ticket.retrain(digits)
        assert seen == [1] and torch.get_num_threads() == 2
        ticket.retrain(digits, threads=None)  # the caller's own
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
