"""Figures of a stability analysis: instability against k (dense) or density (ticket), and the error on each path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..engine.linear_paths import STABLE, StartKind
from .plots import _pyplot, save

if TYPE_CHECKING:
    from ..engine.connectivity import Stability


def stability_figure(results: Sequence[Stability], threshold: float = STABLE, path=None) -> bytes | None:
    """Left: validation (and test) instability of each start, the threshold dashed; right: error along each path."""
    plt = _pyplot()
    dense = sorted((r for r in results if r.label == StartKind.DENSE), key=lambda r: r.k)
    ticket = sorted((r for r in results if r.label == StartKind.TICKET), key=lambda r: -r.density)
    panels = [p for p in (dense, ticket) if p]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.2 * (len(panels) + 1), 4.0), squeeze=False)
    for ax, group in zip(axes[0], panels, strict=False):
        is_dense = group is dense
        xs = [r.k for r in group] if is_dense else [r.density for r in group]
        ax.plot(xs, [100 * r.val_instability for r in group], "o-", label="validation")
        ax.plot(xs, [100 * r.test_instability for r in group], "s--", alpha=0.7, label="test (reported)")
        ax.axhline(100 * threshold, color="grey", ls=":", label=f"stable below {100 * threshold:g} points")
        if is_dense:
            ax.set_xlabel(f"rewind iteration k of the dense network{k_axis(ax, xs)}")
        else:
            from .plots import density_axis

            density_axis(ax, xs)
            ax.set_xlabel(f"ticket density (round start m ⊙ θ_k, k = {group[0].k}; log scale)")
        ax.set_ylabel("instability (error points)")
        ax.set_title("dense network" if is_dense else "IMP ticket")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    draw_paths(axes[0][-1], [r.to_dict() for r in (*dense, *ticket)])
    fig.tight_layout()
    return save(fig, path)


LINEAR_SPAN = 10  # ks spanning at most this factor (over the smallest k > 0) are drawn on a linear axis


def k_axis(ax, ks: Sequence[int]) -> str:
    """An axis of iterations k where distance means iterations, ticked at the ks measured: linear when they span
    little, else logarithmic (symmetric log, linear below the smallest k > 0, when k = 0 is among them). Returns
    what the axis label should add to say which."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ks = sorted(set(ks))
    positive = [k for k in ks if k > 0]
    scale = ""
    if len(positive) > 1 and positive[-1] / positive[0] > LINEAR_SPAN:
        if ks[0] == 0:
            ax.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
            ax.set_xlim(-0.15 * positive[0], positive[-1] * 1.4)  # (nothing below k = 0 to show)
            scale = f" (log scale; linear from 0 to {positive[0]})"
        else:
            ax.set_xscale("log")
            ax.set_xlim(positive[0] / 1.4, positive[-1] * 1.4)
            scale = " (log scale)"
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.set_xticklabels([str(k) for k in ks])
    ax.xaxis.set_minor_locator(NullLocator())
    return scale


def draw_paths(ax, results: Sequence[dict], ylabel: str = "validation error (%)") -> None:
    """The validation error along each path (results as `Stability.to_dict()` gives them)."""
    for r in results:
        name = f"dense, k = {r['k']}" if r["label"] == StartKind.DENSE else f"ticket {100 * r['density']:.3g}%"
        ax.plot(r["alphas"], [100 * e for e in r["val_errors"]], label=name)
    ax.set_xlabel("α on the path (1 - α) θ_A + α θ_B")
    ax.set_ylabel(ylabel)
    ax.set_title("error along the linear path")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def figure_instability(groups: Sequence[tuple[str, Sequence]], threshold: float = STABLE) -> bytes | None:
    """A study's pruned rounds: validation instability against density, one line per setting (mean, 95% interval)."""
    from .compare import round_stats
    from .plots import density_axis

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lowest = []
    for label, curves in groups:
        stats = [s for s in round_stats(curves, "val_instability") if s["n"] and s["round"] > 0]  # (pruned)
        if not stats:
            continue
        xs, ys = [s["density"] for s in stats], [100 * s["mean"] for s in stats]
        half = [100 * (s["ci95"] or 0.0) for s in stats]
        n = max(s["n"] for s in stats)
        ax.errorbar(xs, ys, yerr=half if n > 1 else None, marker="o", ms=3.5, capsize=3, label=f"{label} (n={n})")
        lowest.append(min(xs))
    ax.axhline(100 * threshold, color="grey", ls=":", label=f"stable below {100 * threshold:g} points (the paper)")
    density_axis(ax, lowest)
    ax.set_ylim(bottom=-0.5)  # (instability is never negative; a t-interval of few curves reaches below 0)
    ax.set_ylabel("validation instability (error points)")
    ax.set_title("stability of each round's start m ⊙ θ_k to SGD noise", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig)


