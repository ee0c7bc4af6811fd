"""The numbers docs/stability.md states about the stability study, computed from its trials.

    cd WHERE_THE_STUDY_RAN && python docs/stability/findings.py studies/fashion_lenet300_stability.toml \
        --json docs/stability/findings.json --plot docs/stability/stability.png

For the dense network at each k of `[stability] dense_ks` and for the ticket of each trial's k at
its measured rounds: validation and test instability in error points (mean ± sample std over the
3 seeds), the mean error of the path's ends, and how many seeds are stable (below 2 points). The
summary is ltstudy.study.stability_summary's, the one `ltstudy stability STUDY.toml` and the report
print; every number is a path stored with a round of the study's trials.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from ltstudy.engine.config import STABLE
from ltstudy.study.config import load_study
from ltstudy.study.curves import TICKET
from ltstudy.study.stability_plots import draw_paths
from ltstudy.study.stability_summary import earliest_stable_k, summarise
from ltstudy.study.storage import open_storage
from ltstudy.study.trial_results import collect


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    cfg = load_study(args.study)
    study = optuna.load_study(study_name=cfg.study.name, storage=open_storage(cfg.study.storage))
    col = collect(study.get_trials(deepcopy=False), cfg.searched)
    by_k: dict[int, list] = {}
    for c in col.curves:
        if c.kind == TICKET:
            by_k.setdefault(int(c.settings["rewind_iter"]), []).append(c)
    # (every trial measures the same dense starts, through the cache: one per seed)
    dense = [s for s in summarise(next(iter(by_k.values()))) if s.label == "dense"]
    tickets = {k: [s for s in summarise(curves) if s.label == "ticket"] for k, curves in sorted(by_k.items())}
    print("start             k      density  val instability  test instability  end val error  stable seeds")
    for label, group in [("dense", dense)] + [(f"ticket (k = {k})", ss) for k, ss in tickets.items()]:
        for s in group:
            print(f"{label:<17} {s.k:<6} {100 * s.density:6.2f}%  {s.val.text(digits=2, show_n=False):>15}  "
                  f"{s.test.text(digits=2, show_n=False):>16}  {50 * (s.val_path[0] + s.val_path[-1]):12.2f}%  "
                  f"{s.stable}/{s.n}")
    first = earliest_stable_k(dense)
    print(f"earliest stable k of the dense network: {first.k if first else 'none measured'}")
    result = {"study": study.study_name, "threshold": STABLE, "earliest_stable_k": first.k if first else None,
              "dense": [s.to_dict() for s in dense],
              "tickets": {str(k): [s.to_dict() for s in ss] for k, ss in tickets.items()}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(dense, tickets, args.plot)
    return result


def plot(dense: list, tickets: dict[int, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15.5, 4.3))
    ax = axes[0]
    xs = list(range(len(dense)))
    for stat, style, name in ((lambda s: s.val, "o-", "validation"), (lambda s: s.test, "s--", "test")):
        ax.errorbar(xs, [100 * stat(s).mean for s in dense], yerr=[100 * (stat(s).std or 0) for s in dense],
                    fmt=style, capsize=3, label=f"{name} (mean ± std, {dense[0].n} seeds)")
    ax.set_xticks(xs, [str(s.k) for s in dense])
    ax.set_xlabel("k: the dense network's iteration both copies start from")
    ax.set_title("dense LeNet-300-100, from θ_k")
    ax = axes[1]
    for k, ss in tickets.items():
        ax.errorbar([100 * s.density for s in ss], [100 * s.val.mean for s in ss],
                    yerr=[100 * (s.val.std or 0) for s in ss], fmt="o-", capsize=3, label=f"IMP ticket, k = {k}")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted({100 * s.density for ss in tickets.values() for s in ss})
    ax.set_xticks(ticks, [f"{t:.3g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("ticket density, round start m ⊙ θ_k")
    ax.set_title("IMP tickets: validation instability (mean ± std)")
    for ax in axes[:2]:
        ax.axhline(100 * STABLE, color="grey", ls=":", label="stable below 2 points (the paper)")
        ax.set_ylabel("instability (error points)")
        ax.set_ylim(bottom=-0.3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    shown = [dense[0], dense[-1], *(ss[-1] for ss in tickets.values())]
    draw_paths(axes[2], [{"label": s.label, "k": s.k, "density": s.density, "alphas": s.alphas,
                          "val_errors": s.val_path} for s in shown],
               f"validation error (%), mean of {dense[0].n} seeds")
    axes[2].get_legend().remove()
    for line, s in zip(axes[2].get_lines(), shown, strict=True):
        line.set_label(f"dense, k = {s.k}" if s.label == "dense" else f"ticket {100 * s.density:.3g}%, k = {s.k}")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
