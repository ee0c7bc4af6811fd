"""Iterative magnitude pruning end to end on digits: rewinding, densities, re-init, reproducibility."""

from __future__ import annotations

import json

import pytest
import torch

from ltstudy.engine import pruning
from ltstudy.engine.errors import ConfigError, StopSearch
from ltstudy.engine.models import build_model
from ltstudy.engine.rounds import RoundJob, RoundResult
from ltstudy.engine.search import SearchRanAlready
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.ticket import TicketSearch
from ltstudy.engine.training import train
from tests.engine_helpers import OnEvaluation, OnRoundEnd, OnRoundStart, OnStep


def survivors_equal(model_state: dict, reference: dict, masks: pruning.Masks) -> bool:
    return all(torch.equal(model_state[f"{n}.weight"][m == 1], reference[f"{n}.weight"][m == 1])
               for n, m in masks.items())


def without_wall_time(rounds: list[RoundResult]) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k != "wall_seconds"} for r in rounds]


# --------------------------------------------------------------------------- θ0, θ_k and rewinding


def test_theta0_is_the_seeded_initialisation(make_search, digits):
    search = make_search(seed=3)
    torch.manual_seed(3)
    fresh = build_model("lenet-300-100", digits.input_shape, 10)
    assert all(torch.equal(v, search.theta0[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("k", [0, 20])
def test_rewinding_restores_the_survivors_to_theta_k_bit_for_bit(make_search, k):
    search = make_search(prune__rewind_iter=k)
    search.train_round(0)
    trained = {n: t.clone() for n, t in search.model.state_dict().items()}
    search.prune_and_reset(1)
    state = search.model.state_dict()
    assert survivors_equal(state, search.theta_k, search.masks)
    assert not survivors_equal(trained, search.theta_k, search.masks)
    for n, m in search.masks.items():
        assert not state[f"{n}.weight"][m == 0].any()
        assert torch.equal(state[f"{n}.bias"], search.theta_k[f"{n}.bias"])  # biases rewound, never pruned
    if k == 0:
        assert all(torch.equal(v, search.theta0[key]) for key, v in search.theta_k.items())
    else:
        assert not torch.equal(search.theta_k["fc1.weight"], search.theta0["fc1.weight"])


def test_theta_k_equals_an_independent_training_of_exactly_k_steps(make_search, tiny_cfg):
    k = 20
    search = make_search(tiny_cfg(prune__rewind_iter=k, train__iterations=60))
    search.train_round(0)
    short = make_search(tiny_cfg(train__iterations=k))
    short.train_round(0)
    assert short.theta0.keys() == search.theta_k.keys()
    assert all(torch.equal(v, search.theta_k[key]) for key, v in short.model.state_dict().items())
    longer = make_search(tiny_cfg(train__iterations=k + 1))
    longer.train_round(0)
    assert not torch.equal(longer.model.fc1.weight, search.theta_k["fc1.weight"])


def test_later_rounds_keep_rewinding_to_the_same_theta_k(make_search):
    search = make_search(prune__rewind_iter=20, prune__rounds=2)
    search.train_round(0)
    theta_k = {n: t.clone() for n, t in search.theta_k.items()}
    for r in (1, 2):
        search.prune_and_reset(r)
        assert survivors_equal(search.model.state_dict(), theta_k, search.masks)
        search.train_round(r)
    assert all(torch.equal(v, theta_k[n]) for n, v in search.theta_k.items())


# --------------------------------------------------------------------------- densities


def test_density_is_counted_from_masks_and_matches_the_zeros_in_the_weights(make_search):
    search = make_search(prune__rounds=2)
    result = search.run()
    w = pruning.weights(search.model, search.masks)
    nonzero = {n: int((w[n] != 0).sum()) for n in w}
    total = sum(t.numel() for t in w.values())
    last = result.rounds[-1]
    assert last.weights_remaining == sum(nonzero.values()) == pruning.remaining(search.masks)
    assert last.density == pytest.approx(sum(nonzero.values()) / total)
    assert last.layer_density == pytest.approx({n: nonzero[n] / w[n].numel() for n in w})
    assert last.sparsity == pytest.approx(1 - last.density)


def test_layerwise_uniform_rate_keeps_n_times_one_minus_p_to_the_r_per_layer(make_search):
    search = make_search(prune__rounds=3, prune__prune_rate=0.3, train__iterations=40)
    rounds = search.run().rounds
    sizes = {n: m.numel() for n, m in search.masks.items()}
    for r, rec in enumerate(rounds):
        assert rec.round == r
        for name, d in rec.layer_density.items():
            assert abs(d * sizes[name] - sizes[name] * 0.7 ** r) <= r, (r, name)
    densities = [rec.density for rec in rounds]
    assert densities == sorted(densities, reverse=True) and densities[-1] == pytest.approx(0.343, abs=1e-3)


def test_output_rate_one_half_prunes_the_output_layer_at_half_the_rate(make_search):
    rounds = make_search(prune__rounds=2, prune__prune_rate=0.4, prune__output_rate=0.5,
                         train__iterations=40).run().rounds
    assert rounds[-1].layer_density["fc3"] == pytest.approx(0.8 ** 2, abs=2 / 1000)
    assert rounds[-1].layer_density["fc1"] == pytest.approx(0.6 ** 2, abs=2 / 19200)


def test_ignored_layers_stay_dense_through_every_round(make_search):
    rounds = make_search(prune__rounds=2, prune__ignore=["fc1"], train__iterations=40).run().rounds
    assert all(rec.layer_density["fc1"] == 1.0 for rec in rounds)
    assert rounds[-1].layer_density["fc2"] < 0.7


def test_biases_and_batch_norm_parameters_are_never_pruned(make_search):
    """resnet-20 on 8x8 digits: only conv/linear weights are masked; BN and biases rewind intact."""
    search = make_search(model__name="resnet-20", train__iterations=4, train__eval_every=2, train__batch_size=16,
                         prune__rewind_iter=2, prune__prune_rate=0.5)
    search.train_round(0)
    search.prune_and_reset(1)
    state = search.model.state_dict()
    for key, value in state.items():
        layer, _, param = key.rpartition(".")
        if layer in search.masks and param == "weight":
            continue
        assert torch.equal(value, search.theta_k[key]), key
        if key.endswith(("bn.weight", "bn1.weight", "bn2.weight", "shortcut.1.weight")):
            assert value.ne(0).all(), f"{key} has zeros"
    assert sum(v.abs().sum() for k, v in state.items() if k.endswith("bias")) > 0  # trained 2 steps, not zeroed
    search.train_round(1)  # masks still hold
    assert pruning.density(search.masks) == pytest.approx(0.5, abs=1e-3)


# --------------------------------------------------------------------------- global scope and random masks


def test_global_scope_keeps_the_globally_largest_trained_magnitudes(make_search):
    search = make_search(prune__scope="global", prune__prune_rate=0.5)
    search.train_round(0)
    trained = {n: w.detach().abs().clone() for n, w in pruning.weights(search.model, search.masks).items()}
    search.prune_and_reset(1)
    kept = torch.cat([trained[n][m == 1] for n, m in search.masks.items()])
    removed = torch.cat([trained[n][m == 0] for n, m in search.masks.items()])
    assert kept.min() >= removed.max()
    assert pruning.density(search.masks) == pytest.approx(0.5, abs=1e-4)
    layer = pruning.layer_density(search.masks)
    assert len({round(d, 3) for d in layer.values()}) == 3, layer


# --------------------------------------------------------------------------- target density and one shot


def test_target_density_sets_the_number_of_rounds(make_search):
    search = make_search(prune__target_density=0.6, prune__prune_rate=0.2, train__iterations=20,
                         train__eval_every=10)
    assert search.n_rounds == 3  # 0.8, 0.64, 0.512
    rounds = search.run().rounds
    assert len(rounds) == 4
    assert rounds[-1].density <= 0.6 < rounds[-2].density


def test_one_shot_prunes_straight_to_the_target_in_one_round(make_search):
    search = make_search(prune__target_density=0.1, prune__one_shot=True, train__iterations=20,
                         train__eval_every=10)
    assert search.n_rounds == 1
    rounds = search.run().rounds
    assert [r.round for r in rounds] == [0, 1]
    assert rounds[-1].density == pytest.approx(0.1, abs=3 / 50200)


@pytest.mark.parametrize(
    "overrides",
    [
        {"prune.target_density": 0.5, "prune.ignore": ["fc1", "fc2"]},
        {"prune.target_density": 0.5, "prune.ignore": ["fc1", "fc2"], "prune.one_shot": True},
        {"prune.target_density": 0.01, "prune.ignore": ["fc1", "fc2", "fc3"]},
    ],
)
def test_impossible_target_densities_raise_config_error(make_search, tiny_cfg, overrides):
    with pytest.raises(ConfigError, match=r"unreachable|nothing can be pruned"):
        make_search(tiny_cfg(overrides))


# --------------------------------------------------------------------------- re-init strategies


@pytest.mark.parametrize(
    ("reinit", "k", "expected"),
    [("rewind", 0, [60, 60]), ("rewind", 20, [60, 40]), ("random", 20, [60, 60]),
     ("finetune", 20, [60, 40]), ("lr-rewind", 20, [60, 40])],
)
def test_iterations_per_round_follow_the_reinit_strategy(make_search, reinit, k, expected):
    rounds = make_search(prune__reinit=reinit, prune__rewind_iter=k).run().rounds
    assert [r.iterations for r in rounds] == expected


@pytest.mark.parametrize("reinit", ["finetune", "lr-rewind"])
def test_finetune_and_lr_rewind_keep_the_trained_weights(make_search, reinit):
    search = make_search(prune__reinit=reinit, prune__rewind_iter=20)
    search.train_round(0)
    trained = {n: t.clone() for n, t in search.model.state_dict().items()}
    search.prune_and_reset(1)
    state = search.model.state_dict()
    assert survivors_equal(state, trained, search.masks)
    assert all(torch.equal(state[k], trained[k]) for k in state if k.endswith("bias"))


def test_finetune_trains_at_the_final_learning_rate_and_lr_rewind_replays_the_schedule(make_search, tiny_cfg):
    calls, lrs = [], []
    starts = OnRoundStart(lambda job: calls.append((job.start, job.constant_lr)))
    steps = OnStep(lambda job, it, lr, step: lrs.append((job.round, it, lr)))
    over = {"train.milestones": [30], "train.gamma": 0.1, "train.lr": 1e-3, "prune.rewind_iter": 20}
    make_search(tiny_cfg(over, prune__reinit="finetune")).run([starts, steps])
    make_search(tiny_cfg(over, prune__reinit="lr-rewind")).run([starts, steps])
    assert calls[:2] == [(0, None), (20, pytest.approx(1e-4))]
    assert calls[2:] == [(0, None), (20, None)]
    finetune, lr_rewind = lrs[:100], lrs[100:]
    assert [lr for r, it, lr in finetune if r == 1] == [pytest.approx(1e-4)] * 40
    assert [lr for r, it, lr in lr_rewind if r == 1] == [1e-3 if it < 30 else pytest.approx(1e-4)
                                                         for it in range(20, 60)]


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_and_config_give_identical_rounds(tiny_cfg, digits):
    cfg = tiny_cfg(prune__rounds=2, prune__rewind_iter=10, model__dropout=0.2, train__iterations=40)
    first = ticket_search(cfg, data=digits).run()
    second = ticket_search(cfg, data=digits).run()
    assert without_wall_time(first.rounds) == without_wall_time(second.rounds)
    assert first.config == second.config == cfg.to_dict()


def test_augmented_runs_are_reproducible_too(tiny_cfg):
    cfg = tiny_cfg(data__augment=True, prune__rewind_iter=10, train__iterations=30, train__eval_every=10)
    first, second = ticket_search(cfg).run(), ticket_search(cfg).run()
    assert without_wall_time(first.rounds) == without_wall_time(second.rounds)
    plain = ticket_search(tiny_cfg(prune__rewind_iter=10, train__iterations=30, train__eval_every=10)).run()
    assert [r.train_loss for r in plain.rounds] != [r.train_loss for r in first.rounds]


def test_a_rewound_round_replays_the_batches_from_iteration_k(make_search, monkeypatch):
    import ltstudy.engine.data

    asked = []
    real = ltstudy.engine.data.Batches.indices

    def spy(self, iteration):
        asked.append(iteration)
        return real(self, iteration)

    monkeypatch.setattr(ltstudy.engine.data.Batches, "indices", spy)
    make_search(prune__rewind_iter=20, train__iterations=60).run()
    assert asked == [*range(60), *range(20, 60)]


def test_a_different_seed_gives_different_numbers(tiny_cfg, digits):
    a = ticket_search(tiny_cfg(train__iterations=40), digits).run()
    b = ticket_search(tiny_cfg(seed=1, train__iterations=40), digits).run()
    assert [r.val_loss for r in a.rounds] != [r.val_loss for r in b.rounds]
    assert [r.train_loss for r in a.rounds] != [r.train_loss for r in b.rounds]


def test_random_mask_and_random_reinit_are_reproducible(tiny_cfg, digits):
    cfg = tiny_cfg(prune__mask="random", prune__reinit="random", prune__rounds=2, train__iterations=20,
                   train__eval_every=10)
    assert without_wall_time(ticket_search(cfg, data=digits).run().rounds) == \
        without_wall_time(ticket_search(cfg, data=digits).run().rounds)


# --------------------------------------------------------------------------- callbacks and results


def test_stop_search_from_on_round_ends_after_that_round_and_keeps_it(make_search):
    seen = []

    def on_round(rec):
        seen.append(rec.round)
        if rec.round == 1:
            raise StopSearch("pruned enough")

    result = make_search(prune__rounds=4, train__iterations=20, train__eval_every=10).run(OnRoundEnd(on_round))
    assert seen == [0, 1]
    assert [r.round for r in result.rounds] == [0, 1]
    assert result.stopped == "pruned enough"


def test_a_completed_search_reports_no_stop_reason_and_one_record_per_round(make_search):
    seen = []
    result = make_search(prune__rounds=2, train__iterations=20, train__eval_every=10).run(OnRoundEnd(seen.append))
    assert result.stopped is None
    assert seen == result.rounds and [r.round for r in seen] == [0, 1, 2]


def test_progress_reports_iterations_done_out_of_the_round_length(make_search):
    calls = []
    make_search(prune__rewind_iter=20, train__iterations=60, train__eval_every=20).run(
        OnEvaluation(lambda job, it, ev: calls.append((job.round, it - job.start, job.end - job.start))))
    assert calls == [(0, 20, 60), (0, 40, 60), (0, 60, 60), (1, 20, 40), (1, 40, 40)]


def test_round_records_hold_sane_numbers(make_search):
    for rec in make_search(prune__rounds=1).run().rounds:
        assert 0.0 <= rec.val_accuracy <= 1.0 and 0.0 <= rec.test_accuracy <= 1.0
        assert 0.0 <= rec.test_accuracy_at_early_stop <= 1.0
        assert rec.val_loss > 0 and rec.train_loss > 0 and rec.wall_seconds >= 0
        assert rec.early_stop_iteration % 20 == 0 or rec.early_stop_iteration == 60


def test_a_search_runs_once_and_a_second_run_is_refused_with_nothing_doubled(make_search):
    seen = []
    search = make_search(train__iterations=20, train__eval_every=10)
    first = search.run(OnRoundEnd(seen.append))
    with pytest.raises(SearchRanAlready, match="has run already and a search runs once: build another"):
        search.run(OnRoundEnd(seen.append))
    assert [r.round for r in seen] == [r.round for r in first.rounds] == [0, 1]
    assert [r.round for r in search.result().rounds] == [0, 1]  # (a second run appended a "round 0" at 0.8 once)


def test_write_json_holds_the_config_and_the_rounds(make_search, tmp_path):
    search = make_search(train__iterations=20, train__eval_every=10)
    result = search.run()
    path = tmp_path / "out.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert data["config"] == search.cfg.to_dict()
    assert data["device"] == "cpu" and data["stopped"] is None
    assert [r["density"] for r in data["rounds"]] == [r.density for r in result.rounds]


def test_a_rewound_round_replays_round_zeros_augmentations_from_iteration_k(tiny_cfg, monkeypatch):
    """Crops and flips depend on the iteration, like the batches, so rewinding replays both."""
    import ltstudy.engine.training

    seen: list[tuple[int, bytes]] = []
    real = ltstudy.engine.training.augment_batch

    def spy(x, generator):
        out = real(x, generator)
        seen.append(out.numpy().tobytes())
        return out

    monkeypatch.setattr(ltstudy.engine.training, "augment_batch", spy)
    TicketSearch(tiny_cfg(data__augment=True, prune__rewind_iter=20, train__iterations=60,
                          train__eval_every=20)).run()
    assert len(seen) == 60 + 40
    round0, round1 = seen[:60], seen[60:]
    assert round1 == round0[20:]
    assert round0[0] != round0[1]


# --------------------------------------------------------------------------- the paper's controls


def reported(search):
    """What holds the model and masks of the rounds a search reports: a control alone's branch, or the ticket."""
    return getattr(search, "branch", search)


def masks_per_round(search) -> dict[int, dict[str, torch.Tensor]]:
    """Run a search, keeping the masks of every finished round (searches expose their current masks)."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    search.run(OnRoundEnd(lambda rec: seen.__setitem__(rec.round, {n: m.clone()
                                                                    for n, m in reported(search).masks.items()})))
    return seen


def start_states(search) -> dict[int, dict[str, torch.Tensor]]:
    """Drive a search by hand, keeping the weights each of its own rounds started from (before training)."""
    starts, events, reply = {}, search.events(), None
    while True:
        try:
            event = events.send(reply)
        except StopIteration:
            return starts
        reply = None
        if isinstance(event, RoundJob):
            if event.model is reported(search).model:  # (a control also trains its ticket's rounds)
                starts[event.round] = {k: v.clone() for k, v in event.model.state_dict().items()}
            reply = train(event, search.data)


CONTROL = {"prune.rounds": 3, "prune.prune_rate": 0.4, "prune.rewind_iter": 20, "train.iterations": 40,
           "train.eval_every": 20}


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_the_random_reinit_control_trains_the_tickets_own_mask_at_every_level(make_search, tiny_cfg, scope):
    """Frankle & Carbin's control: the winning ticket's mask m_r, with a fresh θ'0, at every level r.

    (It used to run an IMP chain of its own, whose masks differed from the ticket's from round 2 on.)
    """
    ticket = masks_per_round(make_search(tiny_cfg(CONTROL, prune__scope=scope)))
    control = masks_per_round(make_search(tiny_cfg(CONTROL, prune__scope=scope, prune__reinit="random")))
    assert sorted(control) == sorted(ticket) == [0, 1, 2, 3]
    for r in range(1, 4):
        assert all(torch.equal(control[r][n], ticket[r][n]) for n in ticket[r]), f"level {r}"


def test_the_random_reinit_control_starts_each_level_from_a_fresh_draw_of_the_init_distribution(make_search, tiny_cfg):
    from scipy.stats import ks_2samp

    search = make_search(tiny_cfg(CONTROL, prune__reinit="random"))
    theta0 = search.theta0
    starts = start_states(search)
    assert sorted(starts) == [1, 2, 3]  # level 0 is the ticket's dense round itself
    for r, state in starts.items():
        for name in search.masks:
            new, old = state[f"{name}.weight"], theta0[f"{name}.weight"]
            alive = new != 0
            assert not torch.equal(new[alive], old[alive]), (r, name)
            assert new[alive].eq(old[alive]).float().mean() < 0.01, (r, name)  # not a partial copy of θ0
            if alive.sum() > 100:  # the same Gaussian Glorot distribution as θ0
                assert ks_2samp(new[alive].numpy(), old.flatten().numpy()).pvalue > 0.001, (r, name)
    assert not torch.equal(starts[1]["fc2.weight"], starts[2]["fc2.weight"])  # a new draw per level


def test_the_random_mask_control_has_the_tickets_layer_counts_at_other_positions_and_starts_at_theta_k(
        make_search, tiny_cfg):
    ticket_search_ = make_search(tiny_cfg(CONTROL))
    ticket = masks_per_round(ticket_search_)
    search = make_search(tiny_cfg(CONTROL, prune__mask="random"))
    control = masks_per_round(search)
    for r in range(1, 4):
        for n, m in ticket[r].items():
            assert control[r][n].sum() == m.sum(), (r, n)
            assert not torch.equal(control[r][n], m), (r, n)
    starts = start_states(make_search(tiny_cfg(CONTROL, prune__mask="random")))
    theta_k = ticket_search_.theta_k
    for r, state in starts.items():
        for n in ticket[r]:
            w, ref = state[f"{n}.weight"], theta_k[f"{n}.weight"]
            assert torch.equal(w[w != 0], ref[w != 0]), (r, n)  # the survivors start at θ_k


def test_a_control_reuses_the_tickets_rounds_from_the_cache_and_the_ticket_reuses_the_controls_path(
        tiny_cfg, digits, tmp_path):
    from ltstudy.engine.cache import RoundCache

    cache = RoundCache(tmp_path / "cache")
    control = ticket_search(tiny_cfg(CONTROL, prune__reinit="random"), digits, cache).run()
    assert control.kind == "control" and control.path == {"trained": 3, "reused": 0}  # rounds 0..2 give m_1..m_3
    ticket = ticket_search(tiny_cfg(CONTROL), digits, cache).run()
    assert [r.reused for r in ticket.rounds] == [True, True, True, False]  # only the last round is new
    again = ticket_search(tiny_cfg(CONTROL, prune__mask="random"), digits, cache).run()
    assert again.path == {"trained": 0, "reused": 3}
    assert not any(r.reused for r in again.rounds[1:])


def test_a_control_counts_the_ticket_iterations_that_produced_each_mask(make_search, tiny_cfg):
    rounds = make_search(tiny_cfg(CONTROL, prune__reinit="random")).run().rounds
    assert [r.iterations for r in rounds] == [40, 40, 40, 40]  # random re-init trains from iteration 0
    assert [r.path_iterations for r in rounds] == [0, 0, 20, 20]  # m_2, m_3 came from ticket rounds 1, 2 (k..T)
