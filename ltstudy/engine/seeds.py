"""Seeds: one user seed, and the reproducible streams every random choice of a search draws from.

`seed` derives them all. Each of the four sources of randomness can also be
fixed on its own (`[seeds]`, or --init-seed / --data-order-seed /
--dropout-seed / --mask-seed), so a study can vary one at a time: two runs with
the same θ0 and different data orders are what stability analysis compares
(Frankle et al. 2020), and error bars over seeds then say which noise they show.
"""

from __future__ import annotations

from dataclasses import dataclass

# Purposes of the derived streams (never reuse a number for another purpose).
REINIT, DROPOUT, RANDOM_MASK = 2, 3, 4
AT_INIT_DATA, AT_INIT_DROPOUT = 5, 6  # pruning at initialisation: the examples scored on, dropout while scoring
STABILITY_COPY = 7  # stability analysis: the second copy's data order, batch norm's recomputation subset
SPARSE_MASK, SET_GROWTH = 8, 9  # sparse training (branches/static_sparse.py): the start mask, SET's random growth


@dataclass(frozen=True)
class Seeds:
    """The seed of each source of randomness of one search."""

    init: int  # θ0, and the fresh draw of a random re-init (its own stream per round)
    data_order: int  # the order of training batches, and augmentation
    dropout: int  # dropout masks (a stream per round)
    mask: int  # random masks (a stream per round)


def stream_seed(seed: int, step: int, stride: int) -> int:
    """`seed * stride + step`, the seed of one step of a stream (an epoch's order, an iteration's augmentation), kept
    below 2^63 - 1 where torch takes it (a seed near 2^63 - 1 overflowed it; below, every value is unchanged)."""
    return (seed * stride + step) % (2**63 - 1)


def derived_seed(seed: int, *parts: int) -> int:
    """Distinct, reproducible streams per (purpose, round) from one user seed."""
    h = seed
    for p in parts:
        h = (h * 1_000_003 + p + 1) % (2**63 - 1)
    return h
