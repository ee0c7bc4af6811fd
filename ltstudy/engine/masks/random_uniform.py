"""Random pruning at initialisation (Frankle et al., ICLR 2021's baseline): every pruned layer at the same density.

Unlike the random-mask control, which keeps the ticket's per-layer densities,
this one spreads the ticket's remaining weights evenly over the layers it
prunes, at random positions from the mask seed's stream.
"""

from __future__ import annotations

import torch

from .. import pruning
from ..seeds import AT_INIT_DATA, derived_seed
from .at_init import AtInit


class RandomUniform(AtInit):
    method = "random, uniform"
    scope = "uniform"

    def raw_scores(self, model, names, data, seed):
        generator = torch.Generator().manual_seed(derived_seed(seed, AT_INIT_DATA, -1))
        return {n: torch.rand(w.numel(), generator=generator) for n, w in pruning.weights(model, names).items()}
