"""What a mask rule is: IMP's pruning step, new masks from a round's trained weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from ..rounds import Masks


class MaskRule:
    """A ticket-finding mask rule; registered in `registry.MASKS`.

    - `prune(model, masks, rates, shared)`: IMP's step 3: new masks from the trained weights, removing each
      layer's rate of its survivors (`shared` layers under one threshold).

    (A control's mask, random or pruned at initialisation, is a branch's: branches/.)
    """

    def prune(self, model: nn.Module, masks: Masks, rates: dict[str, float], shared: set[str]) -> Masks:
        raise NotImplementedError
