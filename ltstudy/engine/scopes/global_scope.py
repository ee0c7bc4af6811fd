"""Global pruning: one magnitude threshold over every layer without a rate of its own (pruning.pooled)."""

from __future__ import annotations

from .. import pruning
from .base import Scope


class Global(Scope):
    def shared(self, layers, cfg) -> set[str]:
        return pruning.pooled(layers, cfg)
