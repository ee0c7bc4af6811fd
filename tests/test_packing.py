"""Trial packing: a packed run gives every search exactly the numbers it gets alone.

The guarantee is bit-identity (tolerance 0): masks, early-stop iterations,
losses and accuracies of every round are compared with `==`, and final
weights with torch.equal.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from ltstudy.engine import pruning
from ltstudy.engine.config import TicketConfig, TrainConfig
from ltstudy.engine.drivers import drive_packed, run_packed, search_jobs
from ltstudy.engine.errors import DivergedError, StopSearch
from ltstudy.engine.models import build_model
from ltstudy.engine.packing import PackedTrainer, probe_layer
from ltstudy.engine.rounds import RoundJob, TrainResult
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.training import train
from tests.engine_helpers import OnEvaluation, OnNote, OnRoundEnd

# --------------------------------------------------------------------------- helpers


def record_dicts(result) -> list[dict]:
    """A TicketResult's rounds without their wall-clock times: everything else must match exactly."""
    return [{k: v for k, v in r.to_dict().items() if k != "wall_seconds"} for r in result.rounds]


def solo(cfg: TicketConfig, data) -> tuple:
    """The search run alone (ticket.drive), with its masks at every round."""
    search = ticket_search(cfg, data)
    masks: list[dict] = []
    result = search.run(OnRoundEnd(lambda rec: masks.append({n: m.clone() for n, m in search.masks.items()})))
    return result, masks


def packed(cfgs: list[TicketConfig], data, capacity: int, **kw) -> tuple[list, list[list[dict]]]:
    masks: list[list[dict]] = [[] for _ in cfgs]
    searches = [ticket_search(c, data) for c in cfgs]
    watchers = [OnRoundEnd(lambda rec, i=i: masks[i].append({n: m.clone() for n, m in searches[i].masks.items()}))
                for i in range(len(cfgs))]
    return run_packed(searches, capacity, watchers=watchers, **kw), masks



def assert_same_masks(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        assert all(torch.equal(ra[n], rb[n]) for n in ra)


def assert_same_as_solo(cfgs, results, masks, data) -> None:
    for cfg, res, m in zip(cfgs, results, masks, strict=True):
        alone, alone_masks = solo(cfg, data)
        assert record_dicts(res) == record_dicts(alone), cfg.to_dict()
        assert [r.early_stop_iteration for r in res.rounds] == [r.early_stop_iteration for r in alone.rounds]
        assert (res.stopped, res.kind, res.path) == (alone.stopped, alone.kind, alone.path)
        assert_same_masks(m, alone_masks)


def job_for(data, *, seed: int, rate: float, start: int, end: int, model: str = "lenet-300-100",
            train: dict | None = None, capture_at: int | None = None, constant_lr: float | None = None,
            dropout: float = 0.0, apply: bool = True) -> RoundJob:
    """A hand-made round: its own init, masks (one pruning step at `rate`, applied), config and span."""
    torch.manual_seed(seed)
    net = build_model(model, data.input_shape, data.num_classes, dropout)
    layers = pruning.prunable_layers(net)
    masks = pruning.prune(net, pruning.full_masks(net, layers), {layer.name: rate for layer in layers}, set())
    if apply:
        pruning.apply_masks(net, masks)
    cfg = TrainConfig(**{"batch_size": 60, "iterations": end, "eval_every": 10, **(train or {})})
    sched = TicketConfig(train=cfg).resolve_schedule(len(data.train))
    return RoundJob(1, net, masks, cfg, sched, data_seed=seed, dropout_seed=100 + seed, start=start, end=end,
                    capture_at=capture_at, constant_lr=constant_lr)


def clone_job(job: RoundJob) -> RoundJob:
    return dataclasses.replace(job, model=copy.deepcopy(job.model), masks={n: m.clone() for n, m in job.masks.items()})


def train_packed(jobs: list[RoundJob], data, capacity: int, **kw) -> tuple[PackedTrainer, dict[int, TrainResult]]:
    """Train the jobs in one pack until all have finished: the pack and each job's result by index."""
    pack = PackedTrainer(data, capacity=capacity, **kw)
    for i, job in enumerate(jobs):
        pack.add(job, i)
    results: dict[int, TrainResult] = {}
    while len(pack):
        results.update(pack.step())
    return pack, results


def trained_alone(jobs: list[RoundJob], data) -> tuple[list[TrainResult], list[RoundJob]]:
    """Each job trained on its own: the results, and the trained copies (the jobs are left untouched)."""
    alone = [clone_job(j) for j in jobs]
    return [train(j, data) for j in alone], alone


def assert_same_train_result(a: TrainResult, b: TrainResult) -> None:
    fa = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name not in ("wall_seconds", "snapshot")}
    fb = {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.name not in ("wall_seconds", "snapshot")}
    assert fa == fb
    assert (a.snapshot is None) == (b.snapshot is None)
    if a.snapshot is not None:
        assert a.snapshot.keys() == b.snapshot.keys()
        assert all(torch.equal(a.snapshot[k], b.snapshot[k]) for k in a.snapshot)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


