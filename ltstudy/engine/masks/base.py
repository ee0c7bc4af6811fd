"""What a mask rule is: IMP's pruning step, new masks from a round's trained weights."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from ..contracts import Contract

if TYPE_CHECKING:
    from torch import nn

    from ..rounds import Masks


class MaskRule(Contract):
    """A ticket-finding mask rule; registered in `registry.MASKS` (a class without `prune` is refused there).

    - `prune(model, masks, rates, shared)`: IMP's step 3: new masks from the trained weights, removing each
      layer's rate of its survivors (`shared` layers under one threshold).

    (A control's mask, random or pruned at initialisation, is a branch's: branches/.)
    """

    @abstractmethod
    def prune(self, model: nn.Module, masks: Masks, rates: dict[str, float], shared: set[str]) -> Masks:
        """The next round's masks."""
