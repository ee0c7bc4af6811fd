"""The numbers docs/sparse-training.md states about the ticket against dynamic sparse training, from its trial.

    cd WHERE_THE_STUDY_RAN && python docs/sparse_training/findings.py \
        studies/fashion_lenet300_sparse_training.toml --json docs/sparse_training/findings.json

At the ticket's levels nearest 51%, 21%, 10.8%, 3.6% and 1.4% density, for the IMP ticket and each
control: test accuracy at the early-stop iteration (mean ± sample std over the 3 seeds) and its gap
to the ticket (paired by seed), and the cost of the network at that level, in training iterations and
in wall-clock seconds on the machine that ran the study: the level's own training, and everything it
needs as ltstudy counts it. The ticket needs every round before it (0..r); a control whose rounds
charge the ticket's path (`path_iterations` > 0: random re-init, and SynFlow, which ltstudy charges
like every mask branch) needs the ticket's rounds 0..r-1 and its own; static sparse, SET and RigL need
only the level's weight count, so their own training. SynFlow's scoring and RigL's dense gradients are
in the seconds, not in the iterations. Every number is a round of the study's trial in its storage.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna

from ltstudy.study.config import load_study
from ltstudy.study.storage import open_storage

DENSITIES = (0.51, 0.21, 0.108, 0.036, 0.014)
KEY = "test_accuracy_at_early_stop"
TICKET = "IMP ticket"
PAIRS = (("rigl-2x", "rigl"), ("rigl", "rigl-uniform"), ("rigl", "set"), ("set", "static"), ("rigl", "static"),
         ("random-reinit", "static"), ("random-reinit", "rigl"))


def summary(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def text(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * s['mean']:.{digits}f} ± {scale * (s['std'] or 0):.{digits}f}"


def costs(name: str, seed: list[dict], ticket: list[dict], r: int) -> tuple[float, float, float, float]:
    """(own iterations, own seconds, iterations and seconds of everything the level-r network needs)."""
    own = seed[r]
    # (the ticket, and a control whose rounds charge the ticket's path, need the ticket's rounds 0..r-1)
    charged = name == TICKET or any(q.get("path_iterations", 0) > 0 for q in seed)
    before = ticket[:r] if charged else []
    return (own["iterations"], own["wall_seconds"], own["iterations"] + sum(q["iterations"] for q in before),
            own["wall_seconds"] + sum(q["wall_seconds"] for q in before))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cfg = load_study(args.study)
    study = optuna.load_study(study_name=cfg.study.name, storage=open_storage(cfg.study.storage))
    (trial,) = [t for t in study.trials if t.state.name == "COMPLETE"]
    curves = {TICKET: trial.user_attrs["rounds_per_seed"], **trial.user_attrs["controls_per_seed"]}
    ticket0 = curves[TICKET][0]
    levels = {d: min(range(1, len(ticket0)), key=lambda r: abs(ticket0[r]["density"] - d)) for d in DENSITIES}
    dense = summary([seed[0][KEY] for seed in curves[TICKET]])
    result: dict = {"dense": dense, "dense_seconds": summary([seed[0]["wall_seconds"] for seed in curves[TICKET]]),
                    "levels": {}}
    for r in levels.values():
        row = {}
        for name, per_seed in curves.items():
            assert all(abs(seed[r]["density"] - ticket0[r]["density"]) < 1e-9 for seed in per_seed), name
            cost = [costs(name, seed, t, r) for seed, t in zip(per_seed, curves[TICKET], strict=True)]
            row[name] = {"accuracy": summary([seed[r][KEY] for seed in per_seed]),
                         "minus_ticket": summary([seed[r][KEY] - t[r][KEY] for seed, t in
                                                  zip(per_seed, curves[TICKET], strict=True)]),
                         "iterations": summary([c[0] for c in cost]), "seconds": summary([c[1] for c in cost]),
                         "total_iterations": summary([c[2] for c in cost]),
                         "total_seconds": summary([c[3] for c in cost]),
                         "per_seed": [seed[r][KEY] for seed in per_seed],
                         # (near 1: the network was still improving when training stopped; k = 0, so every
                         # round's schedule starts at iteration 0)
                         "early_stop_fraction": summary([seed[r]["early_stop_iteration"] / seed[r]["iterations"]
                                                         for seed in per_seed]),
                         "layer_density": {layer: statistics.mean(seed[r]["layer_density"][layer] for seed in per_seed)
                                           for layer in per_seed[0][r]["layer_density"]}}
        # (one method against another at this level, paired by seed: what the page says one change is worth)
        diffs = {f"{a} - {b}": summary([x[r][KEY] - y[r][KEY] for x, y in zip(curves[a], curves[b], strict=True)])
                 for a, b in PAIRS if a in curves and b in curves}
        result["levels"][f"{ticket0[r]['density']:.4f}"] = {"round": r, "methods": row, "differences": diffs}
    print(f"dense: test {text(dense)} % (test accuracy at the early-stop iteration, mean ± std over "
          f"{dense['n']} seeds); round 0 took {result['dense_seconds']['mean']:.1f} s")
    for density, level in result["levels"].items():
        print(f"\nlevel {level['round']}, density {100 * float(density):.1f}%:")
        print(f"  {'method':<16} {'test acc %':>12} {'- ticket':>12} {'iters':>6} {'s':>6} {'total iters':>11} "
              f"{'total s':>8}")
        for name, m in sorted(level["methods"].items(), key=lambda kv: -kv[1]["accuracy"]["mean"]):
            print(f"  {name:<16} {text(m['accuracy']):>12} {text(m['minus_ticket']):>12} "
                  f"{m['iterations']['mean']:6.0f} {m['seconds']['mean']:6.1f} {m['total_iterations']['mean']:11.0f} "
                  f"{m['total_seconds']['mean']:8.1f} (own s ± {m['seconds']['std'] or 0:.1f})")
        print("  paired differences (points): " + "; ".join(f"{k} {text(v)}" for k, v in level["differences"].items()))
        print("  per-layer densities: " + "; ".join(f"{k} " + ", ".join(f"{a} {100 * b:.1f}%" for a, b in
                                                                         m["layer_density"].items())
                                                 for k, m in level["methods"].items()
                                                 if k in (TICKET, "rigl", "rigl-uniform")))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