# --------------------------------------------------------------------------- whole searches


def test_packed_searches_of_lenet_equal_their_solo_runs(tiny_cfg, digits):
    """Different p, k, seeds, re-inits, a random-reinit control, global/layerwise scope, dropout, SGD and patience.

    Five searches in three slots: slots are refilled as searches finish.
    """
    cfgs = [
        tiny_cfg(prune__rounds=2),
        tiny_cfg(seed=1, prune__rounds=2, prune__prune_rate=0.5, prune__rewind_iter=10, prune__scope="global"),
        tiny_cfg(seed=2, prune__rounds=2, prune__reinit="lr-rewind", prune__rewind_iter=20, train__warmup=10,
                 train__milestones=[30], train__gamma=0.5, train__weight_decay=1e-3),
        tiny_cfg(seed=3, prune__rounds=2, prune__reinit="finetune", prune__rewind_iter=20, model__dropout=0.3,
                 train__patience=1, train__eval_every=10),
        tiny_cfg(seed=4, prune__rounds=2, prune__reinit="random", prune__rewind_iter=5, train__optimizer="sgd",
                 train__lr=0.05, train__momentum=0.9, train__nesterov=True, train__weight_decay=1e-3),
    ]
    results, masks = packed(cfgs, digits, capacity=3)
    assert [r.kind for r in results] == ["ticket"] * 4 + ["control"]
    assert any(r.stopped_early for r in results[3].rounds)  # patience really ended a round early
    assert_same_as_solo(cfgs, results, masks, digits)


def test_packed_searches_of_conv2_equal_their_solo_runs(tiny_cfg, digits):
    """conv-2 on 1x8x8 digits: grouped convolutions, max-pooling, and conv1 (1 input channel) per member."""
    base = {"model.name": "conv-2", "train.iterations": 30, "train.eval_every": 10, "prune.rounds": 1}
    cfgs = [
        tiny_cfg(base),
        tiny_cfg(base, seed=1, prune__prune_rate=0.5, prune__rewind_iter=5, prune__scope="global"),
        tiny_cfg(base, seed=2, prune__reinit="lr-rewind", prune__rewind_iter=10, train__weight_decay=1e-2,
                 train__milestones=[20]),
    ]
    results, masks = packed(cfgs, digits, capacity=3)
    assert_same_as_solo(cfgs, results, masks, digits)


def test_slots_are_refilled_as_sources_finish(tiny_cfg, digits):
    """Six searches through two slots: never more than two in flight, the next pulled when one ends."""
    cfgs = [tiny_cfg(seed=s, prune__rounds=1 + s % 3, train__iterations=20, train__eval_every=10,
                     prune__prune_rate=0.2 + 0.1 * s) for s in range(6)]
    finished: list[int] = []
    pulled_after: list[int] = []

    def source(i):
        result = yield from search_jobs(ticket_search(cfgs[i], digits))
        finished.append(i)
        return result

    def sources():
        for i in range(len(cfgs)):
            pulled_after.append(len(finished))
            yield source(i)

    results = drive_packed(sources(), digits, capacity=2)
    # search j is pulled only when fewer than two are in flight, and some are pulled while others still train
    assert all(j - done < 2 for j, done in enumerate(pulled_after)), pulled_after
    assert pulled_after[2] >= 1 and pulled_after[-1] < 5
    assert sorted(finished) == list(range(6))
    for cfg, res in zip(cfgs, results, strict=True):
        assert record_dicts(res) == record_dicts(solo(cfg, digits)[0])


def test_narrow_packs_stepped_in_blocks_give_the_same_numbers(tiny_cfg, digits, monkeypatch):
    sizes: list[int] = []
    add = PackedTrainer.add

    def spy(self, job, token=None):
        add(self, job, token)
        sizes.append(len(self))

    monkeypatch.setattr(PackedTrainer, "add", spy)
    cfgs = [tiny_cfg(seed=s, prune__rounds=1 + s % 2, prune__rewind_iter=7 * s) for s in range(4)]
    results, masks = packed(cfgs, digits, capacity=4, width=2, block=3)
    assert max(sizes) == 2
    assert_same_as_solo(cfgs, results, masks, digits)


