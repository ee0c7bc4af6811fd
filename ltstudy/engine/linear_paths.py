"""The terms of a stability measurement that need no torch: where a linear path starts, and the paper's numbers.

Reports, the CLI and the study layer read measured paths from records without
importing torch; the measurement itself is connectivity.py.
"""

from __future__ import annotations

from enum import StrEnum

STABILITY_POINTS = 30  # the paper's number of points on a linear path (Frankle et al. 2020)
MAX_POINTS = 1000  # points on a path: each is an evaluation of the validation and test splits
STABLE = 0.02  # the paper's threshold: a start is stable when the error on the path rises by less than 2 points


class StartKind(StrEnum):
    """Where a path starts: the dense network from θ_k, or a ticket round's start m ⊙ θ_k.

    A string enum: records (round records in the cache and in Optuna's user attrs, JSON files) hold the plain
    string, which compares equal to its member and reads back as it (`StartKind("dense")`).
    """

    DENSE = "dense"
    TICKET = "ticket"
