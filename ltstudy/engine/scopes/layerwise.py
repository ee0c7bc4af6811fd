"""Layer-wise pruning: every layer loses its own rate of its survivors each round."""

from __future__ import annotations

from .base import Scope


class Layerwise(Scope):
    def shared(self, layers, cfg) -> set[str]:
        return set()