# --------------------------------------------------------------------------- members of one pack


def test_members_at_different_iterations_and_schedules_share_steps(digits):
    """One pack, three members at iterations 0, 13 and 27, with their own lr schedules, spans and patience."""
    jobs = [
        job_for(digits, seed=0, rate=0.5, start=0, end=40, capture_at=10,
                train={"warmup": 5, "milestones": [20], "gamma": 0.3, "lr": 2e-3}),
        job_for(digits, seed=1, rate=0.2, start=13, end=40, constant_lr=1e-4, train={"weight_decay": 1e-2}),
        job_for(digits, seed=2, rate=0.8, start=27, end=35, train={"patience": 1, "eval_every": 1, "lr": 0.3}),
    ]
    expected, alone = trained_alone(jobs, digits)

    pack = PackedTrainer(digits, capacity=3)
    for i, job in enumerate(jobs):
        pack.add(job, i)
    ended_at: dict[int, int] = {}
    results: dict[int, TrainResult] = {}
    steps = 0
    while len(pack):
        steps += 1
        for token, outcome in pack.step():
            assert isinstance(outcome, TrainResult)
            ended_at[token], results[token] = steps, outcome
    # one iteration per member per step: each ends after exactly its own number of iterations
    assert ended_at == {i: results[i].end - results[i].start for i in range(3)}
    assert results[2].stopped_early and ended_at[2] < 8
    for i, job in enumerate(jobs):
        assert_same_train_result(results[i], expected[i])
        assert same_weights(job.model, alone[i].model)
    assert results[0].snapshot is not None


def test_augmented_members_crop_and_flip_as_train_does(digits):
    data = dataclasses.replace(digits, augment=True)
    jobs = [job_for(data, seed=s, rate=0.3 * s, start=5 * s, end=20) for s in range(3)]
    expected = [train(clone_job(j), data) for j in jobs]
    _, results = train_packed(jobs, data, capacity=3)
    for i in range(3):
        assert_same_train_result(results[i], expected[i])


def test_convolutions_run_member_by_member_when_their_stacked_output_is_large(digits, monkeypatch):
    """The list layout: every conv, ReLU and pool on tensors of the unpacked size, stacked only at Flatten."""
    from ltstudy.engine.packing import _layers, _net

    monkeypatch.setattr(_net, "GROUPED_CONV_MAX_BYTES", 0)
    jobs = [job_for(digits, seed=s, rate=0.4 * s, start=3 * s, end=12, model="conv-2",
                    train={"optimizer": "sgd", "lr": 0.05, "momentum": 0.5}) for s in range(2)]
    expected, alone = trained_alone(jobs, digits)
    pack, results = train_packed(jobs, digits, capacity=2)
    convs = [i for i, layer in enumerate(pack.net.layers) if isinstance(layer, _layers.PackedConv)]
    assert convs and not any(pack.net.plan(2)[i] for i in convs)
    for i in range(2):
        assert_same_train_result(results[i], expected[i])
        assert same_weights(jobs[i].model, alone[i].model)


def test_inexact_mode_batches_everything_and_stays_close(digits):
    """exact=False skips the probes: conv1's grouped form then rounds differently, within float tolerance."""
    jobs = [job_for(digits, seed=s, rate=0.5, start=0, end=10, model="conv-2") for s in range(2)]
    alone = [clone_job(j) for j in jobs]
    expected = [train(j, digits) for j in alone]
    pack, results = train_packed(jobs, digits, capacity=2, exact=False)
    assert all(pack.net.plan(2)[i] for i, layer in enumerate(pack.net.layers) if layer.batchable)
    for i in range(2):
        assert results[i].val_loss == pytest.approx(expected[i].val_loss, abs=1e-4)
        for p, q in zip(jobs[i].model.parameters(), alone[i].model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-4)


