"""docs/pruning-at-init.md's figure: the IMP ticket against pruning at initialisation, from findings.json.

    python docs/pruning_at_init/figure.py [--findings docs/pruning_at_init/findings.json] [--out docs/img/pai.png]

Test accuracy at the early-stop iteration (mean, with bars of ± one sample std over the 3 seeds) of LeNet-300-100
on Fashion-MNIST at the four levels the page reports, each curve starting from the dense network (level 0): the
IMP ticket, the four methods that prune at initialisation, random pruning, and the paper's two controls. The
numbers are those findings.py computed from the study's trial; no number is typed in here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURVES = (("IMP ticket", "IMP ticket (k = 0)", "C0", "o-"),
          ("synflow", "SynFlow", "C1", "s--"),
          ("magnitude-init", "magnitude at init", "C2", "^--"),
          ("snip", "SNIP", "C4", "v--"),
          ("grasp", "GraSP", "C3", "D--"),
          ("random-uniform", "random, uniform", "C7", "x:"),
          ("random-reinit", "control: random re-init", "C5", "<:"),
          ("random-mask", "control: random mask", "C8", ">:"))


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=Path, default=HERE / "findings.json")
    ap.add_argument("--out", type=Path, default=HERE.parent / "img" / "pai.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = json.loads(args.findings.read_text())
    dense = found["dense"]
    levels = sorted(((float(d), row["accuracy"]) for d, row in found["levels"].items()), reverse=True)
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=120)
    ax.axhline(100 * dense["mean"], color="k", lw=1, alpha=0.6)
    ax.axhspan(100 * (dense["mean"] - dense["std"]), 100 * (dense["mean"] + dense["std"]), color="k", alpha=0.08)
    for key, label, colour, style in CURVES:
        x = [100.0] + [100 * d for d, _ in levels]
        y = [100 * dense["mean"]] + [100 * acc[key]["mean"] for _, acc in levels]
        err = [100 * dense["std"]] + [100 * (acc[key]["std"] or 0) for _, acc in levels]
        ax.errorbar(x, y, yerr=err, fmt=style, color=colour, capsize=3, ms=5, lw=1.4, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100, *(round(100 * d, 1) for d, _ in levels)]
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (log scale); the grey band is the dense network ± std")
    ax.set_ylabel("test accuracy at early stop (%)")
    ax.set_title("LeNet-300-100 on Fashion-MNIST, 1,000 iterations a round (3 seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
