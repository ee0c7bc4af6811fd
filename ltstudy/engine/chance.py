"""A dense network at chance accuracy has nothing for a ticket to match: a divergence, not a result.

`lr = 1e6` leaves LeNet at 6.7% on 10 classes with a finite loss; every pruned
round would then "match" it and the sparsest one would top the Pareto front.
Chance is the validation split's majority class plus three binomial standard
errors (what always guessing that class scores by luck). With fewer than
MIN_EXAMPLES validation examples luck cannot be told from learning, and
nothing is judged.
"""

from __future__ import annotations

import torch

from .callbacks import Callback
from .data import Dataset
from .errors import DivergedError
from .rounds import RoundResult

MIN_EXAMPLES = 50


def chance_limit(data: Dataset) -> float | None:
    """The highest validation accuracy guessing could score here; None when the split is too small to say."""
    n = len(data.val)
    if n < MIN_EXAMPLES:
        return None
    majority = float(torch.bincount(data.val.y, minlength=data.num_classes).max()) / n
    limit = majority + 3 * (majority * (1 - majority) / n) ** 0.5
    return limit if limit < 1.0 else None


class DenseMustLearn(Callback):
    """Ends a search whose dense round (0) is at chance accuracy, as diverged, with the reason."""

    def __init__(self, data: Dataset):
        self.limit = chance_limit(data)
        self.classes = data.num_classes

    def on_round_end(self, record: RoundResult) -> None:
        if record.round != 0 or record.control or self.limit is None or record.val_accuracy > self.limit:
            return
        raise DivergedError(f"the dense network did not learn: validation accuracy {record.val_accuracy:.1%} is "
                            f"chance for {self.classes} classes (guessing scores up to {self.limit:.1%}); lower the "
                            "learning rate or train longer", record.iterations)
