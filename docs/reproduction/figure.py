"""The README's figure: the winning ticket against its controls on Fashion-MNIST, from findings.json.

    python docs/reproduction/figure.py [--findings docs/reproduction/findings.json] [--out docs/img/tickets.png]

Test accuracy at the early-stop iteration (mean, with bars of ± one sample std over the 3 seeds) of
LeNet-300-100's IMP ticket (k = 0), its random re-initialisation, its random mask and one-shot pruning, at the
four densities the reproduction reports, each curve starting from the dense network (level 0). The numbers are those
findings.py computed from the study's trials; no number is typed in here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURVES = (("ticket k=0", "winning ticket (IMP, k = 0)", "C0", "o-"),
          ("random re-init", "control: the ticket's mask, a fresh init", "C1", "s--"),
          ("random mask", "control: a random mask, the ticket's init", "C2", "^--"),
          ("one-shot ticket k=0", "one-shot pruning to that density", "C7", "d:"))


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=Path, default=HERE / "findings.json")
    ap.add_argument("--out", type=Path, default=HERE.parent / "img" / "tickets.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = json.loads(args.findings.read_text())
    dense = found["dense"]["test_accuracy_at_early_stop"]
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=120)
    ax.axhline(100 * dense["mean"], color="k", lw=1, ls="-", alpha=0.6)
    ax.axhspan(100 * (dense["mean"] - dense["std"]), 100 * (dense["mean"] + dense["std"]), color="k", alpha=0.08)
    ax.text(80, 100 * (dense["mean"] - dense["std"]) - 0.05, "the dense network (± std)", ha="left", va="top",
            fontsize=8)
    for key, label, colour, style in CURVES:
        points = sorted(((row[key]["density"], row[key]["test_accuracy_at_early_stop"])
                         for row in found["densities"].values()), reverse=True)
        points.insert(0, (1.0, dense))  # every curve starts from the same dense network (level 0)
        x = [100 * d for d, _ in points]
        y = [100 * a["mean"] for _, a in points]
        err = [100 * (a["std"] or 0) for _, a in points]
        ax.errorbar(x, y, yerr=err, fmt=style, color=colour, capsize=3, ms=5, lw=1.5, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100, 51, 21, 10.8, 3.6]
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (log scale)")
    ax.set_ylabel("test accuracy at early stop (%)")
    ax.set_title("LeNet-300-100 on Fashion-MNIST: tickets against their controls (3 seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
