"""What a pruning scope is: the layers ranked together under one threshold (the others are pruned layer-wise)."""

from __future__ import annotations

from ..config import PruneConfig
from ..pruning import Layer


class Scope:
    """A pruning scope: `shared` names the layers that are ranked under one threshold (the others are pruned alone)."""

    def shared(self, layers: list[Layer], cfg: PruneConfig) -> set[str]:
        raise NotImplementedError
