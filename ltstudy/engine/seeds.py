"""Seeds: one user seed, and the reproducible streams every random choice of a search draws from."""

from __future__ import annotations

# Purposes of the derived streams (never reuse a number for another purpose).
REINIT, DROPOUT, RANDOM_MASK = 2, 3, 4


def derived_seed(seed: int, *parts: int) -> int:
    """Distinct, reproducible streams per (purpose, round) from one user seed."""
    h = seed
    for p in parts:
        h = (h * 1_000_003 + p + 1) % (2**63 - 1)
    return h
