"""Bins for a setting searched as a range: every trial has its own value, so tables and maps group them.

A numeric setting whose curves take more than `max_levels` distinct values, or
any value that needs more than 6 decimals (a sampler's draw from a continuous
range: such a value is never a readable level, however few trials there are), is
cut into quantile bins (each holding about as many curves; or `n_bins` of
them), labelled by their edges rounded to the digits that tell the edges
apart. Bins are half-open, [a, b), the last one closed. The same rounding
labels plot ticks: `tick_labels` gives each value the fewest significant
digits that keep all of them distinct.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_BINS = 4  # quartiles
MAX_LEVELS = 6  # more distinct values than this: a range, binned


class BinLabel(str):
    """A bin's label that sorts by the bin's place, not alphabetically."""

    index: int

    def __new__(cls, text: str, index: int) -> BinLabel:
        obj = super().__new__(cls, text)
        obj.index = index
        return obj

    def __reduce__(self):  # (pickles and deep-copies as itself)
        return BinLabel, (str(self), self.index)


def is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def tick_labels(values: Sequence[float], min_digits: int = 2) -> list[str]:
    """Each value with the fewest significant digits (at least `min_digits`) that keep all the labels distinct,
    written out (100, never 1e+02); whole numbers as they are."""
    import numpy as np

    if all(float(v).is_integer() and abs(v) < 1e15 for v in values):
        return [str(int(v)) for v in values]
    distinct = len({float(v) for v in values})
    for digits in range(min_digits, 17):
        labels = [np.format_float_positional(float(v), precision=digits, unique=False, fractional=False, trim="-")
                  for v in values]
        if len(set(labels)) == distinct:
            return labels
    return [repr(float(v)) for v in values]


@dataclass(frozen=True)
class Bins:
    setting: str
    edges: tuple[float, ...]  # n + 1 edges, ascending
    labels: tuple[BinLabel, ...]
    counts: tuple[int, ...]  # values (curves) in each bin

    def index(self, value: float) -> int:
        for i in range(len(self.labels) - 1):
            if value < self.edges[i + 1]:
                return i
        return len(self.labels) - 1

    def label(self, value: float) -> BinLabel:
        return self.labels[self.index(float(value))]

    def describe(self) -> str:
        """'prune_rate (searched as a range) in 4 quantile bins of the ticket curves: 0.10–0.19 (n=3), ...'."""
        parts = ", ".join(f"{label} (n={n})" for label, n in zip(self.labels, self.counts, strict=True))
        return (f"{self.setting} (searched as a range) in {len(self.labels)} quantile bins of the ticket curves: "
                f"{parts}")


def make_bins(setting: str, values: Sequence[float], n_bins: int = DEFAULT_BINS) -> Bins:
    """Quantile bins of `values` (one per curve): edges at the i/n quantiles, duplicates merged."""
    xs = sorted(float(v) for v in values)
    n = max(1, min(n_bins, len(set(xs))))
    raw = [xs[0]] + [xs[min(len(xs) - 1, round(i * len(xs) / n))] for i in range(1, n)] + [xs[-1]]
    edges = sorted(set(raw))
    if len(edges) == 1:
        edges = [edges[0], edges[0]]
    names = tick_labels(edges)
    labels = tuple(BinLabel(f"{names[i]}–{names[i + 1]}", i) for i in range(len(edges) - 1))
    bins = Bins(setting, tuple(edges), labels, ())
    counts = [0] * len(labels)
    for x in xs:
        counts[bins.index(x)] += 1
    return dataclasses.replace(bins, counts=tuple(counts))


def ranges(curves: Sequence, keys: Iterable[str], n_bins: int | None = None,
           max_levels: int = MAX_LEVELS) -> dict[str, Bins]:
    """The settings among `keys` to bin (numeric, with more than `max_levels` distinct values or a raw draw from
    a continuous range), with their bins."""
    out = {}
    for key in keys:
        values = [c.settings.get(key) for c in curves]
        if not values or not all(is_number(v) for v in values) or len(set(values)) < 2:
            continue
        if len(set(values)) > max_levels or any(float(v) != round(float(v), 6) for v in values):
            out[key] = make_bins(key, values, n_bins or DEFAULT_BINS)
    return out


def binned(curves: Sequence, bins: Mapping[str, Bins]) -> list:
    """The curves with each binned setting replaced by its bin's label."""
    if not bins:
        return list(curves)
    return [dataclasses.replace(c, settings={**c.settings, **{k: b.label(c.settings[k]) for k, b in bins.items()}})
            for c in curves]
