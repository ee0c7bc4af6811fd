"""The paper's random re-initialisation control: the ticket's mask m_r with a fresh θ'0 from the same distribution.

Frankle & Carbin: "we randomly reinitialize each winning ticket": level r keeps
the rewound ticket's mask m_r and trains a new draw θ'0 ~ D_θ from iteration 0,
each level from its own seeded stream, without touching the global RNG's state.
"""

from __future__ import annotations

from .base import Branch


class RandomReinit(Branch):
    label = "random re-init"
    fresh_init = True
