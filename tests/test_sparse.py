"""The sparse kernels (`[train] kernels`): a pruned fully connected layer trains as CSR, with the dense path's numbers
to float tolerance, its masks exactly, and the same bits run after run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ltstudy.engine import crossover, pruning
from ltstudy.engine.config import TicketConfig, TrainConfig
from ltstudy.engine.errors import SettingWarning
from ltstudy.engine.rounds import RoundJob
from ltstudy.engine.sparse import SPARSE_BELOW, SPARSE_MIN_WEIGHTS, SparseLinear, csr_pays, run_chain, trains_sparse
from ltstudy.engine.steps import LeanStep, SparseStep, make_step
from ltstudy.engine.training import train


def masked_layer(out_features=30, in_features=40, density=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(out_features, in_features, generator=g) < density).float()
    weight = torch.randn(out_features, in_features, generator=g) * mask
    return mask, weight, torch.randn(out_features, generator=g)


def test_a_sparse_layers_output_and_gradients_are_autograds_on_the_masked_dense_layer():
    mask, weight, bias = masked_layer()
    layer = SparseLinear(mask, weight)
    x = torch.randn(8, 40, requires_grad=True)
    w = weight.clone().requires_grad_(True)
    y = F.linear(x, w, bias)
    g = torch.randn_like(y)
    y.backward(g)
    kept, out = layer.forward(x.detach(), bias)
    assert torch.allclose(out, y.detach(), atol=1e-5) and torch.equal(kept, x.detach())
    for rows in (x.detach(), x.detach()[:1]):  # (evaluation's chain: a batch, and one example)
        assert torch.allclose(run_chain([(layer.csr, bias, False)], rows), F.linear(rows, weight, bias), atol=1e-5)
    g_t = g.t().contiguous()
    assert torch.allclose(layer.weight_grad(g_t, kept), w.grad[mask.bool()], atol=1e-5)  # (row-major order)
    assert torch.allclose(layer.input_grad(g_t), x.grad, atol=1e-5)
    fresh = torch.zeros_like(weight)
    layer.write(fresh)
    assert torch.equal(fresh, weight)


@pytest.mark.parametrize("optimizer", [{"optimizer": "adam", "weight_decay": 1e-4},
                                       {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}])
def test_a_round_on_the_sparse_kernels_is_the_dense_rounds_within_float_tolerance_and_keeps_the_masks(
        tiny_cfg, make_search, digits, optimizer):
    search = make_search(tiny_cfg({"train.iterations": 40, "prune.rounds": 1, "prune.prune_rate": 0.8}))
    search.run()  # (round 1: 20% density, every layer sparse with kernels = "sparse")
    start = {n: t.clone() for n, t in search.model.state_dict().items()}
    ends = {}
    for kernels in ("dense", "sparse", "sparse"):
        search.model.load_state_dict(start)
        cfg = TrainConfig(**{**vars(search.cfg.train), **optimizer, "kernels": kernels, "iterations": 150})
        sched = TicketConfig(train=cfg).resolve_schedule(len(digits.train))
        res = train(RoundJob(1, search.model, search.masks, cfg, sched, 3, 4, 0, 150), digits)
        pruning.check_masks_hold(search.model, search.masks)  # (pruned weights exactly 0)
        ends.setdefault(kernels, []).append(({n: t.clone() for n, t in search.model.state_dict().items()}, res))
    (dense, dense_res), = ends["dense"]
    (sparse, sparse_res), (again, _) = ends["sparse"]
    assert all(torch.equal(sparse[n], again[n]) for n in sparse)  # deterministic
    assert any(not torch.equal(sparse[n], dense[n]) for n in sparse)  # (another kernel: not the same bits)
    for n in dense:
        assert torch.allclose(sparse[n], dense[n], atol=2e-4, rtol=1e-3), n
    assert sparse_res.val_loss == pytest.approx(dense_res.val_loss, abs=1e-3)


def test_the_model_holds_the_sparse_steps_weights_whenever_the_trainer_lets_anything_read_it(
        tiny_cfg, make_search, digits):
    """The values are written back lazily: at θ_k, at each on_step, and at the end of a round with no evaluation."""
    from ltstudy.engine.callbacks import Callback

    search = make_search(tiny_cfg({"train.iterations": 40, "prune.rounds": 1, "prune.prune_rate": 0.8}))
    search.run()
    start = {n: t.clone() for n, t in search.model.state_dict().items()}
    cfg = TrainConfig(**{**vars(search.cfg.train), "kernels": "sparse", "iterations": 30})
    sched = TicketConfig(train=cfg).resolve_schedule(len(digits.train))

    class Seen(Callback):
        def __init__(self):
            self.weights: list[torch.Tensor] = []

        def on_step(self, job, iteration, lr, step) -> None:
            self.weights.append(job.model.fc1.weight.detach().clone())

    def run(callbacks=None, evaluate=True):
        search.model.load_state_dict(start)
        job = RoundJob(1, search.model, search.masks, cfg, sched, 3, None, 0, 30, capture_at=7, evaluate=evaluate)
        res = train(job, digits, callbacks)
        return res, {n: t.clone() for n, t in search.model.state_dict().items()}

    seen = Seen()
    res, end = run(seen)
    assert len(seen.weights) == 30 and all(not torch.equal(a, b) for a, b in zip(seen.weights, seen.weights[1:]))
    assert torch.equal(seen.weights[-1], end["fc1.weight"])
    assert torch.equal(res.snapshot["fc1.weight"], seen.weights[6])  # θ_7: the weights after 7 steps
    quiet, quiet_end = run(evaluate=False)  # (no evaluation point reads the model: only the round's end)
    assert all(torch.equal(quiet_end[n], end[n]) for n in end) and not torch.equal(end["fc1.weight"],
                                                                                   start["fc1.weight"])
    assert torch.equal(quiet.snapshot["fc1.weight"], seen.weights[6])


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Crossovers as if timed: {(out, in, first): density} (0.2 for other layers), kept in a file of the test's;
    the shapes "measured" are recorded."""
    monkeypatch.setenv("LTSTUDY_CROSSOVERS", str(tmp_path / "crossovers.json"))
    monkeypatch.setattr(crossover, "_known", {})
    table: dict[tuple[int, int, bool], float] = {}
    calls: list[tuple] = []

    def measure(out_features, in_features, batch_size, first, optimizer):
        calls.append((out_features, in_features, batch_size, first, optimizer))
        return {"crossover": table.get((out_features, in_features, first), 0.2), "ratios": {}}

    monkeypatch.setattr(crossover, "measure", measure)
    return table, calls


