"""Both of the paper's controls at once: a random mask with the ticket's per-layer densities and a fresh θ'0,
trained from iteration 0: a random sparse network with the ticket's layer densities."""

from __future__ import annotations

from .random_mask import RandomMask


class RandomBoth(RandomMask):
    label = "random re-init + random mask"
    fresh_init = True
