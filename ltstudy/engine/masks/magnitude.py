"""Magnitude pruning: remove the smallest surviving weights (per layer, or under one threshold)."""

from __future__ import annotations

from .. import pruning
from .base import MaskRule


class Magnitude(MaskRule):
    def prune(self, model, masks, rates, shared):
        return pruning.prune(model, masks, rates, shared)
