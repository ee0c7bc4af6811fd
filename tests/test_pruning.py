"""Masks and magnitude pruning on small synthetic networks (no training needed)."""

from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from ltstudy.engine import pruning
from ltstudy.engine.config import PruneConfig
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.models import build_model
from ltstudy.engine.registry import SCOPES


def mlp(*widths: int, seed: int = 0, scales: tuple[float, ...] | None = None) -> nn.Sequential:
    """Linear layers fc1.. between consecutive widths; weights optionally scaled per layer."""
    torch.manual_seed(seed)
    layers = OrderedDict((f"fc{i}", nn.Linear(a, b)) for i, (a, b) in enumerate(pairwise(widths), start=1))
    model = nn.Sequential(layers)
    if scales:
        with torch.no_grad():
            for layer, scale in zip(layers.values(), scales):
                layer.weight.mul_(scale)
    return model


def shared_layers(layers, cfg: PruneConfig) -> set[str]:
    """The layers under one global threshold, as the config's scope chooses them."""
    return SCOPES.load(cfg.scope)().shared(layers, cfg)


def prune_rounds(model: nn.Module, cfg: PruneConfig, rounds: int):
    """Masks after 0..rounds pruning steps on fixed weights."""
    layers = pruning.prunable_layers(model)
    rates = pruning.layer_rates(layers, cfg)
    shared = shared_layers(layers, cfg)
    history = [pruning.full_masks(model, layers)]
    for _ in range(rounds):
        history.append(pruning.prune(model, history[-1], rates, shared))
    return history


def counts(masks: pruning.Masks) -> dict[str, int]:
    return {n: int(m.sum().item()) for n, m in masks.items()}


def magnitudes(model: nn.Module, masks: pruning.Masks, keep: bool, among: pruning.Masks) -> torch.Tensor:
    """|w| of the weights kept (keep=True) or removed (keep=False) among the survivors of `among`."""
    w = pruning.weights(model, masks)
    parts = [w[n].detach().abs()[(among[n] == 1) & ((masks[n] == 1) == keep)] for n in masks]
    return torch.cat(parts)


widths_st = st.lists(st.integers(1, 12), min_size=3, max_size=5)
rate_st = st.floats(0.05, 0.95)


# --------------------------------------------------------------------------- layers and rates


def test_prunable_layers_are_the_conv_and_linear_weights_with_the_last_linear_as_output():
    model = build_model("conv-2", (1, 8, 8), 10)
    layers = pruning.prunable_layers(model)
    assert [(la.name, la.kind, la.is_output) for la in layers] == [
        ("conv1", "conv", False), ("conv2", "conv", False),
        ("fc1", "linear", False), ("fc2", "linear", False), ("fc3", "linear", True)]
    assert all(la.numel == dict(model.named_modules())[la.name].weight.numel() for la in layers)


