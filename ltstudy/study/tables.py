"""Fixed-width text tables for the command line (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.rounds import RoundResult


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table: right-aligned numbers, left-aligned text."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def round_table(rounds: Sequence[RoundResult]) -> str:
    """One row per round; a round loaded from the cache is marked so, its seconds being the run's that trained it."""
    headers = ["round", "density", "weights", "speedup", "val_acc", "val_loss", "es_iter", "test_acc", "test_acc@es",
               "train_loss", "iters", "seconds"]
    rows = [[r.round, r.density, r.weights_remaining, r.metrics.get("theoretical_speedup", math.nan), r.val_accuracy,
             r.val_loss, r.early_stop_iteration, r.test_accuracy, r.test_accuracy_at_early_stop, r.train_loss,
             r.iterations, f"{r.wall_seconds:.4f} (cached)" if r.reused else r.wall_seconds]
            for r in rounds]
    table = format_table(headers, rows)
    if any(r.reused for r in rounds):
        table += ("\n(cached): loaded from the cache, not trained here; its seconds are those of the run that "
                  "trained it")
    return table
