"""Sparse-training baselines beside the ticket: static sparse, SET and RigL at each level's density.

Each update keeps every layer's count, drops the survivors closest to zero, never regrows what it just dropped,
and grows at random (SET) or where the dense gradient is largest (RigL, recomputed here); the masks hold exactly
between updates; ERK splits the count as RigL's formula says; the same config gives the same numbers.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from ltstudy.engine import pruning
from ltstudy.engine.branches.rigl import RigLUpdates
from ltstudy.engine.branches.set_sparse import SetUpdates
from ltstudy.engine.cache import RoundCache
from ltstudy.engine.config import TrainConfig
from ltstudy.engine.errors import ConfigError, SettingWarning
from ltstudy.engine.layer_densities import layer_counts
from ltstudy.engine.mask_updates import cosine_fraction, largest
from ltstudy.engine.registry import CONTROLS
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.steps import AutogradStep
from ltstudy.engine.training import train
from tests.engine_helpers import OnRoundEnd, OnStep, plain_job

DST = ("static", "set", "rigl")
SETTINGS = {"prune.rounds": 2, "prune.prune_rate": 0.5, "train.iterations": 40, "train.eval_every": 20,
            "sparse_training.update_every": 10}


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))


def random_masks_of(model: nn.Module, density: float, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name in ("1", "3"):
        w = dict(model.named_modules())[name].weight
        keep = round(density * w.numel())
        masks[name] = pruning.keep_largest(torch.rand(w.numel(), generator=g), keep).view_as(w)
    pruning.apply_masks(model, masks)
    return masks


def batch(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 12, generator=g), torch.randint(0, 4, (16,), generator=g)


def trained_a_little(model, masks, steps: int = 3) -> AutogradStep:
    step = AutogradStep(model, masks, TrainConfig(), torch.device("cpu"))
    for i in range(steps):
        step(*batch(10 + i))
    return step


# --------------------------------------------------------------------------- one update


def test_the_k_largest_are_the_stable_sorts_first_k_with_ties_and_nans_placed_as_it_places_them():
    g = torch.Generator().manual_seed(0)
    for trial in range(600):
        n = int(torch.randint(1, 40, (1,), generator=g))
        scores = torch.randint(0, 4, (n,), generator=g).float()  # (few values: ties at the cut are common)
        if trial % 3 == 0:
            scores[torch.rand(n, generator=g) < 0.2] = math.nan
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        assert torch.equal(largest(scores, k), torch.sort(scores, descending=True, stable=True).indices[:k])
        last = torch.sort(scores, stable=True).indices[n - k:].flip(0)  # (the ascending sort's last k, reversed)
        assert torch.equal(largest(scores, k, last_first=True), last)


@pytest.mark.parametrize("kind", [SetUpdates, RigLUpdates])
def test_an_update_keeps_each_layers_count_drops_the_smallest_survivors_and_never_regrows_them(kind):
    model = tiny_net()
    masks = random_masks_of(model, 0.4)
    step = trained_a_little(model, masks)
    updates = kind(every=5, end=100, drop_fraction=0.3, seed=3, round=1)
    before = {n: m.clone() for n, m in masks.items()}
    w_before = {n: w.detach().clone() for n, w in pruning.weights(model, masks).items()}
    changes = updates.update(5, model, masks, step, batch())
    assert set(changes) == set(masks)
    for name, mask in masks.items():
        old, change = before[name].view(-1).bool(), changes[name]
        n = int(old.sum())
        k = min(pruning.n_to_remove(updates.fraction(5), n), old.numel() - n)
        assert k > 0 and len(change.dropped) == len(change.grown) == k
        assert int(mask.sum()) == n  # the layer's count
        assert not set(change.dropped.tolist()) & set(change.grown.tolist())  # nothing dropped is regrown
        assert not old[change.grown].any()  # grown where the mask was 0 before the update
        # the dropped are the k survivors closest to zero
        alive = old.nonzero().view(-1)
        smallest = alive[torch.sort(w_before[name].view(-1)[alive].abs(), stable=True).indices[:k]]
        assert set(change.dropped.tolist()) == set(smallest.tolist())
        # dropped and grown weights are exactly 0, their Adam moments cleared
        w = dict(model.named_modules())[name].weight.detach().view(-1)
        changed = torch.cat([change.dropped, change.grown])
        assert torch.all(w[changed] == 0) and torch.all(w[mask.view(-1) == 0] == 0)
        state = step.state(dict(model.named_modules())[name].weight)
        assert torch.all(state["exp_avg"].view(-1)[changed] == 0)
        assert torch.all(state["exp_avg_sq"].view(-1)[changed] == 0)


def test_rigl_grows_where_the_dense_gradient_recomputed_here_is_largest():
    model = tiny_net()
    masks = random_masks_of(model, 0.3)
    step = trained_a_little(model, masks)
    before = {n: m.clone().view(-1).bool() for n, m in masks.items()}
    # the dense gradient, by hand: a copy of the masked network, every weight's gradient
    twin = tiny_net()
    twin.load_state_dict(model.state_dict())
    xb, yb = batch()
    loss = nn.functional.cross_entropy(twin(xb), yb)
    grads = dict(zip(("1", "3"), torch.autograd.grad(loss, [twin[1].weight, twin[3].weight]), strict=True))
    updates = RigLUpdates(every=10, end=80, drop_fraction=0.3)
    changes = updates.update(10, model, masks, step, (xb, yb))
    for name, change in changes.items():
        k = len(change.grown)
        candidates = (~before[name]).nonzero().view(-1)
        top = candidates[torch.sort(grads[name].view(-1)[candidates].abs(), descending=True, stable=True).indices[:k]]
        assert k > 0 and set(change.grown.tolist()) == set(top.tolist()), name


def test_set_grows_at_random_among_the_pruned_positions_from_its_own_seeded_stream():
    grown = []
    for seed in (3, 3, 4):
        model = tiny_net()
        masks = random_masks_of(model, 0.4)
        step = trained_a_little(model, masks)
        changes = SetUpdates(every=5, end=100, drop_fraction=0.3, seed=seed, round=1).update(5, model, masks, step,
                                                                                             batch())
        grown.append(changes["1"].grown.tolist())
    assert grown[0] == grown[1] != grown[2]


def test_rigls_drop_fraction_is_the_cosine_to_zero_at_t_end_and_no_update_comes_after_it():
    assert cosine_fraction(0.3, 0, 300) == pytest.approx(0.3)
    assert cosine_fraction(0.3, 75, 300) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert cosine_fraction(0.3, 150, 300) == pytest.approx(0.15)
    assert cosine_fraction(0.3, 300, 300) == 0.0 and cosine_fraction(0.3, 400, 300) == 0.0
    updates = RigLUpdates(every=100, end=300, drop_fraction=0.3)
    assert [it for it in range(1000) if updates.due(it)] == [100, 200]
    assert updates.fraction(200) == pytest.approx(0.15 * (1 + math.cos(2 * math.pi / 3)))


# --------------------------------------------------------------------------- layer densities


def erk_by_rigls_formula(shapes: dict[str, tuple], dense_names: set[str], total: int) -> dict[str, float]:
    """RigL's sparse_utils: eps = budget / sum(raw · numel); the layer with the largest eps · raw above 1 goes
    dense, and again until none is (raw = sum(shape) / prod(shape))."""
    dense = set(dense_names)
    while True:
        budget = total - sum(math.prod(shapes[n]) for n in dense)
        raw = {n: sum(s) / math.prod(s) for n, s in shapes.items() if n not in dense}
        eps = budget / sum(raw[n] * math.prod(shapes[n]) for n in raw)
        worst = max(raw, key=raw.get)
        if eps * raw[worst] <= 1:
            return {**{n: 1.0 for n in dense}, **{n: eps * r for n, r in raw.items()}}
        dense.add(worst)


def test_erk_gives_each_layer_rigls_density_keeping_layers_that_would_pass_one_dense():
    shapes = {"conv": (16, 3, 3, 3), "fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100), "out": (10, 10)}
    ticket = {n: torch.zeros(s) for n, s in shapes.items()}
    ticket["out"] += 1  # a layer the ticket never prunes
    ticket["fc1"].view(-1)[:30000] = 1
    ticket["fc2"].view(-1)[:3000] = 1
    total = int(sum(m.sum() for m in ticket.values()))
    counts = layer_counts("erk", ticket, {n: torch.Size(s) for n, s in shapes.items()})
    expected = erk_by_rigls_formula(shapes, {"out"}, total)
    assert sum(counts.values()) == total
    assert {n for n, d in expected.items() if d == 1.0} == {"out", "conv", "fc3"}  # (the rule's iteration ran)
    for name, density in expected.items():
        assert abs(counts[name] - density * math.prod(shapes[name])) < 1, name


def test_uniform_gives_every_pruned_layer_one_density_and_ticket_the_tickets_own_counts():
    shapes = {"a": (50, 40), "b": (30, 20), "c": (10, 10)}
    ticket = {n: torch.zeros(s) for n, s in shapes.items()}
    ticket["a"].view(-1)[:900] = 1
    ticket["b"].view(-1)[:30] = 1
    ticket["c"] += 1
    sizes = {n: torch.Size(s) for n, s in shapes.items()}
    uniform = layer_counts("uniform", ticket, sizes)
    assert sum(uniform.values()) == 1030 and uniform["c"] == 100
    assert all(abs(uniform[n] - 930 / 2600 * math.prod(shapes[n])) < 1 for n in ("a", "b"))
    assert layer_counts("ticket", ticket, sizes) == {"a": 900, "b": 30, "c": 100}


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("lean", [True, False])
def test_the_masks_hold_exactly_between_updates_and_change_only_at_them(tiny_cfg, digits, lean):
    from ltstudy.engine.models import build_model

    cfg = tiny_cfg(train__iterations=40)
    torch.manual_seed(0)
    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, 0.0)
    masks = random_masks_of_model(model)
    counts = {n: int(m.sum()) for n, m in masks.items()}
    seen: list[dict] = []

    def check(job, it, lr, step):
        for name, w in pruning.weights(job.model, masks).items():
            assert torch.all(w[masks[name] == 0] == 0), (it, name)
            assert int(masks[name].sum()) == counts[name]
        seen.append({n: m.clone() for n, m in masks.items()})

    job = plain_job(model, masks, cfg.train, cfg.resolve_schedule(len(digits.train)),
                    mask_updates=SetUpdates(every=10, end=40, drop_fraction=0.3))
    train(job, digits, OnStep(check), lean=lean)
    moved = [it for it in range(1, 40) if any(not torch.equal(seen[it][n], seen[it - 1][n]) for n in masks)]
    assert moved == [10, 20, 30]  # (the update comes before the step of iteration 10, ...)


def random_masks_of_model(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    masks = {n: pruning.keep_largest(torch.rand(w.numel(), generator=g), w.numel() // 5).view_as(w)
             for n, w in pruning.weights(model, [layer.name for layer in pruning.prunable_layers(model)]).items()}
    pruning.apply_masks(model, masks)
    return masks


def by_control(records) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.control, []).append(r)
    return out


def test_each_baseline_trains_at_the_tickets_densities_and_the_same_config_gives_the_same_numbers(tiny_cfg, digits):
    cfg = tiny_cfg(SETTINGS)
    runs = []
    for _ in range(2):
        seen = []
        ticket_search(cfg, digits, controls=DST).run(OnRoundEnd(seen.append))
        runs.append(by_control(seen))
    ticket = {r.round: r for r in runs[0][""]}
    for name in DST:
        levels = runs[0][name]
        assert [r.round for r in levels] == [1, 2]
        assert [r.weights_remaining for r in levels] == [ticket[r].weights_remaining for r in (1, 2)]
        assert [r.to_dict() | {"wall_seconds": 0} for r in levels] == \
            [r.to_dict() | {"wall_seconds": 0} for r in runs[1][name]], name
    # ERK (the default) puts the small output layer at a higher density than the ticket's uniform 25%
    assert runs[0]["rigl"][1].layer_density["fc3"] > ticket[2].layer_density["fc3"]
    assert runs[0]["set"][1].test_accuracy != runs[0]["static"][1].test_accuracy  # (the mask moved)


def test_a_variant_fixes_its_setting_and_a_budget_multiplies_the_rounds_iterations(tiny_cfg, digits):
    cfg = tiny_cfg(SETTINGS)
    seen = []
    ticket_search(cfg, digits, controls=["rigl-uniform-2x"]).run(OnRoundEnd(seen.append))
    (level, _), ticket = by_control(seen)["rigl-uniform-2x"], by_control(seen)[""]
    assert level.iterations == 80 and ticket[1].iterations == 40
    assert set(level.layer_density.values()) == {0.5}
    assert "RigL (uniform, 2x)" in CONTROLS.get("rigl-uniform-2x").summary
    for bad in ("rigl-2x-uniform-2x", "rigl-dense", "static-0x"):
        assert bad not in CONTROLS


def test_the_cache_key_covers_the_settings_a_baseline_trains_by(tiny_cfg, digits, tmp_path):
    cache = RoundCache(tmp_path / "cache")
    keys = {}
    for fraction in (0.3, 0.5):
        search = ticket_search(tiny_cfg(SETTINGS, sparse_training__drop_fraction=fraction), digits, cache,
                               controls=DST)
        search.run()
        level = search._level(1, True)
        keys[fraction] = {n: b.key(level) for n, b in search.branches.items()}
    assert keys[0.3]["static"] == keys[0.5]["static"]  # (static never drops)
    assert keys[0.3]["set"] != keys[0.5]["set"] and keys[0.3]["rigl"] != keys[0.5]["rigl"]
    again = []
    ticket_search(tiny_cfg(SETTINGS, sparse_training__drop_fraction=0.5), digits, cache, controls=DST).run(
        OnRoundEnd(again.append))
    assert all(r.reused for r in again)


@pytest.mark.parametrize("setting, value", [("drop_fraction", 0.0), ("end_fraction", 1.5), ("update_every", 0),
                                            ("budget", -1.0), ("layer_density", "erdos")])
def test_a_bad_sparse_training_setting_is_refused_in_one_line(tiny_cfg, setting, value):
    with pytest.raises(ConfigError) as err:
        tiny_cfg({f"sparse_training.{setting}": value})
    assert "\n" not in str(err.value) and setting in str(err.value)


def test_the_dense_gradient_leaves_the_dropout_stream_and_batch_norm_statistics_as_they_were():
    from ltstudy.engine.mask_updates import dense_gradients
    from ltstudy.engine.models.layers import Dropout, set_dropout_generator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.BatchNorm1d(9), nn.ReLU(), Dropout(0.5), nn.Linear(9, 4))
    generator = torch.Generator().manual_seed(7)
    set_dropout_generator(model, generator)
    model.train()
    drawn, stats = generator.get_state(), {k: b.clone() for k, b in model.named_buffers()}
    grads = dense_gradients(model, ["1", "5"], batch())
    assert torch.equal(generator.get_state(), drawn)
    assert all(torch.equal(b, stats[k]) for k, b in model.named_buffers())
    loss = nn.functional.cross_entropy(model(batch()[0]), batch()[1])  # (the same dropout draws as the gradient's)
    expected = torch.autograd.grad(loss, [model[1].weight, model[5].weight])
    assert torch.allclose(grads["1"], expected[0]) and torch.allclose(grads["5"], expected[1])


def test_sparse_training_settings_without_a_control_that_reads_them_get_a_one_line_warning(tiny_cfg, digits):
    cfg = tiny_cfg(SETTINGS)
    with pytest.warns(SettingWarning, match=r"^\[sparse_training\] is set, but no control here trains by it"):
        ticket_search(cfg, digits, controls=["random-reinit"])
    with pytest.warns(SettingWarning, match="no control here trains by it"):
        ticket_search(cfg, digits, controls=["static"])  # (static has no updates: update_every means nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        ticket_search(cfg, digits, controls=["set"])


def test_a_baseline_split_by_erk_or_uniform_costs_its_own_iterations_and_one_split_like_the_ticket_its_path_too(
        tiny_cfg, digits):
    seen = []
    ticket_search(tiny_cfg(SETTINGS), digits, controls=["rigl", "static-uniform", "static-ticket"]).run(
        OnRoundEnd(seen.append))
    by = by_control(seen)
    assert [r.path_iterations for r in by["rigl"]] == [r.path_iterations for r in by["static-uniform"]] == [0, 0]
    assert [r.path_iterations for r in by["static-ticket"]] == [0, by[""][1].iterations]  # (as random-mask's)


def test_set_rigl_and_static_train_on_the_sparse_kernels_when_asked_without_a_warning(tiny_cfg, digits):
    from ltstudy.engine.steps import SparseStep

    cfg = tiny_cfg(SETTINGS, train__kernels="sparse")
    for name in DST:
        steps: set[tuple[str, type]] = set()  # (what moves the mask, the step) of every pruned round's steps

        def seen(job, it, lr, step, steps=steps):
            if job.round > 0:
                steps.add((type(job.mask_updates).__name__, type(step)))

        with warnings.catch_warnings():
            warnings.simplefilter("error", SettingWarning)
            ticket_search(cfg.replace({"sparse_training.update_every": 100}) if name == "static" else cfg, digits,
                          controls=[name]).run(OnStep(seen))
        moves = {"static": "NoneType", "set": "SetUpdates", "rigl": "RigLUpdates"}[name]
        assert steps == {("NoneType", SparseStep), (moves, SparseStep)}  # (the ticket's rounds, the control's)


def test_the_lean_and_the_autograd_step_give_the_same_bits_while_rigl_moves_the_masks(tiny_cfg, digits):
    from ltstudy.engine.models import build_model

    cfg = tiny_cfg(train__iterations=40)
    out = []
    for lean in (True, False):
        torch.manual_seed(0)
        model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, 0.0)
        masks = random_masks_of_model(model)
        start = {n: m.clone() for n, m in masks.items()}
        job = plain_job(model, masks, cfg.train, cfg.resolve_schedule(len(digits.train)),
                        mask_updates=RigLUpdates(every=10, end=30, drop_fraction=0.3))
        train(job, digits, lean=lean)
        out.append((model.state_dict(), masks))
    (state, masks), (state_autograd, masks_autograd) = out
    assert all(torch.equal(state[k], state_autograd[k]) for k in state)
    assert all(torch.equal(masks[n], masks_autograd[n]) for n in masks)
    assert any(not torch.equal(masks[n], start[n]) for n in masks)  # (they moved)