def test_masks_cover_weights_only_never_biases_or_batch_norm():
    model = build_model("resnet-20", (3, 8, 8), 10)
    masks = pruning.full_masks(model, pruning.prunable_layers(model))
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], nn.Conv2d | nn.Linear) for n in masks)
    assert all(masks[n].shape == modules[n].weight.shape for n in masks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruning.apply_masks(model, {n: torch.zeros_like(m) for n, m in masks.items()})
    after = model.state_dict()
    for key, value in after.items():
        layer, _, param = key.rpartition(".")
        if layer in masks and param == "weight":
            assert not value.any(), key
        else:
            assert torch.equal(value, before[key]), f"{key} changed although it is not a pruned weight"


def test_default_rates_are_p_everywhere_and_output_rate_times_p_on_the_output_layer():
    layers = pruning.prunable_layers(mlp(4, 6, 5, 3))
    rates = pruning.layer_rates(layers, PruneConfig(prune_rate=0.2, output_rate=0.5))
    assert rates == pytest.approx({"fc1": 0.2, "fc2": 0.2, "fc3": 0.1})


def test_conv_rate_applies_to_conv_layers_only():
    layers = pruning.prunable_layers(build_model("conv-2", (1, 8, 8), 10))
    rates = pruning.layer_rates(layers, PruneConfig(prune_rate=0.2, conv_rate=0.1))
    assert rates == pytest.approx({"conv1": 0.1, "conv2": 0.1, "fc1": 0.2, "fc2": 0.2, "fc3": 0.2})


def test_rate_precedence_is_layer_rates_then_output_then_conv_then_p_and_ignore_sets_zero():
    layers = pruning.prunable_layers(build_model("conv-2", (1, 8, 8), 10))
    cfg = PruneConfig(prune_rate=0.2, conv_rate=0.1, output_rate=0.5, ignore=["conv1", "fc1"],
                      layer_rates={"conv2": 0.3, "output": 0.05})
    assert pruning.layer_rates(layers, cfg) == pytest.approx(
        {"conv1": 0.0, "conv2": 0.3, "fc1": 0.0, "fc2": 0.2, "fc3": 0.05})


@given(st.sets(st.sampled_from(["conv1", "fc1", "output"])), st.dictionaries(
    st.sampled_from(["conv2", "fc2", "output"]), st.sampled_from([0.1, 0.2, 0.3])),
    st.sampled_from([1.0, 0.5]), st.sampled_from([-1.0, 0.1, 0.2]))
def test_the_rates_and_the_shared_threshold_follow_one_precedence(ignore, given_rates, output_rate, conv_rate):
    """`layer_rates` and `pooled` read one rule (`rate_of`): a pooled layer is pruned at p, every other layer at
    the rate its reason gives, even when that number equals p."""
    assume(not ("output" in ignore and "output" in given_rates))
    layers = pruning.prunable_layers(build_model("conv-2", (1, 8, 8), 10))
    cfg = PruneConfig(prune_rate=0.2, output_rate=output_rate, conv_rate=conv_rate, ignore=sorted(ignore),
                      layer_rates=given_rates)
    rates, pool = pruning.layer_rates(layers, cfg), pruning.pooled(layers, cfg)
    for layer in layers:
        why, rate = pruning.rate_of(layer, cfg)
        assert rates[layer.name] == rate and (layer.name in pool) == (why is None)
        assert why is not None or rate == 0.2
        expected = ("ignore" if {layer.name, "output" if layer.is_output else ""} & ignore else
                    "layer_rates" if {layer.name, "output" if layer.is_output else ""} & set(given_rates) else
                    "output_rate" if layer.is_output and output_rate != 1.0 else
                    "conv_rate" if layer.kind == "conv" and conv_rate != -1.0 else None)
        assert why == expected


@pytest.mark.parametrize("layer_rates", [{"fc3": 0.1, "output": 0.05}, {"output": 0.05, "fc3": 0.1}])
def test_two_rates_for_one_layer_through_its_alias_are_refused_in_either_order(layer_rates):
    """Once resolved through a set, so the rate depended on PYTHONHASHSEED; now the conflict is an error."""
    layers = pruning.prunable_layers(mlp(4, 6, 5, 3))
    with pytest.raises(ConfigError, match=r"gives layer fc3 two rates \(.*0\.1.*0\.05|gives layer fc3 two rates"):
        pruning.layer_rates(layers, PruneConfig(layer_rates=layer_rates))


def test_the_same_rate_under_a_layer_name_and_its_alias_is_no_conflict():
    layers = pruning.prunable_layers(mlp(4, 6, 5, 3))
    assert pruning.layer_rates(layers, PruneConfig(layer_rates={"fc3": 0.1, "output": 0.1}))["fc3"] == 0.1


@pytest.mark.parametrize(("ignore", "layer_rates"), [(["fc3"], {"output": 0.1}), (["output"], {"fc3": 0.1}),
                                                    (["fc1"], {"fc1": 0.3})])
def test_a_layer_both_ignored_and_given_a_rate_is_refused(ignore, layer_rates):
    layers = pruning.prunable_layers(mlp(4, 6, 5, 3))
    with pytest.raises(ConfigError, match=r"is in ignore .* and in layer_rates"):
        pruning.layer_rates(layers, PruneConfig(ignore=ignore, layer_rates=layer_rates))


def test_output_alias_in_ignore_names_the_output_layer():
    layers = pruning.prunable_layers(mlp(4, 6, 3))
    assert pruning.layer_rates(layers, PruneConfig(ignore=["output"]))["fc2"] == 0.0


def test_unknown_layer_name_in_ignore_or_layer_rates_lists_the_real_layers():
    layers = pruning.prunable_layers(mlp(4, 6, 3))
    for cfg in (PruneConfig(ignore=["conv1"]), PruneConfig(layer_rates={"fc9": 0.1})):
        with pytest.raises(ConfigError, match="fc1, fc2, output"):
            pruning.layer_rates(layers, cfg)


def test_ignoring_every_layer_is_rejected():
    layers = pruning.prunable_layers(mlp(4, 6, 3))
    with pytest.raises(ConfigError, match="nothing can be pruned"):
        pruning.layer_rates(layers, PruneConfig(ignore=["fc1", "fc2"]))


# --------------------------------------------------------------------------- the rounding rule


@pytest.mark.parametrize(
    ("rate", "remaining", "removed"),
    [(0.5, 3, 2), (0.5, 1, 1), (0.25, 2, 1), (0.2, 2, 0), (0.2, 1000, 200), (0.99, 1, 1), (0.0, 10, 0)],
)
def test_n_to_remove_rounds_halves_up_and_never_exceeds_the_survivors(rate, remaining, removed):
    assert pruning.n_to_remove(rate, remaining) == removed


@given(widths=widths_st, rate=rate_st, rounds=st.integers(1, 5))
def test_layerwise_pruning_keeps_n_times_one_minus_p_to_the_r_within_r(widths, rate, rounds):
    model = mlp(*widths)
    history = prune_rounds(model, PruneConfig(prune_rate=rate, output_rate=1.0), rounds)
    for r, masks in enumerate(history):
        for name, m in masks.items():
            n = m.numel()
            assert abs(m.sum().item() - n * (1 - rate) ** r) <= r, (name, r)


@given(widths=widths_st, rate=rate_st, rounds=st.integers(1, 4))
def test_layerwise_pruning_removes_exactly_the_rounded_share_of_each_layers_survivors(widths, rate, rounds):
    model = mlp(*widths)
    history = prune_rounds(model, PruneConfig(prune_rate=rate, output_rate=1.0), rounds)
    for before, after in pairwise(history):
        for name in before:
            left = int(before[name].sum().item())
            assert int(after[name].sum().item()) == left - pruning.n_to_remove(rate, left)


@given(widths=widths_st, rate=rate_st, rounds=st.integers(1, 4), seed=st.integers(0, 100))
def test_layerwise_pruning_keeps_the_largest_magnitudes_of_each_layer(widths, rate, rounds, seed):
    model = mlp(*widths, seed=seed)
    history = prune_rounds(model, PruneConfig(prune_rate=rate), rounds)
    w = pruning.weights(model, history[0])
    for before, after in pairwise(history):
        for name in before:
            assert torch.all(after[name] <= before[name]), "a pruned weight came back"
            kept = w[name].detach().abs()[(before[name] == 1) & (after[name] == 1)]
            removed = w[name].detach().abs()[(before[name] == 1) & (after[name] == 0)]
            if len(kept) and len(removed):
                assert kept.min() >= removed.max()


def test_output_rate_one_half_prunes_the_output_layer_at_half_the_rate():
    model = mlp(30, 40, 40, 50)
    history = prune_rounds(model, PruneConfig(prune_rate=0.2, output_rate=0.5), rounds=3)
    for r, masks in enumerate(history):
        c = counts(masks)
        assert abs(c["fc3"] - 2000 * 0.9 ** r) <= r
        assert abs(c["fc1"] - 1200 * 0.8 ** r) <= r
    assert pruning.layer_density(history[-1])["fc3"] > pruning.layer_density(history[-1])["fc1"]


def test_ignored_layers_stay_dense():
    history = prune_rounds(mlp(8, 10, 10, 4), PruneConfig(prune_rate=0.5, ignore=["fc2"]), rounds=3)
    final = pruning.layer_density(history[-1])
    assert final["fc2"] == 1.0
    assert final["fc1"] < 0.2


def test_ties_are_broken_by_position_so_masks_are_deterministic():
    model = mlp(2, 5)
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
    cfg = PruneConfig(prune_rate=0.3)
    first, second = prune_rounds(model, cfg, 1)[1], prune_rounds(model, cfg, 1)[1]
    assert torch.equal(first["fc1"], second["fc1"])
    assert first["fc1"].flatten().tolist() == [1.0] * 7 + [0.0] * 3


# --------------------------------------------------------------------------- global scope


@given(widths=widths_st, rate=rate_st, rounds=st.integers(1, 4),
       scales=st.lists(st.floats(0.1, 10.0), min_size=4, max_size=4), seed=st.integers(0, 100))
def test_global_pruning_keeps_the_globally_largest_magnitudes(widths, rate, rounds, scales, seed):
    model = mlp(*widths, seed=seed, scales=tuple(scales))
    history = prune_rounds(model, PruneConfig(prune_rate=rate, scope="global"), rounds)
    for before, after in pairwise(history):
        kept = magnitudes(model, after, keep=True, among=before)
        removed = magnitudes(model, after, keep=False, among=before)
        if len(kept) and len(removed):
            assert kept.min() >= removed.max()
        left = pruning.remaining(before)
        assert pruning.remaining(after) == left - pruning.n_to_remove(rate, left)


def test_global_pruning_gives_layers_different_densities():
    model = mlp(20, 30, 30, 10, scales=(3.0, 1.0, 0.3))  # 600, 900, 300 weights
    final = prune_rounds(model, PruneConfig(prune_rate=0.4, scope="global"), 2)[-1]
    layer = pruning.layer_density(final)
    assert layer["fc1"] > layer["fc2"] > layer["fc3"]
    assert pruning.density(final) == pytest.approx(0.6**2, abs=2 / 1800)


def test_global_scope_leaves_layers_with_their_own_rate_out_of_the_shared_threshold():
    model = mlp(20, 30, 30, 10, scales=(3.0, 1.0, 0.001))
    cfg = PruneConfig(prune_rate=0.4, scope="global", output_rate=0.5)
    layers = pruning.prunable_layers(model)
    assert shared_layers(layers, cfg) == {"fc1", "fc2"}
    final = counts(prune_rounds(model, cfg, 1)[-1])
    assert final["fc3"] == 300 - pruning.n_to_remove(0.2, 300)  # tiny weights, yet only its own rate
    assert final["fc1"] + final["fc2"] == 1500 - pruning.n_to_remove(0.4, 1500)


def test_layerwise_scope_shares_no_threshold():
    layers = pruning.prunable_layers(mlp(4, 6, 3))
    cfg = PruneConfig(scope="layerwise")
    assert shared_layers(layers, cfg) == set()


@pytest.mark.parametrize("conv_rate", [0.2, 0.2000001, 0.1])
def test_global_pool_membership_is_structural_not_a_float_comparison(conv_rate):
    """conv_rate = p used to put conv layers in the pool and p + 1e-7 to keep them out; any conv_rate keeps them out."""
    layers = pruning.prunable_layers(build_model("conv-2", (1, 8, 8), 10))
    cfg = PruneConfig(prune_rate=0.2, scope="global", conv_rate=conv_rate)
    assert shared_layers(layers, cfg) == {"fc1", "fc2", "fc3"}
    assert shared_layers(layers, PruneConfig(prune_rate=0.2, scope="global")) == {
        "conv1", "conv2", "fc1", "fc2", "fc3"}
    named = PruneConfig(prune_rate=0.2, scope="global", layer_rates={"fc1": 0.2}, output_rate=0.5)
    assert shared_layers(layers, named) == {"conv1", "conv2", "fc2"}


# --------------------------------------------------------------------------- random masks (the control)


def test_random_masks_keep_each_layers_count_at_other_positions():
    model = mlp(20, 30, 30, 10, scales=(3.0, 1.0, 0.3))
    ticket = prune_rounds(model, PruneConfig(prune_rate=0.4, scope="global"), 3)[-1]
    randomly = pruning.random_masks(ticket, torch.Generator().manual_seed(0))
    assert counts(randomly) == counts(ticket)
    partial = [n for n in ticket if 0 < counts(ticket)[n] < ticket[n].numel()]
    assert partial and all(not torch.equal(randomly[n], ticket[n]) for n in partial)
    assert all(randomly[n].dtype == ticket[n].dtype and randomly[n].shape == ticket[n].shape for n in ticket)


def test_random_masks_are_reproducible_for_a_seeded_generator_and_differ_across_seeds():
    ticket = prune_rounds(mlp(10, 20, 5), PruneConfig(prune_rate=0.5), 1)[-1]
    a, b, c = (pruning.random_masks(ticket, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


# --------------------------------------------------------------------------- density and mask application


def test_density_and_layer_density_are_counted_from_the_masks():
    masks = {"a": torch.tensor([1.0, 0.0, 1.0, 1.0]), "b": torch.zeros(2, 3)}
    assert pruning.remaining(masks) == 3
    assert pruning.density(masks) == pytest.approx(3 / 10)
    assert pruning.layer_density(masks) == pytest.approx({"a": 0.75, "b": 0.0})
    assert pruning.density({}) == 1.0


def test_apply_masks_zeroes_exactly_the_pruned_weights():
    model = mlp(6, 8, 3)
    history = prune_rounds(model, PruneConfig(prune_rate=0.5), 1)
    before = {n: w.detach().clone() for n, w in pruning.weights(model, history[-1]).items()}
    pruning.apply_masks(model, history[-1])
    for name, w in pruning.weights(model, history[-1]).items():
        assert torch.equal(w, before[name] * history[-1][name])
        assert int((w != 0).sum()) == int(history[-1][name].sum())
    pruning.check_masks_hold(model, history[-1])


def test_check_masks_hold_reports_a_pruned_weight_that_is_not_zero():
    model = mlp(6, 8, 3)
    masks = prune_rounds(model, PruneConfig(prune_rate=0.5), 1)[-1]
    pruning.apply_masks(model, masks)
    pos = (masks["fc1"] == 0).nonzero()[0]
    with torch.no_grad():
        model.fc1.weight[tuple(pos)] = 1e-30
    with pytest.raises(AssertionError, match="1 pruned weights of fc1"):
        pruning.check_masks_hold(model, masks)


# --------------------------------------------------------------------------- planning rounds for a target density


@given(widths=st.lists(st.integers(2, 30), min_size=3, max_size=4), rate=st.floats(0.1, 0.6),
       target=st.floats(0.02, 0.9), scope=st.sampled_from(["layerwise", "global"]),
       output_rate=st.sampled_from([1.0, 0.5]))
def test_planned_rounds_reach_the_target_density_and_one_round_fewer_does_not(widths, rate, target, scope,
                                                                               output_rate):
    model = mlp(*widths)
    cfg = PruneConfig(prune_rate=rate, target_density=target, scope=scope, output_rate=output_rate)
    layers = pruning.prunable_layers(model)
    try:
        n = pruning.plan_rounds(layers, pruning.layer_rates(layers, cfg), shared_layers(layers, cfg), cfg)
    except ConfigError:
        assume(False)  # tiny layers can stall (round(q * n) == 0); the unreachable-target test covers it
        return
    history = prune_rounds(model, cfg, n)
    assert pruning.density(history[n]) <= target
    assert pruning.density(history[n - 1]) > target


def test_plan_rounds_uses_rounds_without_a_target_and_one_round_for_one_shot():
    layers = pruning.prunable_layers(mlp(10, 10, 10))
    rates = pruning.layer_rates(layers, PruneConfig())
    assert pruning.plan_rounds(layers, rates, set(), PruneConfig(rounds=7)) == 7
    assert pruning.plan_rounds(layers, rates, set(), PruneConfig(target_density=0.01, one_shot=True)) == 1


def test_target_below_what_the_ignored_layers_keep_is_unreachable():
    layers = pruning.prunable_layers(mlp(10, 100, 10))  # fc1 1000, fc2 1000 weights
    cfg = PruneConfig(target_density=0.4, ignore=["fc1"])
    with pytest.raises(ConfigError, match=r"unreachable.*ignored layers alone keep density 0\.5"):
        pruning.plan_rounds(layers, pruning.layer_rates(layers, cfg), shared_layers(layers, cfg), cfg)


@pytest.mark.parametrize(("ignore", "target"), [([], 0.5), ([], 0.013), (["fc1"], 0.3), (["output"], 0.45)])
def test_one_shot_rates_prune_to_the_target_in_one_step(ignore, target):
    model = mlp(30, 40, 40, 50)  # 1200, 1600, 2000 weights
    cfg = PruneConfig(target_density=target, one_shot=True, ignore=ignore)
    layers = pruning.prunable_layers(model)
    rates = pruning.layer_rates(layers, cfg)
    one = pruning.one_shot_rates(layers, rates, set(), target)
    masks = pruning.prune(model, pruning.full_masks(model, layers), one, set())
    assert pruning.density(masks) <= target
    assert pruning.density(masks) == pytest.approx(target, abs=len(layers) / sum(la.numel for la in layers))
    assert all(pruning.layer_density(masks)[n] == 1.0 for n, r in rates.items() if r == 0)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_one_shot_keeps_the_per_layer_ratios_so_the_output_loses_half_as_much(scope):
    """Frankle & Carbin prune the output layer at half the rate in one-shot pruning too."""
    model = mlp(30, 40, 40, 50)
    cfg = PruneConfig(prune_rate=0.2, output_rate=0.5, conv_rate=-1.0, target_density=0.3, one_shot=True, scope=scope)
    layers = pruning.prunable_layers(model)
    shared = shared_layers(layers, cfg)
    one = pruning.one_shot_rates(layers, pruning.layer_rates(layers, cfg), shared, 0.3)
    assert one["fc3"] == pytest.approx(one["fc1"] / 2) and one["fc1"] == pytest.approx(one["fc2"])
    masks = pruning.prune(model, pruning.full_masks(model, layers), one, shared)
    assert pruning.density(masks) == pytest.approx(0.3, abs=3 / 4800)
    assert pruning.layer_density(masks)["fc3"] > pruning.density(masks)


def test_one_shot_target_below_the_ignored_layers_is_rejected():
    layers = pruning.prunable_layers(mlp(10, 100, 10))
    cfg = PruneConfig(target_density=0.3, one_shot=True, ignore=["fc2"])
    with pytest.raises(ConfigError, match="unreachable in one shot"):
        pruning.one_shot_rates(layers, pruning.layer_rates(layers, cfg), set(), 0.3)


def test_one_shot_rate_is_the_plain_target_complement_when_every_layer_has_rate_p():
    layers = pruning.prunable_layers(mlp(10, 100, 10))
    rates = pruning.layer_rates(layers, PruneConfig())
    assert pruning.one_shot_rates(layers, rates, set(), 0.25)["fc1"] == pytest.approx(0.75, abs=1e-3)
    assert pruning.one_shot_rates(layers, rates, set(), 0.9)["fc2"] == pytest.approx(0.1, abs=1e-3)
