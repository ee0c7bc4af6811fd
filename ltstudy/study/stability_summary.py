"""A study's stability measurements (`[stability]`), over the curves (seeds) of one setting.

Every measured path is in its round's record (`stability_paths`: the dense
network's from each θ_k with round 0, each measured pruned round's own). Here
they are grouped by start, the dense network at k or the ticket at a round, and
summarised: validation and test instability (mean ± sample std over curves),
how many curves are stable, and the mean error at each point of the path. The
report, `ltstudy stability STUDY.toml` and docs/stability/findings.py read
these numbers and nothing else. Read-only: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.linear_paths import STABLE, StartKind
from .curves import Curve
from .stats import Stat


@dataclass(frozen=True)
class StartSummary:
    """One start's paths over curves: instability (error fractions) and the mean path."""

    label: StartKind
    k: int
    round: int
    density: float
    val: Stat
    test: Stat
    stable: int  # curves whose validation instability is below the threshold
    alphas: tuple[float, ...]
    val_path: tuple[float, ...]  # mean validation error at each point of the path
    test_path: tuple[float, ...]

    @property
    def n(self) -> int:
        return self.val.n

    def is_stable(self, threshold: float = STABLE) -> bool:
        """The mean validation instability is below the threshold (the paper's criterion, on means over runs)."""
        return self.val.mean is not None and self.val.mean < threshold

    def to_dict(self) -> dict:
        return {"label": str(self.label), "k": self.k, "round": self.round, "density": self.density, "n": self.n,
                "val_instability": {"mean": self.val.mean, "std": self.val.std},
                "test_instability": {"mean": self.test.mean, "std": self.test.std}, "stable_curves": self.stable,
                "alphas": list(self.alphas), "mean_val_errors": list(self.val_path),
                "mean_test_errors": list(self.test_path)}


def summarise(curves: Sequence[Curve], threshold: float = STABLE) -> list[StartSummary]:
    """The dense starts by k, then the ticket's by round; paths of different lengths are not averaged."""
    groups: dict[tuple[str, int, int], list[dict]] = {}
    for c in curves:
        for rnd in c.rounds:
            for path in rnd.get("stability_paths") or []:
                groups.setdefault((StartKind(path["label"]), int(path["k"]), int(path["round"])), []).append(path)
    out = []
    for (label, k, round_), paths in sorted(groups.items(), key=lambda kv: (kv[0][0] != StartKind.DENSE, kv[0][1:])):
        points = len(paths[0]["alphas"])
        paths = [p for p in paths if len(p["alphas"]) == points]
        out.append(StartSummary(
            label, k, round_, sum(p["density"] for p in paths) / len(paths),
            Stat.of(p["val_instability"] for p in paths), Stat.of(p["test_instability"] for p in paths),
            sum(p["val_instability"] < threshold for p in paths), tuple(paths[0]["alphas"]),
            tuple(sum(p["val_errors"][i] for p in paths) / len(paths) for i in range(points)),
            tuple(sum(p["test_errors"][i] for p in paths) / len(paths) for i in range(points))))
    return out


def earliest_stable_k(summaries: Sequence[StartSummary], threshold: float = STABLE) -> StartSummary | None:
    """The dense start of smallest k whose mean validation instability is below `threshold`."""
    return min((s for s in summaries if s.label == StartKind.DENSE and s.is_stable(threshold)), key=lambda s: s.k,
               default=None)


def rows(summaries: Sequence[StartSummary], threshold: float = STABLE) -> list[list[str]]:
    """Table rows: start, k, round, density, val and test instability (points), end error, stable curves."""
    return [[s.label, str(s.k), str(s.round), f"{100 * s.density:.3g}%", s.val.text(digits=2, show_n=False),
             s.test.text(digits=2, show_n=False), f"{100 * (s.val_path[0] + s.val_path[-1]) / 2:.2f}",
             f"{s.stable}/{s.n}"] for s in summaries]


HEADERS = ["start", "k", "round", "density", "val instability", "test instability", "mean end val error",
           "stable curves"]
