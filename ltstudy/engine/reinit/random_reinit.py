"""The paper's random re-initialisation control: the ticket's mask with a fresh θ'0 from the same distribution.

Frankle & Carbin: "we randomly reinitialize each winning ticket": level r keeps
the rewound ticket's mask m_r and trains a new draw θ'0 ~ D_θ from iteration 0.
Each level draws from its own seeded stream, without touching the global RNG's
state for anything else.
"""

from __future__ import annotations

import torch

from ..models.layers import init_weights
from ..seeds import REINIT, derived_seed
from .base import Reinit, Start


class RandomReinit(Reinit):
    control = True
    path = "rewind"
    label = "random re-init"

    def start(self, sched) -> int:
        return 0

    def reset(self, model, start: Start) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(start.seed, REINIT, start.round))
            init_weights(model)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