@pytest.mark.parametrize("model, train", [
    ("lenet-300-100", {"optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-2}),
    ("conv-2", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
], ids=["lenet-adam+wd", "conv2-sgd-nesterov+wd"])
def test_masks_and_optimizer_state_hold_after_every_packed_step(digits, model, train):
    jobs = [job_for(digits, seed=s, rate=r, start=0, end=12, model=model, train=train)
            for s, r in enumerate((0.5, 0.8, 0.3))]
    keys = ("exp_avg", "exp_avg_sq") if train["optimizer"] == "adam" else ("momentum_buffer",)
    pack = PackedTrainer(digits, capacity=3)
    for i, job in enumerate(jobs):
        pack.add(job, i)
    for _ in range(6):
        pack.step()
        for i in range(3):
            view = pack.inspect(i)
            for name, w in view["weights"].items():
                pruned = view["masks"][name] == 0
                assert pruned.any() and not w[pruned].any(), f"member {i}: pruned weights of {name} are not 0"
                for key in keys:
                    state = view["optimizer"][f"{name}.weight"][key]
                    assert state is not None and not state[pruned].any(), f"member {i}: {key} of {name} leaks"


@pytest.mark.parametrize("optimizer", [{"optimizer": "adam", "weight_decay": 1e-2},
                                       {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}],
                         ids=["adam+wd", "sgd-momentum+wd"])
def test_a_start_state_with_live_pruned_weights_is_masked_before_training_as_train_does(digits, optimizer):
    """The masks define the network from the first step: train() and a pack mask such a start state first."""
    jobs = [job_for(digits, seed=0, rate=0.5, start=0, end=15, train=optimizer),
            job_for(digits, seed=1, rate=0.5, start=0, end=15, train=optimizer, apply=False)]
    expected, alone = trained_alone(jobs, digits)
    _, results = train_packed(jobs, digits, capacity=2)
    for i in range(2):
        assert_same_train_result(results[i], expected[i])
        assert same_weights(jobs[i].model, alone[i].model)
        pruning.check_masks_hold(jobs[i].model, jobs[i].masks)


def test_a_diverging_member_gets_diverged_error_and_its_pack_mates_their_solo_numbers(tiny_cfg, digits):
    sgd = {"train.optimizer": "sgd", "train.momentum": 0.9, "prune.rounds": 1}
    cfgs = [tiny_cfg(sgd, train__lr=0.05), tiny_cfg(sgd, seed=1, train__lr=1e6), tiny_cfg(sgd, seed=2, train__lr=0.02)]
    with pytest.raises(DivergedError) as alone:
        ticket_search(cfgs[1], digits).run()
    results, masks = packed(cfgs, digits, capacity=3, return_exceptions=True)
    assert isinstance(results[1], DivergedError)
    assert (str(results[1]), results[1].iteration) == (str(alone.value), alone.value.iteration)
    assert_same_as_solo([cfgs[0], cfgs[2]], [results[0], results[2]], [masks[0], masks[2]], digits)


def test_without_return_exceptions_divergence_propagates_and_the_other_sources_are_closed(tiny_cfg, digits):
    closed: list[int] = []

    def source(i, cfg):
        try:
            return (yield from search_jobs(ticket_search(cfg, digits)))
        finally:
            closed.append(i)

    cfgs = [tiny_cfg(prune__rounds=3), tiny_cfg(seed=1, train__optimizer="sgd", train__lr=1e6)]
    with pytest.raises(DivergedError):
        drive_packed((source(i, c) for i, c in enumerate(cfgs)), digits, capacity=2)
    assert sorted(closed) == [0, 1]


def test_a_source_may_catch_the_divergence_thrown_into_it(tiny_cfg, digits):
    """The thrown DivergedError arrives at the generator's `yield job`; what it returns is its result."""
    search = ticket_search(tiny_cfg(train__optimizer="sgd", train__lr=1e6), digits)

    def source():
        events = search_jobs(search)
        job = next(events)
        try:
            yield job
        except DivergedError as exc:
            return ("diverged", exc.iteration)
        return "trained"

    assert drive_packed([source()], digits, capacity=1) == [("diverged", 20)]


def test_a_model_without_packed_form_is_trained_unpacked_with_one_note(tiny_cfg, digits):
    cfgs = [tiny_cfg(model__name="resnet-20", train__iterations=10, train__eval_every=10),
            tiny_cfg(seed=1, prune__rounds=2)]
    assert PackedTrainer.supports(ticket_search(cfgs[0], digits).job(0)) is not None
    assert PackedTrainer.supports(ticket_search(cfgs[1], digits).job(0)) is None
    notes: list[str] = []
    results, masks = packed(cfgs, digits, capacity=2, callbacks=OnNote(notes.append))
    assert len(notes) == 1 and "ResNet20" in notes[0] and "unpacked" in notes[0]
    assert_same_as_solo(cfgs, results, masks, digits)


# --------------------------------------------------------------------------- the driver's protocol


def test_drive_packed_answers_other_events_with_none_and_returns_in_pull_order(tiny_cfg, digits):
    replies: list = []

    def source(value, cfg):
        replies.append((yield "not a job"))
        result = yield from search_jobs(ticket_search(cfg, digits))
        return value, len(result.rounds)

    def quick():
        return "quick"
        yield  # a generator that ends without a job

    cfgs = [tiny_cfg(prune__rounds=2), tiny_cfg(seed=1, prune__rounds=1)]
    out = drive_packed([source("a", cfgs[0]), quick(), source("b", cfgs[1])], digits, capacity=2)
    assert out == [("a", 3), "quick", ("b", 2)]
    assert replies == [None, None]


def test_progress_is_reported_at_the_same_points_as_unpacked(tiny_cfg, digits):
    cfg = tiny_cfg(prune__rewind_iter=10, train__eval_every=15)
    seen: dict[str, list] = {"solo": [], "packed": []}
    def progress(key):
        return OnEvaluation(lambda job, it, ev: seen[key].append((job.label, it - job.start, job.end - job.start)))

    ticket_search(cfg, digits).run(progress("solo"))
    drive_packed([search_jobs(ticket_search(cfg, digits))], digits, capacity=1, callbacks=progress("packed"))
    assert seen["packed"] == seen["solo"] == [("round 0", 15, 60), ("round 0", 30, 60), ("round 0", 45, 60),
                                              ("round 0", 60, 60), ("round 1", 5, 50), ("round 1", 20, 50),
                                              ("round 1", 35, 50), ("round 1", 50, 50)]


def test_stop_search_from_on_round_ends_that_search_as_drive_does(tiny_cfg, digits):
    def stopper(rec):
        if rec.round == 1:
            raise StopSearch("enough")

    cfg = tiny_cfg(prune__rounds=3)
    alone = ticket_search(cfg, digits).run(OnRoundEnd(stopper))
    other = tiny_cfg(seed=1, prune__rounds=2)
    out = drive_packed([search_jobs(ticket_search(cfg, digits), OnRoundEnd(stopper)),
                        search_jobs(ticket_search(other, digits))], digits, capacity=2)
    assert out[0].stopped == "enough" and len(out[0].rounds) == 2
    assert record_dicts(out[0]) == record_dicts(alone)
    assert record_dicts(out[1]) == record_dicts(solo(other, digits)[0])


def test_an_exception_escaping_a_source_is_raised_or_returned(tiny_cfg, digits):
    def broken():
        yield from ()
        raise ValueError("bug in a trial")

    with pytest.raises(ValueError, match="bug in a trial"):
        drive_packed([broken()], digits, capacity=1)
    out = drive_packed([broken(), search_jobs(ticket_search(tiny_cfg(), digits))], digits, capacity=2,
                       return_exceptions=True)
    assert isinstance(out[0], ValueError) and len(out[1].rounds) == 2


# --------------------------------------------------------------------------- the exactness probes


def test_member_by_member_layers_are_bit_identical_to_the_unpacked_layers():
    """The fallback of a layer whose batched kernel is not exact: it must always be."""
    assert probe_layer(nn.Linear(300, 100), 3, (60, 300), "member", True, batched=False)
    assert probe_layer(nn.Linear(100, 10, bias=False), 2, (60, 100), "member", True, batched=False)
    assert probe_layer(nn.Conv2d(1, 8, 3, padding=1), 3, (60, 1, 8, 8), "member", False, batched=False)
    assert probe_layer(nn.Conv2d(8, 8, 3, padding=1), 3, (60, 8, 8, 8), "group", True, batched=False)


def test_a_batched_kernel_that_is_not_exact_is_caught_and_the_layer_runs_member_by_member(monkeypatch, digits):
    """Skew the batched Linear's weight gradient by one part in 2^20: the probe sees it, the numbers don't."""
    from ltstudy.engine.packing import _layers, _probes

    original = _layers.PackedLinear.backward

    def skewed(self, g, need_input_grad):
        gx = original(self, g, need_input_grad)
        if self.batched:
            self.grads[0][:self.n].mul_(1 + 2 ** -20)
        return gx

    monkeypatch.setattr(_layers.PackedLinear, "backward", skewed)
    monkeypatch.setattr(_probes, "_PROBES", {})
    assert not probe_layer(nn.Linear(300, 100), 2, (60, 300), "member", True, batched=True)
    assert probe_layer(nn.Linear(300, 100), 2, (60, 300), "member", True, batched=False)

    jobs = [job_for(digits, seed=s, rate=0.5, start=0, end=20) for s in range(2)]
    expected = [train(clone_job(j), digits) for j in jobs]
    pack, results = train_packed(jobs, digits, capacity=2)
    assert not any(pack.net.plan(2))  # every Linear runs member by member
    for i in range(2):
        assert_same_train_result(results[i], expected[i])
