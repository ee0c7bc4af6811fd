"""Masked training: masks hold after every step, lr schedule, early stopping, divergence."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltstudy.engine import pruning
from ltstudy.engine.config import Schedule, TrainConfig
from ltstudy.engine.data import Split
from ltstudy.engine.device import resolve_device
from ltstudy.engine.errors import ConfigError, DivergedError
from ltstudy.engine.round_protocol import evaluate
from ltstudy.engine.steps import make_optimizer
from ltstudy.engine.ticket import TicketSearch
from ltstudy.engine.training import lr_at
from tests.engine_helpers import OnStep, train_plain


@pytest.fixture
def step_hook():
    """fn(iteration, lr, step) after every optimiser step of a search run with the returned callback."""
    hooks = []
    callback = OnStep(lambda job, it, lr, step: [fn(it, lr, step) for fn in hooks])
    yield lambda fn: (hooks.append(fn), callback)[1]


def schedule(iterations=100, warmup=0, milestones=(), eval_every=10, rewind_iter=0) -> Schedule:
    return Schedule(iterations=iterations, iterations_per_epoch=10, warmup=warmup, milestones=tuple(milestones),
                    eval_every=eval_every, rewind_iter=rewind_iter)


# --------------------------------------------------------------------------- learning-rate schedule


def test_lr_is_constant_without_warmup_or_milestones():
    cfg = TrainConfig(lr=0.5)
    assert {lr_at(i, cfg, schedule()) for i in range(100)} == {0.5}


def test_warmup_rises_linearly_to_the_peak_then_stays():
    cfg, sched = TrainConfig(lr=1.0), schedule(warmup=4)
    assert [lr_at(i, cfg, sched) for i in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_milestones_multiply_the_lr_by_gamma_from_that_iteration_on():
    cfg, sched = TrainConfig(lr=1.0, gamma=0.1), schedule(milestones=(10, 20))
    assert [lr_at(i, cfg, sched) for i in (0, 9, 10, 19, 20, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_and_milestones_combine():
    cfg, sched = TrainConfig(lr=2.0, gamma=0.5), schedule(warmup=4, milestones=(2,))
    assert [lr_at(i, cfg, sched) for i in range(5)] == pytest.approx([0.5, 1.0, 0.75, 1.0, 1.0])


def test_training_steps_use_the_scheduled_lr(make_search, tiny_cfg):
    cfg = tiny_cfg(train__iterations=30, train__warmup=5, train__milestones=[12, 25], train__gamma=0.5,
                   train__eval_every=10)
    search = make_search(cfg)
    seen = []
    train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0,
          on_step=lambda it, lr, step: seen.append(step.lr if hasattr(step, "lr") else
                                                   step.opt.param_groups[0]["lr"]))
    assert seen == pytest.approx([lr_at(i, cfg.train, search.sched) for i in range(30)])


def test_constant_lr_replaces_the_schedule(make_search, tiny_cfg):
    cfg = tiny_cfg(train__iterations=30, train__warmup=5, train__eval_every=10)
    search = make_search(cfg)
    seen = []
    result = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0, start=10,
                   constant_lr=3e-4, on_step=lambda it, lr, step: seen.append(lr))
    assert seen == [3e-4] * 20
    assert (result.start, result.end, result.iterations) == (10, 30, 20)


# --------------------------------------------------------------------------- optimisers


def test_make_optimizer_builds_the_configured_optimiser():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = make_optimizer(params, TrainConfig(optimizer="adam", lr=0.1, weight_decay=0.01), torch.device("cpu"))
    sgd = make_optimizer(params, TrainConfig(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True),
                         torch.device("cpu"))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 0.01
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["nesterov"]) == (0.2, 0.9, True)


OPTIMISERS = {
    "adam+wd": {"optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-2},
    "sgd-momentum+wd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
    "sgd-nesterov+wd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
}


@pytest.mark.parametrize("model", ["conv-2", "lenet-300-100"], ids=["autograd-step", "lean-step"])
@pytest.mark.parametrize("train_cfg", OPTIMISERS.values(), ids=OPTIMISERS.keys())
def test_pruned_weights_and_their_optimiser_state_are_zero_after_every_step(make_search, tiny_cfg, step_hook,
                                                                            train_cfg, model):
    """Checked right after each optimiser step (the weights are never re-masked after it: nothing may leak)."""
    cfg = tiny_cfg({f"train.{k}": v for k, v in train_cfg.items()}, model__name=model, train__iterations=20,
                   train__eval_every=10, prune__rounds=2, prune__prune_rate=0.5)
    search = make_search(cfg)
    state_key = "exp_avg" if train_cfg["optimizer"] == "adam" else "momentum_buffer"
    steps, sparse_steps, leaks = [0], [0], []

    def check(it, lr, step):
        steps[0] += 1
        pruned_any = False
        for name, w in pruning.weights(search.model, search.masks).items():
            pruned = search.masks[name] == 0
            pruned_any |= bool(pruned.any())
            if w[pruned].any():
                leaks.append(f"step {steps[0]}: weight {name}")
            state = step.state(w)
            assert state_key in state, "the optimiser keeps no state for the weights; the check would be empty"
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in state and state[key][pruned].any():
                    leaks.append(f"step {steps[0]}: {key} of {name}")
        sparse_steps[0] += pruned_any

    result = search.run(step_hook(check))
    assert not leaks, leaks[:5]
    assert steps[0] == sum(r.iterations for r in result.rounds) == 60
    assert sparse_steps[0] == 40  # rounds 1 and 2 trained with pruned weights
    assert result.rounds[-1].density == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("train_cfg", OPTIMISERS.values(), ids=OPTIMISERS.keys())
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_lean_step_gives_autograds_numbers_bit_for_bit(make_search, tiny_cfg, train_cfg, dropout):
    cfg = tiny_cfg({f"train.{k}": v for k, v in train_cfg.items()}, model__dropout=dropout, train__iterations=50,
                   train__eval_every=10, prune__rounds=1, prune__prune_rate=0.5)
    runs, kinds = [], []
    for lean in (True, False):
        search = make_search(cfg)
        search.train_round(0)
        search.prune_and_reset(1)
        result = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0, dropout_seed=3,
                       lean=lean, on_step=lambda it, lr, step: kinds.append(type(step).__name__))
        runs.append(({k: v.clone() for k, v in search.model.state_dict().items()}, result))
    (lean_state, lean_res), (auto_state, auto_res) = runs
    assert kinds[0] == "LeanStep" and kinds[-1] == "AutogradStep"
    assert all(torch.equal(lean_state[k], auto_state[k]) for k in auto_state)
    assert (lean_res.val_loss, lean_res.train_loss, lean_res.early_stop_iteration) == (
        auto_res.val_loss, auto_res.train_loss, auto_res.early_stop_iteration)


def test_pruned_weights_stay_zero_at_every_evaluation(make_search, tiny_cfg):
    """The same guarantee seen through on_eval with eval_every = 1, on the real train loop."""
    cfg = tiny_cfg(train__iterations=15, train__eval_every=1, train__weight_decay=0.1)
    search = make_search(cfg)
    search.train_round(0)
    search.prune_and_reset(1)
    nonzero = []

    def on_eval(done, ev):
        for name, w in pruning.weights(search.model, search.masks).items():
            nonzero.append(int(((search.masks[name] == 0) & (w != 0)).sum()))

    train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0, on_eval=on_eval)
    assert len(nonzero) == 15 * 3
    assert sum(nonzero) == 0


# --------------------------------------------------------------------------- evaluation and early stopping


def test_evaluate_uses_eval_mode_and_restores_the_training_flag(digits):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.Dropout(0.5),
                                torch.nn.Linear(64, 10))
    model.train()
    a, b = evaluate(model, digits.val, 50), evaluate(model, digits.val, 7)
    assert model.training
    assert a.loss == pytest.approx(b.loss, rel=1e-5)  # dropout off, batching irrelevant
    assert a.accuracy == b.accuracy
    assert 0.0 <= a.accuracy <= 1.0 and a.loss > 0


def test_early_stop_is_the_evaluation_with_minimum_validation_loss(make_search, tiny_cfg):
    cfg = tiny_cfg(train__iterations=70, train__eval_every=20, train__lr=0.02)
    search = make_search(cfg)
    evals = []
    result = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0,
                   on_eval=lambda done, ev: evals.append((done, ev.loss, ev.accuracy)))
    assert [done for done, _, _ in evals] == [20, 40, 60, 70]  # multiples of eval_every, and the end
    best = min(evals, key=lambda e: e[1])
    assert result.early_stop_iteration == best[0]
    assert (result.val_loss, result.val_accuracy) == (best[1], best[2])
    assert 0.0 <= result.test_accuracy <= 1.0 and 0.0 <= result.test_accuracy_at_early_stop <= 1.0


def test_test_split_is_reported_but_never_selects_anything(make_search, tiny_cfg, digits):
    """Scrambling the test labels changes the test accuracy and nothing else."""
    g = torch.Generator().manual_seed(0)
    scrambled = dataclasses.replace(digits, test=Split(digits.test.x, digits.test.y[torch.randperm(
        len(digits.test), generator=g)]))
    cfg = tiny_cfg(train__iterations=60, train__eval_every=10)
    honest = make_search(cfg).run().rounds
    fooled = TicketSearch(cfg, data=scrambled).run().rounds
    for a, b in zip(honest, fooled):
        assert (a.early_stop_iteration, a.val_loss, a.val_accuracy, a.density) == (
            b.early_stop_iteration, b.val_loss, b.val_accuracy, b.density)
        assert a.test_accuracy != b.test_accuracy


def test_the_test_split_is_read_only_before_training_at_the_early_stop_state_and_at_the_end(
        make_search, tiny_cfg, monkeypatch):
    """Never at the intermediate evaluation points: the test split is reported, not monitored."""
    import ltstudy.engine.round_protocol as protocol

    reads, real = [], protocol.evaluate

    def spy(model, split, batch_size, state=None, sparse=None):
        name = "test" if split is search.data.test else "val" if split is search.data.val else "?"
        reads.append((name, state is not None))
        return real(model, split, batch_size, state=state, sparse=sparse)

    cfg = tiny_cfg(train__iterations=200, train__eval_every=10, train__lr=0.05)  # 20 evaluation points
    search = make_search(cfg)
    monkeypatch.setattr(protocol, "evaluate", spy)
    result = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0)
    tests = [r for r in reads if r[0] == "test"]
    assert reads[0] == ("test", True)  # the start state, before any step
    assert sum(1 for r in reads if r[0] == "val") == 20  # every evaluation point, and nothing more
    assert result.early_stop_iteration < 200, "the lr is meant to overfit so that early stop comes before the end"
    # Three reads: the start state, the early-stop snapshot (both passed as states) and the final weights.
    assert sorted(tests) == [("test", False), ("test", True), ("test", True)]


def test_the_early_stop_test_accuracy_is_that_of_the_early_stop_state(make_search, tiny_cfg):
    cfg = tiny_cfg(train__iterations=200, train__eval_every=10, train__lr=0.05)
    search = make_search(cfg)
    es = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0).early_stop_iteration
    again = make_search(cfg)
    upto = dataclasses.replace(cfg.train, iterations=es)
    part = train_plain(again.model, again.data, again.masks, upto, dataclasses.replace(again.sched, iterations=es),
                       seed=0)
    full = make_search(cfg)
    result = train_plain(full.model, full.data, full.masks, cfg.train, full.sched, seed=0)
    assert result.test_accuracy_at_early_stop == part.test_accuracy  # the state at iteration es, evaluated on test
    assert result.test_accuracy != result.test_accuracy_at_early_stop or es == 200


def test_patience_ends_a_round_after_that_many_evaluations_without_a_lower_validation_loss(make_search, tiny_cfg):
    cfg = tiny_cfg(train__iterations=400, train__eval_every=10, train__lr=0.05, train__patience=3)
    evals = []
    search = make_search(cfg)
    result = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0,
                   on_eval=lambda done, ev: evals.append((done, ev.loss)))
    assert result.stopped_early and result.end == evals[-1][0] < 400
    best = min(range(len(evals)), key=lambda i: evals[i][1])
    assert len(evals) - 1 - best == 3  # three evaluations after the best, then stop
    assert result.early_stop_iteration == evals[best][0] and result.iterations == result.end
    off = make_search(tiny_cfg(train__iterations=400, train__eval_every=10, train__lr=0.05))
    plain_evals = []
    plain = train_plain(off.model, off.data, off.masks, off.cfg.train, off.sched, seed=0,
                  on_eval=lambda done, ev: plain_evals.append((done, ev.loss)))
    assert not plain.stopped_early and plain.end == 400
    assert plain_evals[:len(evals)] == evals  # the same run up to the stop: patience only cuts it short


def test_dropout_masks_come_from_the_seeded_generator_not_the_global_rng(make_search, tiny_cfg):
    cfg = tiny_cfg(model__dropout=0.5, train__iterations=20, train__eval_every=10)
    runs = []
    for global_seed in (1, 2):
        search = make_search(cfg)
        torch.manual_seed(global_seed)  # must not matter
        train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0, dropout_seed=7)
        runs.append(search.model.fc1.weight.detach().clone())
    other = make_search(cfg)
    train_plain(other.model, other.data, other.masks, cfg.train, other.sched, seed=0, dropout_seed=8)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], other.model.fc1.weight.detach())


def test_a_nan_loss_raises_diverged_error(make_search, tiny_cfg):
    search = make_search(tiny_cfg(train__optimizer="sgd", train__lr=1e6, train__eval_every=10))
    with pytest.raises(DivergedError, match="lower the learning rate"):
        search.run()


# --------------------------------------------------------------------------- devices


def test_resolve_device_gives_cpu_for_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_cuda_raises_config_error_and_auto_falls_back_to_cpu():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("patience", [0, 2])
def test_validation_overlapped_with_training_gives_the_same_numbers(make_search, tiny_cfg, patience):
    """On a spare core, validation runs beside training; every number, early stop and patience included, is equal."""
    cfg = tiny_cfg(train__iterations=300, train__eval_every=10, train__lr=0.05, train__patience=patience,
                   prune__rewind_iter=250)
    runs = []
    for overlap in (False, True):
        search = make_search(cfg)
        evals = []
        res = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0, capture_at=250,
                    overlap_eval=overlap,
                    on_eval=lambda done, ev, evals=evals: evals.append((done, ev.loss, ev.accuracy)))
        state = {k: v.clone() for k, v in search.model.state_dict().items()}
        runs.append((res, evals, state))
    (sync, sync_evals, sync_state), (over, over_evals, over_state) = runs
    assert over_evals == sync_evals
    assert (over.val_loss, over.val_accuracy, over.early_stop_iteration, over.test_accuracy,
            over.test_accuracy_at_early_stop, over.train_loss, over.end, over.stopped_early) == (
        sync.val_loss, sync.val_accuracy, sync.early_stop_iteration, sync.test_accuracy,
        sync.test_accuracy_at_early_stop, sync.train_loss, sync.end, sync.stopped_early)
    assert all(torch.equal(over_state[k], sync_state[k]) for k in sync_state)  # patience went back to its stop
    assert (over.snapshot is None) == (sync.snapshot is None)
    if patience:
        assert sync.stopped_early and sync.end < 300


# --------------------------------------------------------------------------- the CUDA-graph step's wiring


def test_the_solo_trainer_hands_make_step_its_first_batch_and_takes_the_graph_step_where_supported(
        make_search, tiny_cfg, monkeypatch):
    """On CUDA a graph is captured with a batch of the run's shape; checked here with `supports` stubbed."""
    import ltstudy.engine.steps as steps

    made = []

    class Graph(steps.AutogradStep):  # stands in for CudaGraphStep: records what it was built with
        @staticmethod
        def supports(model, cfg, device):
            return True

        def __init__(self, model, masks, cfg, device, x, y):
            made.append((x.clone(), y.clone()))
            super().__init__(model, masks, cfg, device)

    monkeypatch.setattr(steps, "CudaGraphStep", Graph)
    cfg = tiny_cfg(model__name="conv-2", train__iterations=20, train__eval_every=10)  # (not a lean-step model)
    search = make_search(cfg)
    kinds = []
    train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=4, start=3,
                on_step=lambda it, lr, step: kinds.append(type(step).__name__))
    assert set(kinds) == {"Graph"} and len(made) == 1
    from ltstudy.engine.data import Batches

    batches = Batches(len(search.data.train), cfg.train.batch_size, 4, "cpu")
    x, y = made[0]
    assert torch.equal(x, search.data.train.x.index_select(0, batches.indices(3)))  # the run's first batch
    assert torch.equal(y, batches.labels(3, search.data.train.y))
    lenet = make_search(tiny_cfg(train__iterations=20, train__eval_every=10))
    kinds.clear()
    train_plain(lenet.model, lenet.data, lenet.masks, lenet.cfg.train, lenet.sched, seed=0,
                on_step=lambda it, lr, step: kinds.append(type(step).__name__))
    assert set(kinds) == {"LeanStep"}  # on the CPU the lean step comes first for LeNet-style networks
