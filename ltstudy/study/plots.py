"""Figures of ticket-search results (matplotlib, Agg; no torch).

Conventions, the same in every figure:
- x: density on a log axis, dense on the left, ticks at readable densities (100%, 50%, 20%, ...).
- accuracy-vs-density figures of groups plot TEST accuracy at the early-stop iteration (the paper's
  number); the round-level frontier plots VALIDATION accuracy (what the study selects on). Each axis says which.
- a group's curve is the mean over its curves (trial × seed) per round; the band or error bar is the 95%
  t-interval of that mean (none when n = 1); n is in the legend, and next to a point that has fewer.
- a grey line marks the dense (round 0) accuracy, with the ε band below it.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from .binning import is_number, tick_labels
from .compare import ACCURACY_KEYS, cell_table, levels, round_stats, row_label, setting_order
from .curves import READABLE_DENSITIES, TICKET, Curve, density_label
from .frontier import round_points
from .trial_results import Curves

TEST_LABEL = "test accuracy at early stop"
VAL_LABEL = "validation accuracy at early stop"
BAND_LABEL = "mean; band: 95% t-interval over curves"
BAR_LABEL = "mean; bars: 95% t-interval over curves"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_matplotlib() -> None:
    """Import matplotlib now (about 0.5 s): a process about to fork workers shares it with all of them."""
    _pyplot()


def save(fig, path=None, tight: bool = True) -> bytes | None:
    """Write the figure to `path`, or return its PNG bytes when path is None; closes it.

    `tight=False` skips the second drawing "tight" bounds need, for figures laid
    out by tight_layout with everything inside (a trial's plot, made once per trial).
    """
    plt = _pyplot()
    bbox = "tight" if tight else None
    try:
        if path is None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches=bbox)
            return buf.getvalue()
        fig.savefig(path, dpi=110, bbox_inches=bbox)
        return None
    finally:
        plt.close(fig)


def density_axis(ax, densities: Sequence[float] = ()) -> None:
    """Log density axis, dense on the left, ticks at 100%, 50%, 20%, ... down to the sparsest point."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    lowest = min((d for d in densities if d > 0), default=READABLE_DENSITIES[2])
    # Show at least the next readable density below the sparsest point, so there are two labelled ticks.
    below = [d for d in READABLE_DENSITIES if d < lowest * (1 - 1e-9)]
    floor = below[0] if below else lowest
    ticks = [d for d in READABLE_DENSITIES if d >= floor]
    ax.set_xlim(1.15, floor / 1.15)  # inverted: dense on the left
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([density_label(d) for d in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("density: weights remaining (log scale)")
    ax.grid(alpha=0.3)


def dense_line(ax, dense: Sequence[float], epsilon: float | None, what: str = "curves", legend: bool = True,
               label: str | None = None) -> None:
    """The mean dense (round 0) accuracy, and the ε band below it; `label` says what the mean is over."""
    if not dense:
        return
    m = sum(dense) / len(dense)
    ax.axhline(m, color="0.35", lw=1.0, ls="--",
               label=(label or f"dense (round 0), mean of {len(dense)} {what}") if legend else None)
    if epsilon:
        ax.axhspan(m - epsilon, m, color="0.6", alpha=0.18, lw=0,
                   label=f"dense − ε (ε = {epsilon:g}; tickets match on validation accuracy)" if legend else None)


def dense_networks(curves: Sequence[Curve], key: str) -> list[float]:
    """`key` of each distinct dense network among `curves`: a ticket and its controls share one, and trials with
    the same seed and training settings share one too (the same round 0), so each counts once."""
    seen = {(str(c.seed), c.rounds[0].get("val_accuracy"), c.rounds[0].get(key)) for c in curves
            if c.rounds and c.rounds[0].get(key) is not None}
    return [v for _, _, v in sorted(seen, key=str)]


def dense_label(n: int) -> str:
    return "dense network (round 0)" if n == 1 else f"dense (round 0): mean of {n} distinct dense networks"


def _legend(ax, **kw) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:  # (an empty legend is a matplotlib warning)
        ax.legend(fontsize=7.5, **kw)


def _legend_outside(ax, first: str = "") -> None:
    """The legend beside the axes; the entry whose label starts with `first` (the ticket) at its top."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: not (first and labels[i].startswith(first)))
    if handles:
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7.5, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def percent_axis(ax) -> None:
    """Accuracies (stored as fractions) read in %, as in the tables; the axis stops at 100% (an error bar of
    n = 2 reaches past it, which no accuracy can: its end is clipped, the mean and the other points stay
    readable). Call it after drawing."""
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    clamp_y(ax, 0.0, 1.0)


def clamp_y(ax, low: float, high: float) -> None:
    """Keep the y axis within what the quantity can take (plus a hair of margin)."""
    lo, hi = ax.get_ylim()
    pad = 0.01 * (min(hi, high) - max(lo, low))
    ax.set_ylim(max(lo, low - pad), min(hi, high + pad))


def draw_group(ax, curves: Sequence[Curve], key: str, label: str, color=None, band: bool = True,
               linestyle: str = "-", marker: str = "o", interval: bool = True) -> list[dict]:
    """Mean over `curves` per round with its 95% t-interval (band or error bars; none without `interval`); n in
    the label, and at points where fewer curves got that far."""
    stats = round_stats(curves, key)
    if not stats:
        return stats
    n = max(s["n"] for s in stats)
    xs = [s["density"] for s in stats]
    ys = [s["mean"] for s in stats]
    half = [s["ci95"] or 0.0 for s in stats]
    full = f"{label} (n={n})"
    if not interval:
        (line,) = ax.plot(xs, ys, marker=marker, ms=3.5, ls=linestyle, color=color, label=full)
    elif band:
        (line,) = ax.plot(xs, ys, marker=marker, ms=3.5, ls=linestyle, color=color, label=full)
        if n > 1:
            ax.fill_between(xs, [y - h for y, h in zip(ys, half)], [y + h for y, h in zip(ys, half)],
                            color=line.get_color(), alpha=0.13, lw=0)
    else:
        cont = ax.errorbar(xs, ys, yerr=half if n > 1 else None, marker=marker, ms=3.5, ls=linestyle,
                           color=color, capsize=3, label=full)
        line = cont.lines[0]
    for s in stats:
        if s["n"] < n:
            ax.annotate(f"n={s['n']}", (s["density"], s["mean"]), fontsize=6.5, color=line.get_color(),
                        xytext=(3, -9), textcoords="offset points")
    return stats


def _styles(i: int, kind: str) -> dict[str, Any]:
    """Tickets: solid lines with circles in the tab10 colours; controls: dashed, squares, in colours of their own
    (never a ticket's), so a control is never read as a ticket."""
    import matplotlib

    if kind == TICKET:
        colors = [c for j, c in enumerate(matplotlib.colormaps["tab10"].colors) if j != 7]  # grey: the dense line
        return {"color": colors[i % len(colors)], "linestyle": "-", "marker": "o"}
    dark = matplotlib.colormaps["Dark2"].colors
    return {"color": dark[i % len(dark)], "linestyle": "--", "marker": "s"}


# --------------------------------------------------------------------------- one trial; the frontier


def plot_rounds(rounds: Sequence[dict], path, title: str = "", epsilon: float | None = None) -> None:
    """One trial: test accuracy at early stop (the paper's number) and validation accuracy against density."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    dens = [r["density"] for r in rounds]
    if rounds:
        if rounds[0].get("test_accuracy_at_early_stop") is not None:
            ax.plot(dens, [r["test_accuracy_at_early_stop"] for r in rounds], "o-", label=TEST_LABEL)
        ax.plot(dens, [r["val_accuracy"] for r in rounds], "s:", alpha=0.8, label="validation (selects the ticket)")
        ax.plot(dens, [r["test_accuracy"] for r in rounds], "^--", alpha=0.6, label="test at end of training")
        dense_line(ax, [rounds[0]["val_accuracy"]], epsilon, "(validation)")
    density_axis(ax, dens)
    ax.set_ylabel("accuracy")
    percent_axis(ax)
    ax.set_title(title)
    _legend(ax, loc="lower left")
    fig.tight_layout()
    save(fig, path, tight=False)


def plot_pareto(trials: Sequence, frontier: Sequence[dict], path, title: str = "",
                epsilon: float | None = None) -> bytes | None:
    """All round points in grey, the non-dominated ones joined and labelled tNrM (trial N, round M)."""
    plt = _pyplot()
    points = round_points(trials)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    if points:
        ax.scatter([p["density"] for p in points], [p["val_accuracy"] for p in points], s=12, c="lightgrey",
                   label="every round of every finished trial (its mean over seeds)")
        # (trials with one seed share one dense network: each counts once, told apart by its validation numbers)
        dense = {(p["val_accuracy"], p["val_loss"]) for p in points if p["round"] == 0}
        dense_line(ax, [acc for acc, _ in sorted(dense, key=str)], epsilon, label=dense_label(len(dense)))
    if frontier:
        ax.plot([p["density"] for p in frontier], [p["val_accuracy"] for p in frontier], "-", c="tab:red", lw=1,
                label="non-dominated (no round is sparser and more accurate)")
        tickets = [p for p in frontier if p.get("kind", TICKET) == TICKET]
        controls = [p for p in frontier if p.get("kind", TICKET) != TICKET]
        ax.plot([p["density"] for p in tickets], [p["val_accuracy"] for p in tickets], "o", c="tab:red", ms=5)
        if controls:  # (a study from before controls ran beside tickets: control trials on the front)
            ax.plot([p["density"] for p in controls], [p["val_accuracy"] for p in controls], "s", mfc="white",
                    c="0.3", ms=5, label="non-dominated round of a control trial")
        labels: dict[tuple, list[str]] = {}  # identical points (duplicate trials) share one label
        for p in frontier:
            labels.setdefault((p["density"], p["val_accuracy"]), []).append(f"t{p['trial']}r{p['round']}")
        for xy, names in labels.items():
            ax.annotate(",".join(names), xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot([], [], " ", label="tNrM = trial N, round M")
    density_axis(ax, [p["density"] for p in points])
    ax.set_ylabel(f"{VAL_LABEL}\n(the study selects on it)")
    percent_axis(ax)
    ax.set_title(title or "round-level frontier")
    _legend(ax, loc="lower left")
    fig.tight_layout()
    return save(fig, path)


# --------------------------------------------------------------------------- groups


def _group(curves: Sequence[Curve], keys: Sequence[str]) -> list[tuple[str, list[Curve]]]:
    """Curves by their values of `keys` and their kind (a ticket and its controls share their settings)."""
    groups: dict[tuple, list[Curve]] = {}
    for c in curves:
        groups.setdefault((*(c.settings.get(k) for k in keys), c.kind), []).append(c)

    def label(key: tuple) -> str:
        text = row_label(dict(zip(keys, key[:-1], strict=True)), keys)
        return text if key[-1] == TICKET else f"{text}, {key[-1]}" if text else key[-1]

    return [(label(k), v) for k, v in sorted(groups.items(), key=lambda kv: (setting_order(kv[0][:-1]),
                                                                          kv[0][-1] != TICKET, kv[0][-1]))]


def contexts_for(col: Curves, setting: str) -> list[tuple[dict, list[Curve]]]:
    """Combinations of the other row settings under which `setting` takes two or more values, most curves
    first."""
    others = [k for k in col.keys if k != setting]
    found: dict[tuple, list[Curve]] = {}
    for c in col.curves:
        found.setdefault(tuple(c.settings.get(k) for k in others), []).append(c)
    out = [(dict(zip(others, k, strict=True)), v) for k, v in found.items()
           if len({repr(c.settings.get(setting)) for c in v}) > 1]
    return sorted(out, key=lambda kv: -len(kv[1]))


def figure_by_setting(col: Curves, setting: str, epsilon: float | None, max_panels: int = 4,
                      key: str = ACCURACY_KEYS["test"]) -> tuple[bytes | None, list[dict]]:
    """Small multiples: one panel per context (the other settings held fixed), one curve per value of `setting`,
    with 95% error bars. Returns the PNG (None if no context varies `setting`) and the contexts drawn."""
    col = Curves([c for c in col.curves if c.kind == TICKET], col.keys)  # (controls have their own section)
    contexts = contexts_for(col, setting)
    if not contexts:
        return None, []
    shown = contexts[:max_panels]
    plt = _pyplot()
    cols = min(2, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.9 * rows), squeeze=False, sharey=True)
    every = [r["density"] for _, members in shown for c in members for r in c.rounds]  # one x range for all panels
    for ax, (ctx, members) in zip(axes.flat, shown):
        for i, (label, group) in enumerate(_group(members, [setting])):
            draw_group(ax, group, key, label, band=False, **_styles(i, group[0].kind))
        dense_line(ax, [c.rounds[0][key] for c in members], epsilon, legend=False)  # (explained in the caption)
        density_axis(ax, every)
        ax.set_title("\n".join(textwrap.wrap(row_label(ctx, list(ctx)) or "all trials", 60)), fontsize=8.5)
        _legend(ax, loc="lower left")
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{TEST_LABEL}\n({BAR_LABEL})", fontsize=8.5)
    for ax in axes.flat:
        percent_axis(ax)
    fig.tight_layout()
    return save(fig), [ctx for ctx, _ in shown]


def heatmap(col: Curves, x: str, y: str, value: Callable[[Curve], float | None], title: str,
            scale: float = 100.0, order: dict[str, list] | None = None) -> bytes:
    """A y × x grid of mean (± std) and n per cell; `order` gives the levels of an axis (e.g. bins)."""
    import numpy as np

    plt = _pyplot()
    cells = cell_table(col.curves, x, y, value)
    order = order or {}
    xs = [v for v in order[x] if any(k[0] == v for k in cells)] if x in order else levels(k[0] for k in cells)
    ys = [v for v in order[y] if any(k[1] == v for k in cells)] if y in order else levels(k[1] for k in cells)
    grid = np.full((len(ys), len(xs)), np.nan)
    for (vx, vy), s in cells.items():
        if s.mean is not None:
            grid[ys.index(vy), xs.index(vx)] = s.mean * scale
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 * len(xs) + 2.2), max(2.6, 0.9 * len(ys) + 1.6)))
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    # The colours span at least twice the largest seed-to-seed std, so that noise never looks like a contrast,
    # and at least one point (a map of one cell, or of equal cells, has no contrast to show).
    span = max(hi - lo, 2 * max((s.std or 0.0) * scale for s in cells.values()), 1.0)
    mid = (lo + hi) / 2
    im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=mid - span / 2, vmax=mid + span / 2)
    for i in range(len(ys)):
        for j in range(len(xs)):
            s = cells.get((xs[j], ys[i]))
            if s is None or s.mean is None:  # an empty cell reads the same in every map
                ax.text(j, i, EMPTY_CELL, ha="center", va="center", fontsize=7.5, color="0.45")
                continue
            text = f"{s.text(scale, 1, show_n=False)}\nn={s.n}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if grid[i, j] < mid else "black")
    ax.set_xticks(range(len(xs)), axis_labels(xs))
    ax.set_yticks(range(len(ys)), axis_labels(ys))
    ax.set_xlabel(AXIS_NAMES.get(x, x))
    ax.set_ylabel(AXIS_NAMES.get(y, y))
    ax.set_title(title, fontsize=9.5)
    bar = fig.colorbar(im, ax=ax, label=title.split(" (")[0] + " (%)")
    bar.formatter.set_useOffset(False)  # (an offset label such as 1e-10+9.8e1 reads as a number)
    bar.update_ticks()
    fig.tight_layout()
    return save(fig)


AXIS_NAMES = {"prune_rate": "prune rate p (fraction pruned per round)",
              "rewind_iter": "rewind iteration k (θ_k; 0 = θ0)"}
EMPTY_CELL = "n/a\nn=0"  # as tables print a cell without a value: "n/a (0)"


def axis_labels(values: Sequence[Any]) -> list[str]:
    """Tick labels: numbers rounded to the digits that tell them apart; bins and text as they are."""
    if values and all(is_number(v) for v in values):
        return tick_labels(values)
    return [str(v) for v in values]


MANY_CONTROLS = 6  # beyond this, the legend goes beside the panel and the colours and markers come from larger sets
ZOOM_BELOW_DENSE = 0.15  # with many controls, the y axis stops this far below dense: collapsed ones are named
MANY_LEFT_OUT = "95% intervals left out (they would hide one another)"


def figure_early_stop(ticket: Sequence[Curve], controls: Sequence[tuple[str, Sequence[Curve]]],
                      ticket_label: str) -> bytes:
    """Frankle & Carbin's Figure 4 style: early-stop iteration and test accuracy at early stop against density,
    the winning ticket against its controls (mean, 95% error bars)."""
    plt = _pyplot()
    many = len(controls) > MANY_CONTROLS
    legend_rows = math.ceil((len(controls) + 1) / 3)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4 + 0.2 * legend_rows))
    for ax, key, ylabel in ((a1, "early_stop_iteration", "early-stop iteration (minimum validation loss)"),
                            (a2, ACCURACY_KEYS["test"], TEST_LABEL)):
        draw_group(ax, ticket, key, f"winning ticket: {ticket_label}", band=False, **_styles(0, TICKET))
        for i, (label, group) in enumerate(controls):
            draw_group(ax, group, key, label, band=False, interval=not many,
                       **(_many_styles(i) if many else _styles(i, "control")))
        density_axis(ax, [r["density"] for c in (*ticket, *(c for _, g in controls for c in g)) for r in c.rounds])
        ax.set_ylabel(f"{ylabel}\n({'mean; bars (the ticket only)' if many else 'mean; bars'}: 95% t-interval "
                      "over curves)", fontsize=8.5)
    if many:
        a1.plot([], [], " ", label=f"controls: means only, their {MANY_LEFT_OUT}")
    clamp_y(a1, 0.0, math.inf)  # (no iteration is negative; an interval of two curves reaches below 0)
    percent_axis(a2)
    a1.set_title("iterations to early stop (lower is faster)", fontsize=9.5)
    a2.set_title("accuracy at that iteration", fontsize=9.5)
    handles, labels = a1.get_legend_handles_labels()  # one legend, below both panels: never over a curve
    order = sorted(range(len(labels)), key=lambda i: not labels[i].startswith("winning ticket"))  # (it first)
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.5, 0.06 + 0.2 * legend_rows / (4.4 + 0.2 * legend_rows)), 1, 1))
    return save(fig)


# --------------------------------------------------------------------------- tickets beside their controls


def figure_controls(panels: Sequence[tuple[str, Sequence[Curve], Sequence[tuple[str, Sequence[Curve]]]]],
                    epsilon: float | None, key: str = ACCURACY_KEYS["test"], path=None,
                    explain: bool = False) -> bytes | None:
    """One panel per setting combination: its ticket (solid) and each of its controls (dashed), mean over seeds
    per round with 95% error bars, against density.

    With many controls (pruning-at-init baselines and their ablations) the
    panel zooms on the range near dense, and a control whose mean falls below
    it is named as such in the legend rather than squashing the others. With
    `explain` (no caption beside it) the legend also says what the dense line and
    its band are."""
    plt = _pyplot()
    many = max(len(cs) for _, _, cs in panels) > MANY_CONTROLS
    cols = 1 if many else min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=((10.5 if many else 6.2) * cols, (5.2 if many else 3.9) * rows),
                             squeeze=False)
    every = [r["density"] for _, t, cs in panels for c in (*t, *(c for _, g in cs for c in g)) for r in c.rounds]
    for ax, (title, ticket, controls) in zip(axes.flat, panels):
        dense = dense_networks(ticket, key)
        floor = sum(dense) / len(dense) - ZOOM_BELOW_DENSE if many else None
        draw_group(ax, ticket, key, "ticket", band=False, **_styles(0, TICKET))
        for i, (label, group) in enumerate(controls):
            label = label.removeprefix("control: ")
            low = min((st["mean"] for st in round_stats(group, key) if st["mean"] is not None), default=1.0)
            if floor is not None and low < floor:
                label += f" (below the axis: down to {100 * low:.0f}%)"
            draw_group(ax, group, key, label, band=False, interval=not many,
                       **(_many_styles(i) if many else _styles(i, "control")))
        dense_line(ax, dense, epsilon, legend=explain, label=dense_label(len(dense)))
        if many:  # (a score of overlapping error bars hides every curve; the tables hold each spread)
            ax.plot([], [], " ", label=f"controls: means only, their {MANY_LEFT_OUT}")
        density_axis(ax, every)
        percent_axis(ax)
        if floor is not None:
            ax.set_ylim(bottom=max(0.0, floor))
        ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=8.5)
        _legend_outside(ax, first="ticket") if many else _legend(ax, loc="lower left")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{TEST_LABEL}\n({'mean; bars (the ticket only)' if many else 'mean; bars'}: 95% t-interval "
                      "over curves)", fontsize=8.5)
    fig.tight_layout()
    return save(fig, path)


def _many_styles(i: int) -> dict[str, Any]:
    """Controls beyond Dark2's eight: tab20's colours (the ticket's blue left out), markers cycling with them."""
    import matplotlib

    colors = matplotlib.colormaps["tab20"].colors[2:]
    # (past the 18 colours, dotted: the 19 pruning-at-init controls never share a look)
    return {"color": colors[i % len(colors)], "linestyle": "--" if i < len(colors) else ":",
            "marker": "s^vD<>pPX*"[i % 10]}


# --------------------------------------------------------------------------- a setting searched as a range


def figure_range(curves: Sequence[Curve], setting: str, value: Callable[[Curve], float | None], ylabel: str,
                 bins, log_x: bool = False, scale: float = 100.0) -> bytes:
    """Every curve's value against the setting's value (points), and the mean with its 95% t-interval in each
    bin (error bars at the bin's middle, the bin's span as a horizontal bar)."""
    from .stats import Stat

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    pts = [(float(c.settings[setting]), value(c)) for c in curves if value(c) is not None]
    ax.scatter([x for x, _ in pts], [y * scale for _, y in pts], s=14, c="tab:blue", alpha=0.6,
               label=f"one curve (trial × seed), n={len(pts)}")
    for i in range(len(bins.labels)):
        lo, hi = bins.edges[i], bins.edges[i + 1]
        ys = [y for x, y in pts if bins.index(x) == i]
        st = Stat.of(ys)
        if st.mean is None:
            continue
        mid = math.sqrt(lo * hi) if log_x and lo > 0 else (lo + hi) / 2
        ax.errorbar([mid], [st.mean * scale], xerr=[[mid - lo], [hi - mid]],
                    yerr=[[(st.ci95() or 0) * scale], [(st.ci95() or 0) * scale]], fmt="s", c="tab:red", ms=5,
                    capsize=3, label="bin mean, 95% t-interval (bar: the bin)" if i == 0 else None)
        ax.annotate(f"n={st.n}", (mid, st.mean * scale), fontsize=7, xytext=(4, 4), textcoords="offset points",
                    color="tab:red")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(AXIS_NAMES.get(setting, setting) + " (searched as a range)")
    ax.set_ylabel(ylabel)
    clamp_y(ax, 0.0, scale)  # (a fraction in %: 0..100)
    ax.grid(alpha=0.3)
    ax.yaxis.get_major_formatter().set_useOffset(False)
    _legend(ax, loc="best")
    fig.tight_layout()
    return save(fig)


# --------------------------------------------------------------------------- per-layer densities
