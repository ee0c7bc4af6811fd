"""Seeds one at a time: θ0, the data order, dropout and random masks each have their own, all from `seed` by default."""

from __future__ import annotations

import json

import pytest
import torch

from ltstudy import cli
from ltstudy.engine.controls import ControlSearch
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.seeds import Seeds
from ltstudy.study.config import parse_study
from tests.engine_helpers import OnRoundStart

ONE = {"prune.rounds": 1, "prune.prune_rate": 0.5, "train.iterations": 40, "train.eval_every": 20}


def first_batches(search) -> list:
    """Round 0's batch order (the loader's first epoch) and dropout stream, as the search hands them to training."""
    job = search.job(0)
    return [job.data_seed, job.dropout_seed]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_every_seed_left_at_minus_one_is_the_seed_and_gives_the_same_numbers_and_keys(tiny_cfg, make_search):
    implicit = tiny_cfg(ONE, seed=5)
    explicit = tiny_cfg(ONE, seed=5, seeds__init=5, seeds__data_order=5, seeds__dropout=5, seeds__mask=5)
    assert implicit.resolved_seeds == explicit.resolved_seeds == Seeds(5, 5, 5, 5)
    a, b = make_search(implicit), make_search(explicit)
    assert a.dense_key == b.dense_key  # (a cache written before [seeds] existed stays valid)
    assert [r.to_dict()["val_accuracy"] for r in a.run().rounds] == [r.to_dict()["val_accuracy"]
                                                                      for r in b.run().rounds]


@pytest.mark.parametrize("name, theta0_moves, batches_move", [("init", True, False), ("data_order", False, True),
                                                              ("dropout", False, True), ("mask", False, False)])
def test_each_seed_moves_its_own_source_of_randomness_and_no_other(tiny_cfg, make_search, name, theta0_moves,
                                                                   batches_move):
    base = make_search(tiny_cfg(ONE, model__dropout=0.2))
    moved = make_search(tiny_cfg(ONE, model__dropout=0.2, **{f"seeds__{name}": 9}))
    assert same_state(base.theta0, moved.theta0) is not theta0_moves
    b, m = first_batches(base), first_batches(moved)
    assert (b[0] != m[0]) is (name == "data_order")
    assert (b[1] != m[1]) is (name == "dropout")
    assert (b != m) is batches_move
    # The dense round depends on θ0, the data order and dropout; a ticket's masks are not random.
    assert (base.dense_key != moved.dense_key) is (name != "mask")


def test_the_mask_seed_draws_the_random_mask_control_and_keeps_its_per_layer_counts(tiny_cfg, digits):
    masks = {}
    for mask_seed in (1, 2):
        cfg = tiny_cfg(ONE, seeds__mask=mask_seed)
        seen = []
        ControlSearch(cfg, digits, control="random-mask").run(OnRoundStart(
            lambda job, seen=seen: seen.append({n: m.clone() for n, m in job.masks.items()})))
        masks[mask_seed] = seen[-1]  # level 1
    assert {n: int(m.sum()) for n, m in masks[1].items()} == {n: int(m.sum()) for n, m in masks[2].items()}
    assert any(not torch.equal(masks[1][n], masks[2][n]) for n in masks[1])


def test_a_seed_fixed_in_a_study_stays_fixed_across_replicates_while_the_others_vary():
    cfg = parse_study({"study": {"name": "s", "seed": 10, "replicates": 2}, "data": {"name": "digits"},
                       "seeds": {"data_order": 3}, "search": {"prune_rate": [0.2, 0.5]}})
    first, second = (cfg.trial_config({"prune_rate": 0.2}, seed).resolved_seeds for seed in (10, 11))
    assert (first.data_order, second.data_order) == (3, 3)
    assert (first.init, second.init) == (10, 11) and (first.dropout, second.dropout) == (10, 11)
    assert cfg.settings()["seeds"]["data_order"] == 3  # (a study continues only with the same seeds)
    plain = parse_study({"study": {"name": "s", "seed": 10}, "data": {"name": "digits"},
                         "search": {"prune_rate": [0.2, 0.5]}})
    assert "seeds" not in plain.settings()  # (a study made before [seeds] existed keeps its settings' hash)


@pytest.mark.parametrize("value", [-2, 2**63])
def test_a_seed_out_of_range_is_refused(tiny_cfg, value):
    with pytest.raises(ConfigError, match=r"seeds.dropout must be between 0 and 2\^63 - 1, or -1"):
        tiny_cfg(seeds__dropout=value)


def test_the_seed_flags_reach_the_search(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["ticket", "--dataset", "digits", "--device", "cpu", "--iterations", "20", "--eval-every", "20",
                     "--rounds", "1", "--init-seed", "4", "--data-order-seed", "7", "--quiet", "--json", "out.json"])
    assert code == 0, capsys.readouterr().err
    seeds = json.loads((tmp_path / "out.json").read_text())["config"]["seeds"]
    assert seeds == {"init": 4, "data_order": 7, "dropout": -1, "mask": -1}