def with_density(shape, density):
    mask = torch.zeros(shape)
    mask.view(-1)[: round(mask.numel() * density)] = 1
    return mask


def test_auto_trains_a_layer_sparse_below_the_crossover_measured_for_its_shape_and_batch(measured):
    table, calls = measured
    table[(300, 784, True)], table[(100, 300, False)] = 0.3, 0.1
    cfg = TrainConfig(kernels="auto", batch_size=60)
    assert trains_sparse(with_density((300, 784), 0.25), cfg, first=True)
    assert not trains_sparse(with_density((100, 300), 0.25), cfg, first=False)  # (this shape's crossover: 10%)
    assert trains_sparse(with_density((100, 300), 0.05), cfg, first=False)
    assert not trains_sparse(with_density((300, 784), 0.35), cfg, first=True)
    # each shape timed once, at the run's batch size and optimiser
    assert calls == [(300, 784, 60, True, "adam"), (100, 300, 60, False, "adam")]
    small = with_density((10, 100), 0.05)
    table[(10, 100, False)] = 0.0  # (a layer whose sparse step never wins)
    assert not trains_sparse(small, cfg, first=False) and trains_sparse(small, TrainConfig(kernels="sparse"), False)
    assert not trains_sparse(torch.ones(10, 10), TrainConfig(kernels="sparse"), False)  # (nothing pruned)
    assert not any(trains_sparse(m, TrainConfig(kernels="dense"), True) for m in (small, with_density((9, 9), 0.1)))


def test_a_machine_keeps_its_crossovers_so_a_later_run_chooses_the_same_without_timing(measured, tmp_path):
    table, calls = measured
    table[(300, 784, True)] = 0.3
    assert crossover.crossover(300, 784, 60, True, "adam") == 0.3
    kept = json.loads((tmp_path / "crossovers.json").read_text())
    assert kept[crossover.fingerprint()][f"300x784 batch 60 first adam threads {torch.get_num_threads()}"][
        "crossover"] == 0.3
    crossover._known.clear()  # (another process on this machine)
    table[(300, 784, True)] = 0.9  # (what timing would say now: not asked)
    assert crossover.crossover(300, 784, 60, True, "adam") == 0.3 and len(calls) == 1
    assert crossover.crossover(300, 784, 120, True, "adam") == 0.9 and len(calls) == 2  # (another batch size)
    (tmp_path / "crossovers.json").write_text("{not json")  # a damaged file is measured again and rewritten
    crossover._known.clear()
    assert crossover.crossover(300, 784, 60, True, "adam") == 0.9
    assert json.loads((tmp_path / "crossovers.json").read_text())


