"""docs/stability.md's figure for choosing p: the level barrier and accuracy of IMP at three rates, from findings.json.

    python docs/connectivity/figure.py [--findings docs/connectivity/findings.json] [--out docs/img/connectivity.png]

LeNet-300-100 on Fashion-MNIST, IMP at p = 0.2, 0.5 and 0.8 (three seeds each). Left: each pruned round's
validation level barrier (mean, with bars of ± one sample std over the seeds) against the round's density, with
the 2-point threshold; right: test accuracy at the early-stop iteration against density, with the dense network's
band; a hollow marker is a round that fewer than all seeds match (validation accuracy within ε of dense). The
numbers are those findings.py computed from the study's trials; no number is typed in here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
STYLE = {"0.2": ("C0", "o"), "0.5": ("C1", "s"), "0.8": ("C3", "D")}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=Path, default=HERE / "findings.json")
    ap.add_argument("--out", type=Path, default=HERE.parent / "img" / "connectivity.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = json.loads(args.findings.read_text())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2), dpi=120)
    left.axhline(100 * found["threshold"], color="k", lw=1, ls=":", label="2 points (connected below)")
    dense = next(iter(found["rates"].values()))["dense_test_accuracy"]
    right.axhline(100 * dense["mean"], color="k", lw=1, alpha=0.6)
    right.axhspan(100 * (dense["mean"] - dense["std"]), 100 * (dense["mean"] + dense["std"]), color="k", alpha=0.08)
    for p, rate in found["rates"].items():
        colour, marker = STYLE.get(p, ("C7", "x"))
        rounds = rate["rounds"]
        x = [100 * lv["density"] for lv in rounds]
        left.errorbar(x, [100 * lv["level_barrier"]["mean"] for lv in rounds],
                      yerr=[100 * (lv["level_barrier"]["std"] or 0) for lv in rounds], color=colour, marker=marker,
                      ms=5, capsize=3, lw=1.4, label=f"p = {p}")
        d = rate["dense_test_accuracy"]
        xs = [100.0, *x]
        ys = [100 * d["mean"]] + [100 * lv["test_accuracy"]["mean"] for lv in rounds]
        es = [100 * (d["std"] or 0)] + [100 * (lv["test_accuracy"]["std"] or 0) for lv in rounds]
        right.errorbar(xs, ys, yerr=es, color=colour, lw=1.4, capsize=3, fmt="-", label=f"p = {p}")
        full = [True] + [lv["matching_curves"] == lv["n"] for lv in rounds]
        right.scatter([a for a, f in zip(xs, full, strict=True) if f], [b for b, f in zip(ys, full, strict=True) if f],
                      color=colour, marker=marker, s=28, zorder=3)
        right.scatter([a for a, f in zip(xs, full, strict=True) if not f],
                      [b for b, f in zip(ys, full, strict=True) if not f], facecolors="white", edgecolors=colour,
                      marker=marker, s=40, zorder=3)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ticks = [100, 50, 20, 10, 5, 2, 1]
        ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("weights remaining (log scale)")
        ax.grid(alpha=0.3)
    left.set_ylabel("validation level barrier (error points)")
    left.set_title("barrier from round r-1 to round r", fontsize=10)
    left.legend(fontsize=8)
    right.set_ylabel("test accuracy at early stop (%)")
    right.set_title("accuracy; hollow: not every seed matches dense", fontsize=10)
    right.legend(fontsize=8, loc="lower left")
    fig.suptitle("IMP on LeNet-300-100, Fashion-MNIST, 3,000 iterations a round, k = 100 (3 seeds)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
