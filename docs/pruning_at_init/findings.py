"""The numbers docs/pruning-at-init.md states about the pruning-at-initialisation study, computed from its trial.

    cd WHERE_THE_STUDY_RAN && python docs/pruning_at_init/findings.py studies/fashion_lenet300_pai.toml \
        --json docs/pruning_at_init/findings.json

Prints, at the ticket's levels nearest 51%, 21%, 10.8% and 3.6% density, test accuracy at
the early-stop iteration (mean ± sample std over the 3 seeds) of the IMP ticket, each of its
controls and baselines, and each ablation's change against its method (paired by seed).
Every number is a round of the study's trial in its storage.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna

from ltstudy.study.config import load_study
from ltstudy.study.storage import open_storage

DENSITIES = (0.51, 0.21, 0.108, 0.036)
KEY = "test_accuracy_at_early_stop"


def summary(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def text(s: dict, scale: float = 100.0) -> str:
    return f"{scale * s['mean']:5.1f} ± {scale * (s['std'] or 0):.1f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cfg = load_study(args.study)
    study = optuna.load_study(study_name=cfg.study.name, storage=open_storage(cfg.study.storage))
    (trial,) = [t for t in study.trials if t.state.name == "COMPLETE"]
    curves = {"IMP ticket": trial.user_attrs["rounds_per_seed"], **trial.user_attrs["controls_per_seed"]}
    ticket = curves["IMP ticket"][0]
    levels = {d: min(range(1, len(ticket)), key=lambda r: abs(ticket[r]["density"] - d)) for d in DENSITIES}
    dense = summary([seed[0][KEY] for seed in curves["IMP ticket"]])
    result: dict = {"dense": dense, "levels": {}}
    for r in levels.values():
        row = {}
        for name, per_seed in curves.items():
            assert all(abs(seed[r]["density"] - ticket[r]["density"]) < 1e-9 for seed in per_seed), name
            row[name] = summary([seed[r][KEY] for seed in per_seed])
        ablations = {}
        for method in ("snip", "grasp", "synflow", "magnitude-init"):
            for ablation in ("shuffled", "inverted", "reinit"):
                name = f"{method}-{ablation}"
                if name in curves and method in curves:
                    ablations[name] = summary([a[r][KEY] - m[r][KEY] for a, m in
                                               zip(curves[name], curves[method], strict=True)])
        result["levels"][f"{ticket[r]['density']:.4f}"] = {"round": r, "accuracy": row, "ablation_minus_method":
                                                           ablations}
    print(f"dense: test {text(dense)} % (test accuracy at the early-stop iteration, mean ± std over "
          f"{dense['n']} seeds)")
    for density, level in result["levels"].items():
        print(f"\nlevel {level['round']}, density {100 * float(density):.1f}%:")
        for name, s in sorted(level["accuracy"].items(), key=lambda kv: -kv[1]["mean"]):
            print(f"  {name:<26} {text(s)} %")
        print("  ablation minus its method, paired by seed (points):")
        for name, s in level["ablation_minus_method"].items():
            print(f"    {name:<26} {text(s)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