@pytest.mark.parametrize("ratios, expected", [
    ({0.6: 2.0, 0.25: 1.2, 0.1: 0.8, 0.015: 0.3}, 0.1 + 0.15 * 0.2 / 0.4),  # between the rungs either side
    ({0.6: 0.9, 0.015: 0.2}, 0.6),  # sparse won at the top
    ({0.015: 1.3}, 0.0),  # and nowhere
])
def test_the_crossover_is_interpolated_where_sparse_over_dense_time_crosses_one(ratios, expected):
    assert crossover.crossover_of(ratios) == pytest.approx(expected)


def test_timing_a_layer_gives_a_crossover_on_the_ladder_and_the_ratios_it_read(monkeypatch):
    monkeypatch.setattr(crossover, "WINDOWS", 1)
    found = crossover.measure(12, 20, 4, False, "sgd")
    ratios = {float(d): r for d, r in found["ratios"].items()}
    assert set(ratios) <= set(crossover.LADDER) and 0.015 in ratios and all(r > 0 for r in ratios.values())
    assert found["crossover"] == pytest.approx(crossover.crossover_of(ratios))


def test_an_exported_models_layers_run_as_csr_by_the_fixed_rule():
    big, small = torch.ones(300, 784), torch.ones(10, 100)
    assert big.numel() >= SPARSE_MIN_WEIGHTS > small.numel()
    sparse_big, dense_big = big.clone(), big.clone()
    sparse_big.view(-1)[: int(big.numel() * (1 - SPARSE_BELOW)) + 1] = 0
    dense_big.view(-1)[: int(big.numel() * (1 - SPARSE_BELOW)) - 100] = 0
    assert csr_pays(sparse_big) and not csr_pays(dense_big)
    small[:, :95] = 0
    assert not csr_pays(small) and not csr_pays(None)


def test_the_step_is_sparse_only_where_asked_and_on_the_cpu(tiny_cfg, make_search, measured):
    search = make_search(tiny_cfg({"prune.rounds": 1, "prune.prune_rate": 0.9}))
    search.run()
    model, masks = search.model, search.masks
    measured[0][(10, 100, False)] = 0.0  # (the output layer's sparse step never wins on this "machine")
    for kernels, sparse_layers in (("dense", None), ("sparse", [0, 1, 2]), ("auto", [0, 1])):
        cfg = TrainConfig(kernels=kernels)
        step = make_step(model, masks, cfg, torch.device("cpu"))
        if sparse_layers is None:
            assert type(step) is LeanStep
        else:
            assert isinstance(step, SparseStep) and sorted(step.sparse) == sparse_layers
    assert not SparseStep.supports(model, TrainConfig(kernels="sparse"), torch.device("cuda"))


def test_the_kernels_are_in_the_cache_key_and_the_study_settings_but_dense_leaves_both_as_they_were(
        tiny_cfg, make_search, tmp_path):
    from ltstudy.study.config import load_study
    from tests.study_helpers import write_study

    dense, sparse = make_search(tiny_cfg()), make_search(tiny_cfg(train__kernels="sparse"))
    assert dense.dense_key != sparse.dense_key
    assert dense.rounds_key != sparse.rounds_key
    # (a study made before the setting existed has the same settings, so it continues)
    assert "kernels" not in load_study(write_study(tmp_path, train={"kernels": "dense"})).settings()["train"]
    assert load_study(write_study(tmp_path, train={"kernels": "auto"})).settings()["train"]["kernels"] == "auto"


def test_sparse_kernels_on_a_conv_net_warn_that_it_trains_dense(tiny_cfg, make_search):
    with pytest.warns(SettingWarning, match="train.kernels = sparse: .* conv-2 on cpu trains dense"):
        make_search(tiny_cfg(model__name="conv-2", data__name="digits", train__kernels="sparse"))


