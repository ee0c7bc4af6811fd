"""The numbers docs/reproduction.md states about the reproduction study, computed from its trials.

    cd WHERE_THE_STUDY_RAN && python docs/reproduction/findings.py studies/fashion_lenet300_reproduce.toml

Prints, per density the study measures (50%, 20%, 10%, 3.6%), test accuracy at the
early-stop iteration (mean ± sample std over the 3 seeds) and the early-stop
iteration, for: the dense network; the winning ticket (iterative, k = 0, 100,
1000); its random re-initialisation and random-mask controls (iterative, k = 0);
and one-shot pruning to that density (k = 0). Also writes the same as JSON
(--json). Every number is a round of a trial in the study's storage.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna

from ltstudy.study.config import load_study
from ltstudy.study.storage import open_storage

DENSITIES = (0.5, 0.2, 0.1, 0.036)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cfg = load_study(args.study)
    study = optuna.load_study(study_name=cfg.study.name, storage=open_storage(cfg.study.storage))
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]

    def per_seed(control: str | None, k: int, one_shot: bool, target: float) -> list[list[dict]]:
        """The rounds of each seed of the ticket with these settings, or of one of its controls."""
        (t,) = [t for t in trials if t.params == {"rewind_iter": k, "one_shot": one_shot, "target_density": target}]
        if control is None:
            return t.user_attrs["rounds_per_seed"]
        return t.user_attrs["controls_per_seed"][control]  # (each starts at the ticket's dense round)

    def at(curves: list[list[dict]], density: float, key: str) -> list[float]:
        out = []
        for rounds in curves:
            (r,) = [r for r in rounds if abs(r["density"] - density) < 0.01 * density + 2e-3] or [None]
            if r is None:  # the round closest below the density (0.8^r steps)
                r = min((r for r in rounds if r["density"] <= density), key=lambda r: density - r["density"])
            out.append(r[key])
        return out

    def closest(curves, density, key):
        vals = []
        for rounds in curves:
            r = min(rounds, key=lambda r: abs(r["density"] - density))
            vals.append((r["density"], r[key]))
        return vals

    def summary(values: list[float]) -> dict:
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values)}

    iterative = {name: per_seed(control, k, False, 0.036) for name, (control, k) in {
        "ticket k=0": (None, 0), "ticket k=100": (None, 100), "ticket k=1000": (None, 1000),
        "random re-init": ("random-reinit", 0), "random mask": ("random-mask", 0),
        "random re-init + mask": ("random-both", 0)}.items()}
    dense = [rounds[0] for rounds in iterative["ticket k=0"]]
    result: dict = {"dense": {"test_accuracy_at_early_stop": summary([r["test_accuracy_at_early_stop"]
                                                                        for r in dense]),
                              "val_accuracy": summary([r["val_accuracy"] for r in dense]),
                              "early_stop_iteration": summary([r["early_stop_iteration"] for r in dense])},
                    "densities": {}}
    for d in DENSITIES:
        row = {}
        for name, curves in iterative.items():
            pts = closest(curves, d, "test_accuracy_at_early_stop")
            row[name] = {"density": pts[0][0], "test_accuracy_at_early_stop": summary([v for _, v in pts]),
                         "val_accuracy": summary([v for _, v in closest(curves, d, "val_accuracy")]),
                         "early_stop_iteration": summary([v for _, v in closest(curves, d, "early_stop_iteration")]),
                         "start_test_accuracy": summary([v for _, v in closest(curves, d, "start_test_accuracy")])}
        shot = per_seed(None, 0, True, d)
        row["one-shot ticket k=0"] = {
            "density": shot[0][-1]["density"],
            "test_accuracy_at_early_stop": summary([s[-1]["test_accuracy_at_early_stop"] for s in shot]),
            "val_accuracy": summary([s[-1]["val_accuracy"] for s in shot]),
            "early_stop_iteration": summary([s[-1]["early_stop_iteration"] for s in shot])}
        result["densities"][str(d)] = row

    eps = cfg.study.epsilon
    matches = []
    for rounds in iterative["ticket k=0"]:
        ok = [r for r in rounds if r["val_accuracy"] >= rounds[0]["val_accuracy"] - eps - 1e-12]
        matches.append(min(r["density"] for r in ok))
    result["ticket_k0_sparsest_match_density"] = matches

    d0 = result["dense"]
    print(f"dense: test {100 * d0['test_accuracy_at_early_stop']['mean']:.1f} ± "
          f"{100 * d0['test_accuracy_at_early_stop']['std']:.1f} %, early stop at iteration "
          f"{d0['early_stop_iteration']['mean']:.0f}")
    print(f"ticket (k=0) matches dense (val within ε = {eps}) down to densities {matches} (per seed)")
    for d, row in result["densities"].items():
        print(f"density {float(d):.3g}:")
        for name, v in row.items():
            acc, es = v["test_accuracy_at_early_stop"], v["early_stop_iteration"]
            print(f"  {name:<24} at {v['density']:.3f}: test {100 * acc['mean']:5.1f} ± {100 * (acc['std'] or 0):.1f} %"
                  f"   early stop {es['mean']:6.0f} ± {es['std'] or 0:4.0f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
