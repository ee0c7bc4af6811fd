"""The figure of where the pruning falls: each prunable layer's density per round, and the whole network's."""

from __future__ import annotations

from collections.abc import Sequence

from .curves import READABLE_DENSITIES, TICKET, Curve, density_label
from .plots import _legend_outside, _pyplot, _styles, save


def figure_layers(curves: Sequence[Curve], title: str) -> bytes | None:
    """Each prunable layer's density per round (mean over curves), and the whole network's; log scale."""
    rounds = [c.rounds for c in curves if c.rounds and c.rounds[0].get("layer_density")]
    if not rounds:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    depth = min(len(r) for r in rounds)
    layers = list(rounds[0][0]["layer_density"])
    xs = list(range(depth))
    for i, layer in enumerate(layers):
        ys = [sum(r[j]["layer_density"][layer] for r in rounds) / len(rounds) for j in xs]
        # (layers pruned at one rate lie on one line: shrinking, hollow markers keep each one visible)
        ax.plot(xs, ys, marker="os^Dv<>"[i % 7], ms=max(3.0, 8.0 - 1.6 * i), mfc="none", lw=max(1.0, 2.6 - 0.5 * i),
                label=layer, color=_styles(i, TICKET)["color"])
    ax.plot(xs, [sum(r[j]["density"] for r in rounds) / len(rounds) for j in xs], "k--", lw=1.2,
            label="whole network")
    ax.set_yscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    lowest = min(min(r[depth - 1]["layer_density"].values()) for r in rounds)
    ticks = [d for d in READABLE_DENSITIES if d >= lowest / 2.5] or [1.0]
    ax.yaxis.set_major_locator(FixedLocator(ticks))  # (in %, as the tables and the density axes are)
    ax.set_yticklabels([density_label(d) for d in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(xs)
    ax.set_xlabel("round (0 = dense)")
    ax.set_ylabel("density: weights remaining (log scale)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    fig.tight_layout()
    return save(fig)
