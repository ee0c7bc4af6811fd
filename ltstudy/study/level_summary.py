"""A study's level barriers (`[stability] level_points`): per round over the curves of one setting, and against
each round's matching verdict.

Each pruned round's record holds `level_barrier` (validation) and
`level_barrier_test` (reported): the error rise on the linear path from round
r-1's trained weights to round r's (engine/level_barrier.py). A round is
*connected* when its validation barrier is below the threshold (the stability
measurement's 2 points) and *matches* when its validation accuracy is within ε
of the dense round's (curves.matches). Paul et al. (ICLR 2023) predict that the
rounds that stop matching are the ones whose barrier rises: `Verdicts` counts
how often the two agree. The report, `ltstudy stability STUDY.toml` and the
objective `connected_sparsity` read these numbers. Read-only: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.linear_paths import STABLE
from .curves import Curve, matches
from .stats import Stat

VAL, TEST = "level_barrier", "level_barrier_test"


@dataclass(frozen=True)
class LevelRound:
    """One pruned round over curves: its barrier (error fractions), how many curves are connected and match."""

    round: int
    density: float  # mean over curves
    val: Stat
    test: Stat
    connected: int  # curves whose validation barrier is below the threshold
    matching: int  # curves whose round matches dense within ε

    @property
    def n(self) -> int:
        return self.val.n

    def to_dict(self) -> dict:
        return {"round": self.round, "density": self.density, "n": self.n,
                "level_barrier": {"mean": self.val.mean, "std": self.val.std},
                "level_barrier_test": {"mean": self.test.mean, "std": self.test.std},
                "connected_curves": self.connected, "matching_curves": self.matching}


def measured(curves: Sequence[Curve]) -> list[Curve]:
    """The curves with a level barrier on some round."""
    return [c for c in curves if any(r.get(VAL) is not None for r in c.rounds)]


def summarise_levels(curves: Sequence[Curve], epsilon: float, threshold: float = STABLE) -> list[LevelRound]:
    """Each pruned round that some curve measured, in order."""
    by_round: dict[int, list[tuple[dict, bool]]] = {}
    for c in curves:
        dense = c.rounds[0]["val_accuracy"]
        for r in c.rounds:
            if r["round"] > 0 and r.get(VAL) is not None:
                by_round.setdefault(int(r["round"]), []).append((r, matches(r["val_accuracy"], dense, epsilon)))
    return [LevelRound(i, sum(r["density"] for r, _ in at) / len(at), Stat.of(r[VAL] for r, _ in at),
                       Stat.of(r.get(TEST) for r, _ in at), sum(r[VAL] < threshold for r, _ in at),
                       sum(m for _, m in at)) for i, at in sorted(by_round.items())]


@dataclass(frozen=True)
class Verdicts:
    """Every measured (curve, pruned round): connected or not against matching or not, and the barriers of each."""

    connected_matching: int
    broken_matching: int
    connected_failing: int
    broken_failing: int
    matching: Stat  # validation barrier of the matching rounds
    failing: Stat  # ... of the rounds that do not match

    @property
    def agree(self) -> int:
        """Rounds where connectivity and matching say the same (connected and matching, or neither)."""
        return self.connected_matching + self.broken_failing

    @property
    def n(self) -> int:
        return self.connected_matching + self.broken_matching + self.connected_failing + self.broken_failing

    def to_dict(self) -> dict:
        return {"connected_matching": self.connected_matching, "broken_matching": self.broken_matching,
                "connected_failing": self.connected_failing, "broken_failing": self.broken_failing,
                "matching_barrier": {"mean": self.matching.mean, "std": self.matching.std, "n": self.matching.n},
                "failing_barrier": {"mean": self.failing.mean, "std": self.failing.std, "n": self.failing.n}}


def verdicts(curves: Sequence[Curve], epsilon: float, threshold: float = STABLE) -> Verdicts:
    pairs = [(r[VAL], matches(r["val_accuracy"], c.rounds[0]["val_accuracy"], epsilon))
             for c in curves for r in c.rounds if r["round"] > 0 and r.get(VAL) is not None]

    def count(connected: bool, match: bool) -> int:
        return sum((b < threshold) == connected and m == match for b, m in pairs)

    return Verdicts(count(True, True), count(False, True), count(True, False), count(False, False),
                    Stat.of(b for b, m in pairs if m), Stat.of(b for b, m in pairs if not m))


def rows(levels: Sequence[LevelRound]) -> list[list[str]]:
    """Table rows: round, density, validation and test barrier (points), connected and matching curves."""
    return [[str(lv.round), f"{100 * lv.density:.3g}%", lv.val.text(digits=2, show_n=False),
             lv.test.text(digits=2, show_n=False), f"{lv.connected}/{lv.n}", f"{lv.matching}/{lv.n}"]
            for lv in levels]


HEADERS = ["round", "density", "val level barrier", "test level barrier", "connected curves", "matching curves"]


def verdict_rows(v: Verdicts) -> list[list[str]]:
    """The 2 × 2 table: matching or not against connected or not, with each side's barrier."""
    return [["matching", str(v.connected_matching), str(v.broken_matching), v.matching.text(digits=2)],
            ["not matching", str(v.connected_failing), str(v.broken_failing), v.failing.text(digits=2)]]


def verdict_headers(threshold: float = STABLE) -> list[str]:
    return ["rounds", f"connected (barrier below {100 * threshold:g} points)", "not connected", "val level barrier"]
