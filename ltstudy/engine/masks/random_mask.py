"""The paper's random pruning control: a uniformly random mask with the ticket's per-layer densities.

Frankle & Carbin test "the importance of a winning ticket's structure" by
pruning at random instead, keeping each layer's pruned fraction: level r keeps
exactly as many weights in each layer as the ticket's m_r, chosen uniformly
from that level's own seeded stream.
"""

from __future__ import annotations

import torch

from .. import pruning
from ..seeds import RANDOM_MASK, derived_seed
from .base import MaskRule


class RandomMask(MaskRule):
    control = True
    path = "magnitude"
    label = "random mask"

    def for_level(self, ticket_masks, seed, round_):
        generator = torch.Generator().manual_seed(derived_seed(seed, RANDOM_MASK, round_))
        return pruning.random_masks(ticket_masks, generator)
