"""Stability of LeNet-300-100 on Fashion-MNIST (Frankle et al., ICML 2020's Figure 2/3 question), three seeds.

    python docs/stability/findings.py --cache-dir .ltstudy/cache --json docs/stability/findings.json \
        --plot docs/stability/stability.png

The recipe is studies/fashion_lenet300_reproduce.toml's (Adam 1.2e-3, batch 60, 3,000 iterations
per round, 20% of the hidden and 10% of the output layer's weights per round, layer-wise). For each
seed (θ0 and copy A's data order), `ltstudy stability`'s measurement: the dense network from θ_k
at k = 0, 25, 100, 500, 1000, and the IMP ticket (k = 0) from its round starts m ⊙ θ0 at rounds 7,
10 and 15 (21%, 10.8% and 3.6% density). Prints validation and test instability (error points,
mean ± sample std over the seeds) and writes every path as JSON and a figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ltstudy.engine.cache import RoundCache
from ltstudy.engine.config import TicketConfig
from ltstudy.engine.data import load_dataset
from ltstudy.engine.stability import STABLE, StabilityAnalysis
from ltstudy.study.stability_plots import draw_paths

KS = (0, 25, 100, 500, 1000)
ROUNDS = (7, 10, 15)
SEEDS = (0, 1, 2)
RECIPE = {"device": "cpu", "data": {"name": "fashion-mnist"}, "model": {"name": "lenet-300-100"},
          "train": {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "iterations": 3000, "eval_every": 100},
          "prune": {"prune_rate": 0.2, "output_rate": 0.5, "scope": "layerwise", "rounds": max(ROUNDS),
                    "rewind_iter": 0}}


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", type=Path, help="the training cache (the ticket's rounds are shared with studies)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    cache = RoundCache(args.cache_dir) if args.cache_dir else None
    t0 = time.perf_counter()
    runs = []
    for seed in SEEDS:
        cfg = TicketConfig.from_dict({**RECIPE, "seed": seed})
        data = load_dataset(cfg.data, "cpu")
        analysis = StabilityAnalysis(cfg, data, cache)
        runs.append([r.to_dict() for r in analysis.dense(KS) + analysis.ticket(ROUNDS)])
        print(f"seed {seed} done after {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for i, first in enumerate(runs[0]):
        same = [run[i] for run in runs]
        val, test = spread([r["val_instability"] for r in same]), spread([r["test_instability"] for r in same])
        ends = spread([(r["val_errors"][0] + r["val_errors"][-1]) / 2 for r in same])
        rows.append({"label": first["label"], "k": first["k"], "round": first["round"], "density": first["density"],
                     "val_instability": val, "test_instability": test, "end_val_error": ends,
                     "stable_seeds": sum(r["val_instability"] < STABLE for r in same)})
    print("start   k     round  density  val instability   test instability  end val error  stable seeds")
    for r in rows:
        print(f"{r['label']:<7} {r['k']:<5} {r['round']:<6} {100 * r['density']:6.2f}%  "
              f"{100 * r['val_instability'][0]:5.2f} ± {100 * r['val_instability'][1]:4.2f}     "
              f"{100 * r['test_instability'][0]:5.2f} ± {100 * r['test_instability'][1]:4.2f}     "
              f"{100 * r['end_val_error'][0]:5.2f}%        {r['stable_seeds']}/{len(SEEDS)}")
    elapsed = time.perf_counter() - t0
    print(f"{elapsed / 60:.1f} min on this machine")
    result = {"recipe": RECIPE, "seeds": list(SEEDS), "threshold": STABLE, "summary": rows, "runs": runs,
              "minutes": elapsed / 60}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(rows, runs, args.plot)
    return result


def plot(rows: list[dict], runs: list[list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, label in zip(axes[:2], ("dense", "ticket"), strict=True):
        group = [r for r in rows if r["label"] == label]
        xs = list(range(len(group)))
        for key, style, name in (("val_instability", "o-", "validation"), ("test_instability", "s--", "test")):
            ax.errorbar(xs, [100 * r[key][0] for r in group], yerr=[100 * r[key][1] for r in group], fmt=style,
                        capsize=3, label=f"{name} (mean ± std, {len(runs)} seeds)")
        ax.axhline(100 * STABLE, color="grey", ls=":", label="stable below 2 points")
        ax.set_xticks(xs, [str(r["k"]) if label == "dense" else f"{100 * r['density']:.3g}%" for r in group])
        ax.set_xlabel("rewind iteration k" if label == "dense" else "ticket density (round start m ⊙ θ0)")
        ax.set_ylabel("instability (error points)")
        ax.set_title("dense LeNet-300-100, from θ_k" if label == "dense" else "IMP ticket (k = 0)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    draw_paths(axes[2], runs[0], "validation error (%), seed 0")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
