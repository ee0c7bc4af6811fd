"""What a pruning scope is: the layers ranked together under one threshold (the others are pruned layer-wise)."""

from __future__ import annotations

from abc import abstractmethod

from ..config import PruneConfig
from ..contracts import Contract
from ..pruning import Layer


class Scope(Contract):
    """A pruning scope: `shared` (abstract) names the layers that are ranked under one threshold (the others are
    pruned alone)."""

    @abstractmethod
    def shared(self, layers: list[Layer], cfg: PruneConfig) -> set[str]:
        """The names of the layers ranked together under one threshold."""
