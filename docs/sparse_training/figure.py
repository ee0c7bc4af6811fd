"""docs/sparse-training.md's figure: the IMP ticket against dynamic sparse training, from findings.json.

    python docs/sparse_training/figure.py [--findings docs/sparse_training/findings.json] \
        [--out docs/img/sparse_training.png]

LeNet-300-100 on Fashion-MNIST, three seeds. Left: test accuracy at the early-stop iteration (mean, with bars of
± one sample std over the seeds) at the five levels the page reports, each curve from the dense network; right:
at the sparsest two of those levels, each method's accuracy against the training iterations its network needs
(its own, plus the ticket's rounds for the ticket and the controls that use its masks; log scale; methods
of equal cost are drawn side by side, colours as on the left). The numbers
are those findings.py computed from the study's trial; no number is typed in here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOOR = 75.0  # (%: a mean below it is drawn as an arrow at the bottom of the left axis, with its value)
CURVES = (("IMP ticket", "IMP ticket (k = 0)", "C0", "o-"),
          ("rigl-2x", "RigL, ERK, 2× budget", "darkred", "D-"),
          ("rigl", "RigL, ERK", "C3", "D--"),
          ("rigl-uniform", "RigL, uniform", "C6", "v--"),
          ("set", "SET, ERK", "C2", "^--"),
          ("static", "static sparse, ERK", "C7", "x:"),
          ("synflow", "SynFlow", "C1", "s--"),
          ("random-reinit", "control: random re-init", "C5", "<:"))


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=Path, default=HERE / "findings.json")
    ap.add_argument("--out", type=Path, default=HERE.parent / "img" / "sparse_training.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = json.loads(args.findings.read_text())
    dense = found["dense"]
    levels = sorted(((float(d), row["methods"]) for d, row in found["levels"].items()), reverse=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.6), dpi=120, gridspec_kw={"width_ratios": [1.4, 1]})
    left.axhline(100 * dense["mean"], color="k", lw=1, alpha=0.6)
    left.axhspan(100 * (dense["mean"] - dense["std"]), 100 * (dense["mean"] + dense["std"]), color="k", alpha=0.08)
    for key, label, colour, style in CURVES:
        x = [100.0] + [100 * d for d, _ in levels]
        y = [100 * dense["mean"]] + [100 * m[key]["accuracy"]["mean"] for _, m in levels]
        err = [100 * dense["std"]] + [100 * (m[key]["accuracy"]["std"] or 0) for _, m in levels]
        left.errorbar(x, y, yerr=err, fmt=style, color=colour, capsize=3, ms=5, lw=1.4, label=label)
    # (a collapsed run would squash the other curves: the axis keeps them, and an arrow marks a point below it)
    means = [100 * m[key]["accuracy"]["mean"] for _, m in levels for key, *_ in CURVES]
    floor = min(v for v in means if v >= FLOOR) - 1.5
    for key, label, colour, _ in CURVES:
        for d, m in levels:
            a = m[key]["accuracy"]
            if 100 * a["mean"] < floor:
                left.annotate(f"{label}: {100 * a['mean']:.1f} ± {100 * (a['std'] or 0):.1f}",
                              xy=(100 * d, floor), xytext=(-12, 14), textcoords="offset points", color=colour,
                              fontsize=8, ha="right", arrowprops={"arrowstyle": "->", "color": colour})
    left.set_ylim(bottom=floor)
    left.set_xscale("log")
    left.invert_xaxis()
    ticks = [100, *(round(100 * d, 1) for d, _ in levels)]
    left.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    left.minorticks_off()
    left.set_xlabel("weights remaining (log scale); the grey band is the dense network ± std")
    left.set_ylabel("test accuracy at early stop (%)")
    left.set_title(f"accuracy against density ({dense['n']} seeds)", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower left", ncol=2)
    for (density, methods), marker in zip(levels[-2:], ("o", "s"), strict=True):
        for i, (key, _, colour, _) in enumerate(CURVES):
            m = methods[key]
            shift = 1 + 0.025 * (i - len(CURVES) / 2)  # (side by side where costs are equal)
            if 100 * m["accuracy"]["mean"] < floor:
                continue
            right.errorbar(m["total_iterations"]["mean"] * shift, 100 * m["accuracy"]["mean"],
                           yerr=100 * (m["accuracy"]["std"] or 0), fmt=marker, color=colour, capsize=3, ms=6,
                           mfc=colour if marker == "o" else "white")
        right.plot([], [], marker, color="k", mfc="k" if marker == "o" else "white",
                   label=f"{100 * density:.1f}% density")
    right.set_xscale("log")
    right.set_xlabel("training iterations the network needs (log scale)")
    right.set_ylabel("test accuracy at early stop (%)")
    right.set_title("accuracy against cost at the two sparsest levels", fontsize=10)
    right.set_ylim(left.get_ylim())
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle("LeNet-300-100 on Fashion-MNIST, 1,000 iterations a round (RigL 2×: 2,000)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
