"""Statistics over per-curve values: mean ± sample std (n), 95% t-intervals, and Welch's t-test."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for n < 2) and n of some per-curve values."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        xs = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not xs:
            return cls(None, None, 0)
        m = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        return cls(m, sd, len(xs))

    def ci95(self) -> float | None:
        """Half-width of the 95% t-interval of the mean; None for n < 2."""
        if self.std is None or self.n < 2:
            return None
        from scipy.stats import t

        return float(t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n))

    def text(self, scale: float = 100.0, digits: int = 1, show_n: bool = True, spread: bool = True) -> str:
        """'59.0 ± 1.2 (3)'; '59.0 ± — (1)' when there is no spread; 'n/a (0)' when there is no value. Without
        `spread` (a table whose every row is one curve, which says so once): '59.0', and 'n/a'."""
        if self.mean is None:
            return "n/a (0)" if show_n and spread else "n/a"
        mean = f"{self.mean * scale:.{digits}f}"
        if float(mean) == 0:  # (never "-0.0": a gap of minus nothing reads as a loss)
            mean = f"{0.0:.{digits}f}"
        if not spread:
            return mean
        deviation = "—" if self.std is None else f"{self.std * scale:.{digits}f}"
        return f"{mean} ± {deviation}" + (f" ({self.n})" if show_n else "")

    def prose(self, scale: float = 100.0, digits: int = 1, unit: str = " %") -> str:
        """For sentences: '97.8 ± 0.4 % (n = 3)'; '97.8 % (n = 1)' without a spread; 'n/a' without a value."""
        if self.mean is None:
            return "n/a"
        mean = f"{self.mean * scale:.{digits}f}"
        spread = "" if self.std is None else f" ± {self.std * scale:.{digits}f}"
        return f"{mean}{spread}{unit} (n = {self.n})"


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's t-test p-value (two-sided, unequal variances); None when either side has n < 2.

    Both sides without spread: p = 1 if the values are equal, else 0.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = Stat.of(a), Stat.of(b)
    if not sa.std and not sb.std:
        return 1.0 if math.isclose(sa.mean, sb.mean, abs_tol=1e-12) else 0.0  # type: ignore[arg-type]
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # (one side without spread: scipy warns of precision loss, the test holds)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


ALPHA = 0.05


def distinguishable_text(na: int, nb: int, p: float | None) -> tuple[bool, str]:
    ns = f"n = {na}" if na == nb else f"n = {na} and {nb}"
    if p is None:
        return False, f"not distinguishable at {ns} (no seed-to-seed spread to test against)"
    if p >= ALPHA:
        return False, f"not distinguishable at {ns} (p = {p:.2g})"
    if p == 0.0:  # (welch: neither side varies across seeds, and the values differ)
        return True, f"differ at {ns} (every seed gives the same value on each side)"
    return True, f"differ at {ns} (p {'< 0.001' if p < 1e-3 else f'= {p:.2g}'})"
