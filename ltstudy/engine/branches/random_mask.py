"""The paper's random pruning control: a uniformly random mask with the ticket's per-layer densities.

Frankle & Carbin test "the importance of a winning ticket's structure" by
pruning at random instead, keeping each layer's pruned fraction: level r keeps
exactly as many weights in each layer as the ticket's m_r, chosen uniformly
from that level's own seeded stream, and starts like the ticket (θ_k for
rewinding, the trained weights for fine-tuning).
"""

from __future__ import annotations

from .base import Branch


class RandomMask(Branch):
    label = "random mask"
    mask_form = "random"

    def mask(self, level):
        import torch

        from .. import pruning
        from ..seeds import RANDOM_MASK, derived_seed

        generator = torch.Generator().manual_seed(derived_seed(level.seeds.mask, RANDOM_MASK, level.round))
        return pruning.random_masks(level.masks(), generator)
