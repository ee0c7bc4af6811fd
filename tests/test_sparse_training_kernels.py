"""SET and RigL on the sparse kernels (`[train] kernels = "sparse"`): each mask update rebuilds the CSR structure,
carries the survivors' weights and optimiser state over exactly and starts the grown ones at zero, so a run gives
the dense kernels' masks exactly and their weights to float tolerance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltstudy.engine import pruning
from ltstudy.engine.branches.rigl import RigLUpdates
from ltstudy.engine.branches.set_sparse import SetUpdates
from ltstudy.engine.steps import SparseStep
from ltstudy.engine.training import train
from tests.engine_helpers import OnStep, plain_job

OPTIMIZERS = {"adam": {"optimizer": "adam", "weight_decay": 1e-4},
              "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}}
STATE = {"adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}


def lenet_with_masks(digits, density: float = 0.2, seed: int = 0):
    from ltstudy.engine.models import build_model

    torch.manual_seed(seed)
    model = build_model("lenet-300-100", digits.input_shape, digits.num_classes, 0.0)
    g = torch.Generator().manual_seed(5)
    masks = {n: pruning.keep_largest(torch.rand(w.numel(), generator=g), round(density * w.numel())).view_as(w)
             for n, w in pruning.weights(model, [layer.name for layer in pruning.prunable_layers(model)]).items()}
    pruning.apply_masks(model, masks)
    return model, masks


def structure_is(layer, mask: torch.Tensor) -> bool:
    """Whether a SparseLinear's CSR structure (and its transpose's) is exactly the mask's nonzeros."""
    want, want_t = mask.to_sparse_csr(), mask.t().contiguous().to_sparse_csr()
    return all(torch.equal(a.crow_indices().long(), b.crow_indices()) and
               torch.equal(a.col_indices().long(), b.col_indices())
               for a, b in ((layer.csr, want), (layer.csr_t, want_t)))


@pytest.mark.parametrize("kind", [SetUpdates, RigLUpdates])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_set_and_rigl_on_the_sparse_kernels_give_the_dense_kernels_masks_exactly_and_weights_to_float_tolerance(
        tiny_cfg, digits, kind, optimizer):
    cfg = tiny_cfg(train__iterations=40)
    out = {}
    for kernels in ("dense", "sparse"):
        model, masks = lenet_with_masks(digits)
        start = {n: m.clone() for n, m in masks.items()}
        train_cfg = dataclasses.replace(cfg.train, kernels=kernels, **OPTIMIZERS[optimizer])
        seen = []

        def check(job, it, lr, step, masks=masks, seen=seen):
            seen.append(type(step))
            for i, layer in getattr(step, "sparse", {}).items():  # the structure is the mask after every step
                assert structure_is(layer, masks[step._names[i]]), (it, i)

        job = plain_job(model, masks, train_cfg, cfg.resolve_schedule(len(digits.train)),
                        mask_updates=kind(every=10, end=40, drop_fraction=0.3, seed=3))
        result = train(job, digits, OnStep(check))
        pruning.check_masks_hold(model, masks)
        out[kernels] = (model.state_dict(), masks, start, seen, result)
    (dense, dense_masks, start, dense_steps, dense_result), (sparse, sparse_masks, _, sparse_steps, sparse_result) = (
        out["dense"], out["sparse"])
    assert set(sparse_steps) == {SparseStep} and SparseStep not in dense_steps
    # Masks identical, not merely close: the drop ranks magnitudes and RigL's growth ranks dense gradients, so a
    # difference beyond float noise (a survivor's value or moment lost in the rebuild) moves a position. (Near-ties
    # closer than float noise could flip too; this seed has none: the same run passes on both kernels.)
    assert all(torch.equal(sparse_masks[n], dense_masks[n]) for n in dense_masks)
    assert all(not torch.equal(sparse_masks[n], start[n]) for n in start)  # (they moved, in every layer)
    assert any(not torch.equal(sparse[k], dense[k]) for k in dense)  # (another kernel: not the same bits)
    for k in dense:
        assert torch.allclose(sparse[k], dense[k], atol=2e-4, rtol=1e-3), k
    # evaluation (the sparse forward pass on the sparse kernels) reads each state through its own mask
    for field in ("val_loss", "train_loss", "start_test_accuracy", "test_accuracy", "test_accuracy_at_early_stop"):
        assert getattr(sparse_result, field) == pytest.approx(getattr(dense_result, field), abs=1e-4), field
    assert sparse_result.early_stop_iteration == dense_result.early_stop_iteration


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_an_update_rebuilds_the_csr_structure_and_carries_survivors_state_exactly_grown_ones_at_zero(
        tiny_cfg, digits, optimizer):
    model, masks = lenet_with_masks(digits)
    train_cfg = dataclasses.replace(tiny_cfg().train, kernels="sparse", **OPTIMIZERS[optimizer])
    step = SparseStep(model, masks, train_cfg, torch.device("cpu"))
    step.set_lr(train_cfg.lr)
    x, y = digits.train.x[:60], digits.train.y[:60]
    for _ in range(3):
        step(x, y)
    step.sync()
    w = pruning.weights(model, masks)
    before = {n: (w[n].detach().clone(), {k: step.state(w[n])[k].clone() for k in STATE[optimizer]}) for n in w}
    changes = RigLUpdates(every=10, end=40, drop_fraction=0.3).update(10, model, masks, step, (x, y))
    step.masks_changed(changes)
    assert set(changes) == set(masks) == {step._names[i] for i in step.sparse}
    for i, layer in step.sparse.items():
        name = step._names[i]
        mask, grown = masks[name].view(-1).bool(), changes[name].grown
        kept = mask.clone()
        kept[grown] = False
        assert structure_is(layer, masks[name])
        assert step.params[2 * i] is layer.values  # (the optimiser steps the new structure's values)
        value = layer.dense(layer.values).view(-1)
        assert torch.equal(value[kept], before[name][0].view(-1)[kept]) and not value[grown].any()
        for key, was in before[name][1].items():
            now = step.state(w[name])[key].view(-1)
            assert torch.equal(now[kept], was.view(-1)[kept]), key  # survivors: exactly as they were
            assert not now[grown].any() and was.view(-1)[grown].abs().sum() == 0  # grown: zero (and pruned before)
            assert not now[~mask].any()  # dropped and pruned: no state
    loss = step(x, y)  # and it trains on the new structure
    step.sync()
    assert torch.isfinite(loss)
    pruning.check_masks_hold(model, masks)