@pytest.mark.parametrize("overlap", [False, True])
def test_evaluation_runs_through_the_sparse_forward_pass_with_the_dense_passs_numbers(tiny_cfg, make_search, digits,
                                                                                     overlap):
    from ltstudy.engine.round_protocol import evaluate
    from ltstudy.engine.sparse import SparseEval

    search = make_search(tiny_cfg({"prune.rounds": 1, "prune.prune_rate": 0.9}))
    search.run()
    model, masks = search.model, search.masks
    cfg = TrainConfig(kernels="sparse")
    sparse = SparseEval.of(model, masks, cfg, torch.device("cpu"))
    assert sorted(sparse.layers) == sorted(masks)
    dense = evaluate(model, digits.val, 64)
    through = evaluate(model, digits.val, 64, sparse=sparse)
    assert through.accuracy == dense.accuracy and through.loss == pytest.approx(dense.loss, abs=1e-5)
    other = {n: t * 0.5 for n, t in model.state_dict().items()}  # (a snapshot: not the model's own weights)
    assert evaluate(model, digits.val, 64, state=other, sparse=sparse).loss == pytest.approx(
        evaluate(model, digits.val, 64, state=other).loss, abs=1e-5)
    # A round trained sparse evaluates sparse at every point (and the test reads), overlapped or not.
    from ltstudy.engine import round_protocol

    calls = []
    real = round_protocol.evaluate

    def spy(model, split, batch_size, state=None, sparse=None):
        calls.append(sparse is not None)
        return real(model, split, batch_size, state, sparse)

    round_protocol.set_overlap_eval(overlap)
    try:
        import unittest.mock

        with unittest.mock.patch.object(round_protocol, "evaluate", spy):
            tc = TrainConfig(kernels="sparse", iterations=40, eval_every=10)
            train(RoundJob(1, model, masks, tc, TicketConfig(train=tc).resolve_schedule(len(digits.train)), 0, None,
                           0, 40), digits)
    finally:
        round_protocol.set_overlap_eval(False)
    # 4 validation points; the test reads of the start, the final state and the early-stop one (unless that is final)
    assert len(calls) in (4 + 2, 4 + 3) and all(calls)


def test_an_exported_tickets_sparse_model_predicts_what_the_dense_one_does_in_a_fraction_of_the_memory(
        tiny_cfg, digits, tmp_path):
    from ltstudy.engine.errors import ConfigError
    from ltstudy.engine.export import TicketSaver, load_ticket
    from ltstudy.engine.searches import ticket_search

    cfg = tiny_cfg({"prune.rounds": 3, "prune.prune_rate": 0.6})
    ticket_search(cfg, digits).run(TicketSaver(tmp_path, cfg, {3}))
    ticket = load_ticket(tmp_path / "round_03")
    dense, sparse = ticket.model("trained").eval(), ticket.sparse_model()
    with torch.no_grad():
        for batch in (1, 1000):
            x = digits.test.x[:batch]
            assert torch.allclose(sparse(x), dense(x), atol=1e-5)
            assert torch.equal(sparse(x).argmax(1), dense(x).argmax(1))
    csr = [m for m in sparse if hasattr(m, "nbytes")]
    assert len(csr) == 2  # fc1 and fc2; fc3 (1,000 weights) stays a dense Linear: too small for CSR to pay
    dense_bytes = sum(p.numel() * 4 for p in dense.parameters())
    kept = sum(m.nbytes() for m in csr) + sum(p.numel() * 4 for p in sparse.parameters())
    # 0.4^3 = 6.4% of fc1 and fc2 kept: values and int32 column indices, 8 bytes a weight, and the row pointers
    assert kept < 0.2 * dense_bytes
    conv = tiny_cfg(model__name="conv-2")
    conv_saver = TicketSaver(tmp_path / "conv", conv, {1})
    ticket_search(conv, digits).run(conv_saver)
    with pytest.raises(ConfigError, match="covers fully connected networks"):
        load_ticket(conv_saver.written[0]).sparse_model()


def test_the_sparse_chain_takes_an_empty_batch_and_leaves_a_network_starting_with_relu_to_the_dense_path():
    from torch import nn

    from ltstudy.engine.errors import ConfigError
    from ltstudy.engine.sparse import sparse_model, sparse_supported

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(400, 100), nn.ReLU(inplace=True), nn.Linear(100, 10)).eval()
    masks = {"1": (torch.rand(100, 400) < 0.05).float()}
    with torch.no_grad():
        net[1].weight.mul_(masks["1"])
        empty = torch.zeros(0, 1, 20, 20)
        assert sparse_model(net, masks)(empty).shape == net(empty).shape == (0, 10)
    relu_first = nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(400, 10))
    assert not sparse_supported(relu_first, TrainConfig(kernels="sparse"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="a Linear layer first"):
        sparse_model(relu_first, {})