def figure_dense_k(groups: Sequence[tuple[str, Sequence]], threshold: float = STABLE) -> bytes | None:
    """A study's dense starts (`[stability] dense_ks`): instability against k, one line per setting (mean, 95%)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ks = sorted({s.k for _, summaries in groups for s in summaries})
    for label, summaries in groups:
        dense = sorted(summaries, key=lambda s: s.k)
        xs = [s.k for s in dense]
        for stat, style, name in ((lambda s: s.val, "o-", "validation"), (lambda s: s.test, "s--", "test")):
            half = [100 * (stat(s).ci95() or 0.0) for s in dense]
            ax.errorbar(xs, [100 * stat(s).mean for s in dense], yerr=half if max(s.n for s in dense) > 1 else None,
                        fmt=style, ms=4, capsize=3, alpha=1.0 if name == "validation" else 0.6,
                        label=f"{label}: {name} (n={max(s.n for s in dense)})")
    ax.axhline(100 * threshold, color="grey", ls=":", label=f"stable below {100 * threshold:g} points (the paper)")
    ax.set_xlabel(f"k: the dense network's iteration both copies start from{k_axis(ax, ks)}")
    ax.set_ylabel("instability (error points)")
    ax.set_ylim(bottom=-0.5)
    ax.set_title("the dense network's stability to SGD noise against k", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig)


def figure_mean_paths(summaries: Sequence, title: str) -> bytes | None:
    """The mean validation error along each start's path (StartSummary), dense and ticket."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    draw_paths(ax, [{"label": s.label, "k": s.k, "density": s.density, "alphas": s.alphas,
                     "val_errors": s.val_path} for s in summaries], "mean validation error (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig)


def figure_level_barriers(groups: Sequence[tuple[str, Sequence]], epsilon: float, threshold: float = STABLE
                          ) -> bytes | None:
    """A study's level barriers (level_summary.py). Left: the validation barrier against round, one line per
    setting (mean, 95% interval); right: every (curve, pruned round), matching dense or not, one colour per setting."""
    from .compare import round_stats
    from .curves import matches
    from .level_summary import VAL

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for i, (label, curves) in enumerate(groups):
        colour = f"C{i % 10}"
        stats = [s for s in round_stats(curves, VAL) if s["n"] and s["round"] > 0]
        if stats:
            n = max(s["n"] for s in stats)
            left.errorbar([s["round"] for s in stats], [100 * s["mean"] for s in stats], color=colour,
                          yerr=[100 * (s["ci95"] or 0.0) for s in stats] if n > 1 else None, marker="o", ms=3.5,
                          capsize=3, label=f"{label} (n={n})")
        points = [(matches(r["val_accuracy"], c.rounds[0]["val_accuracy"], epsilon), 100 * r[VAL])
                  for c in curves for r in c.rounds if r["round"] > 0 and r.get(VAL) is not None]
        offset = (i + 0.5) / len(groups) * 0.5 - 0.25  # (each setting its own column within a verdict)
        spread = 0.4 / len(groups)  # (a fixed jitter within the column: barriers repeat, the split being finite)
        right.scatter([(0 if m else 1) + offset + spread * ((j * 0.618) % 1 - 0.5) for j, (m, _) in enumerate(points)],
                      [b for _, b in points], s=14, alpha=0.7, color=colour)
    for ax in (left, right):
        ax.axhline(100 * threshold, color="grey", ls=":", label=f"connected below {100 * threshold:g} points")
        ax.set_ylim(bottom=-0.5)  # (a barrier is never negative; a t-interval of few curves reaches below 0)
        ax.grid(alpha=0.3)
    left.set_xlabel("round r (the path from round r - 1's trained weights to round r's)")
    left.set_ylabel("validation level barrier (error points)")
    left.set_title("linear connectivity of successive IMP levels", fontsize=9)
    left.legend(fontsize=7, loc="upper left")
    right.set_xticks([0, 1], [f"matches dense\n(within ε = {100 * epsilon:g} points)", "does not match"])
    right.set_xlim(-0.5, 1.5)
    right.set_ylabel("validation level barrier (error points)")
    right.set_title("each round's barrier against its verdict", fontsize=9)
    fig.tight_layout()
    return save(fig)
