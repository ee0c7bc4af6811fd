"""Compression and theoretical speedup, with ShrinkBench's definitions, against a tiny conv net counted by hand."""

from __future__ import annotations

import math

import pytest
from torch import nn

from ltstudy.engine.compression import CostModel
from ltstudy.study.objectives import parse_objective


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)  # 1x6x6 -> 2x4x4 (no padding)
        self.conv2 = nn.Conv2d(2, 4, 3, stride=2, padding=1)  # -> 4x2x2
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.conv2(self.conv1(x).relu()).relu().flatten(1))


def test_flops_count_a_convolution_by_its_output_size_and_the_params_include_the_biases():
    cost = CostModel.of(Tiny(), (1, 6, 6))
    # A direct convolution: c_in x c_out x k_h x k_w multiply-adds per output position.
    assert cost.flops == {"conv1": 1 * 2 * 3 * 3 * (4 * 4), "conv2": 2 * 4 * 3 * 3 * (2 * 2), "fc": 16 * 3}
    assert cost.weights == {"conv1": 18, "conv2": 72, "fc": 48}
    assert cost.params == 18 + 72 + 48 + (2 + 4 + 3)


def test_a_rounds_numbers_follow_from_its_per_layer_densities():
    got = CostModel.of(Tiny(), (1, 6, 6)).of_round({"conv1": 0.5, "conv2": 0.25, "fc": 16 / 48})
    kept = 9 + 18 + 16
    assert got["compression_ratio"] == pytest.approx(138 / kept)
    assert (got["params_total"], got["params_nonzero"]) == (147, kept + 9)  # the biases are all kept
    assert got["compression_ratio_all_params"] == pytest.approx(147 / (kept + 9))
    assert got["dense_flops"] == 288 + 288 + 48
    assert got["nonzero_flops"] == pytest.approx(288 * 0.5 + 288 * 0.25 + 48 / 3)
    assert got["theoretical_speedup"] == pytest.approx(624 / 232)


def test_the_count_leaves_the_model_as_it_was():
    model = Tiny().train()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    CostModel.of(model, (1, 6, 6))
    assert model.training and all((before[n] == p).all() for n, p in model.state_dict().items())


def test_every_round_of_a_search_carries_them_and_the_objective_reads_the_tickets(tiny_cfg, make_search):
    result = make_search(tiny_cfg(prune__rounds=2, prune__prune_rate=0.5, prune__output_rate=0.5)).run()
    dense, *pruned = (r.metrics for r in result.rounds)
    # LeNet-300-100 on digits' 64 inputs: every weight is one multiply-add per example.
    assert dense["dense_flops"] == dense["nonzero_flops"] == 64 * 300 + 300 * 100 + 100 * 10
    assert dense["theoretical_speedup"] == dense["compression_ratio"] == 1.0
    for r, m in zip(result.rounds[1:], pruned, strict=True):
        assert m["compression_ratio"] == pytest.approx(1 / r.density)
        assert m["nonzero_flops"] == r.weights_remaining  # (for fully connected layers, flops = weights)
        assert m["theoretical_speedup"] == pytest.approx(dense["dense_flops"] / r.weights_remaining)
        assert m["params_nonzero"] == r.weights_remaining + (300 + 100 + 10)
    rounds = [r.to_dict() for r in result.rounds]
    objective = parse_objective("theoretical_speedup")
    ticket = max((r for r in rounds if r["val_accuracy"] >= rounds[0]["val_accuracy"] - 0.05),
                 key=lambda r: (r["theoretical_speedup"], r["val_accuracy"]))
    assert objective.value(rounds, 0.05) == ticket["theoretical_speedup"]
    assert math.isnan(objective.value([{k: v for k, v in r.items() if k != "theoretical_speedup"}
                                       for r in rounds], 0.05))  # a trial stored before: no number, not 0
