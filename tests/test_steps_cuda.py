"""The CUDA-graph step, where CUDA is present (this project's machines have no GPU: skipped there)."""

from __future__ import annotations

import pytest
import torch

from ltstudy.engine import pruning
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.steps import CudaGraphStep
from tests.engine_helpers import train_plain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


@pytest.mark.parametrize("optimizer", [{"train.optimizer": "adam", "train.weight_decay": 1e-3},
                                       {"train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.9}])
@pytest.mark.parametrize("model", ["lenet-300-100", "conv-2"])
def test_the_cuda_graph_step_trains_like_the_eager_step_and_masks_hold(tiny_cfg, optimizer, model):
    cfg = tiny_cfg({**optimizer, "device": "cuda", "model.name": model, "train.iterations": 60,
                    "train.eval_every": 20, "prune.rounds": 1, "prune.prune_rate": 0.5})
    states, kinds = [], []
    for graph in (True, False):
        search = ticket_search(cfg)
        search.train_round(0)
        search.prune_and_reset(1)
        res = train_plain(search.model, search.data, search.masks, cfg.train, search.sched, seed=0, lean=graph,
                          on_step=lambda it, lr, step: kinds.append(type(step).__name__))
        pruning.check_masks_hold(search.model, search.masks)
        states.append(({k: v.detach().cpu() for k, v in search.model.state_dict().items()}, res))
    assert CudaGraphStep.__name__ in kinds and "AutogradStep" in kinds
    (graph_state, graph_res), (eager_state, eager_res) = states
    for k in eager_state:
        assert torch.allclose(graph_state[k].float(), eager_state[k].float(), rtol=1e-3, atol=1e-5), k
    assert abs(graph_res.val_accuracy - eager_res.val_accuracy) <= 0.02
