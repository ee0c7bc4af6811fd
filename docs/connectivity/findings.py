"""The numbers docs/stability.md states about the connectivity study (choosing p), computed from its trials.

    cd WHERE_THE_STUDY_RAN && python docs/connectivity/findings.py studies/fashion_lenet300_connectivity.toml \
        --json docs/connectivity/findings.json

For each pruning rate p (one trial, three seeds): every pruned round's density, validation and test
level barrier in error points and test accuracy at the early-stop iteration (mean ± sample std over
the seeds), how many seeds are connected (validation barrier below 2 points) and how many match the
dense network (validation accuracy within ε); then, over every measured round of every seed, the 2 × 2
count of matching against connected, and the barrier of the last matching round of each seed against
that of its first round that no longer matches. The summaries are ltstudy.study.level_summary's, the
ones the report and `ltstudy stability STUDY.toml` print; every number is a round of the study's trials.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from ltstudy.engine.linear_paths import STABLE
from ltstudy.study.config import load_study
from ltstudy.study.curves import TICKET, matches
from ltstudy.study.level_summary import summarise_levels, verdicts
from ltstudy.study.stats import Stat
from ltstudy.study.storage import open_storage
from ltstudy.study.trial_results import collect

KEY = "test_accuracy_at_early_stop"


def stat(s: Stat) -> dict:
    return {"mean": s.mean, "std": s.std, "n": s.n}


def first_failure(curve, epsilon: float) -> dict | None:
    """The seed's first pruned round that no longer matches dense, beside the round before it."""
    dense = curve.rounds[0]["val_accuracy"]
    for prev, r in zip(curve.rounds[:-1], curve.rounds[1:], strict=True):
        if not matches(r["val_accuracy"], dense, epsilon):
            return {"round": int(r["round"]), "density": r["density"], "level_barrier": r["level_barrier"],
                    "previous_level_barrier": prev.get("level_barrier"),
                    "max_barrier_of_matching_rounds": max((q["level_barrier"] for q in curve.rounds[1:r["round"]]),
                                                          default=None),
                    "val_accuracy_drop": dense - r["val_accuracy"]}
    return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cfg = load_study(args.study)
    eps = cfg.study.epsilon
    study = optuna.load_study(study_name=cfg.study.name, storage=open_storage(cfg.study.storage))
    col = collect(study.get_trials(deepcopy=False), cfg.searched)
    by_p: dict[float, list] = {}
    for c in col.curves:
        if c.kind == TICKET:
            by_p.setdefault(float(c.settings["prune_rate"]), []).append(c)
    result: dict = {"study": study.study_name, "threshold": STABLE, "epsilon": eps, "rates": {}}
    for p, curves in sorted(by_p.items()):
        dense = Stat.of(c.rounds[0][KEY] for c in curves)
        dense_val = Stat.of(c.rounds[0]["val_accuracy"] for c in curves)
        levels = []
        for lv in summarise_levels(curves, eps):
            row = lv.to_dict()
            row["test_accuracy"] = stat(Stat.of(c.rounds[lv.round][KEY] for c in curves))
            row["val_accuracy"] = stat(Stat.of(c.rounds[lv.round]["val_accuracy"] for c in curves))
            levels.append(row)
        v = verdicts(curves, eps)
        result["rates"][f"{p:g}"] = {
            "seeds": len(curves), "dense_test_accuracy": stat(dense), "dense_val_accuracy": stat(dense_val),
            "rounds": levels, "verdicts": {**v.to_dict(), "agree": v.agree, "n": v.n},
            "first_failures": [first_failure(c, eps) for c in curves],
            "train_iterations": [c.train_iterations() for c in curves]}
    every = verdicts([c for cs in by_p.values() for c in cs], eps)
    result["verdicts"] = {**every.to_dict(), "agree": every.agree, "n": every.n}
    # (does the barrier separate the rounds that match from those that do not, whatever the threshold?)
    pairs = [(r["level_barrier"], matches(r["val_accuracy"], c.rounds[0]["val_accuracy"], eps))
             for cs in by_p.values() for c in cs for r in c.rounds[1:] if r.get("level_barrier") is not None]
    result["largest_matching_barrier"] = max((b for b, m in pairs if m), default=None)
    result["smallest_failing_barrier"] = min((b for b, m in pairs if not m), default=None)

    for p, r in result["rates"].items():
        d = r["dense_test_accuracy"]
        print(f"\np = {p}: dense test {100 * d['mean']:.1f} ± {100 * d['std']:.1f} % over {r['seeds']} seeds")
        print("  round  density  val barrier   test barrier  test acc      connected  matching")
        for lv in r["rounds"]:
            vb, tb, ta = lv["level_barrier"], lv["level_barrier_test"], lv["test_accuracy"]
            print(f"  {lv['round']:>5}  {100 * lv['density']:6.2f}%  {100 * vb['mean']:5.2f} ± {100 * vb['std']:4.2f}"
                  f"  {100 * tb['mean']:5.2f} ± {100 * tb['std']:4.2f}  {100 * ta['mean']:5.1f} ± {100 * ta['std']:.1f}"
                  f"  {lv['connected_curves']}/{lv['n']}        {lv['matching_curves']}/{lv['n']}")
        for f in r["first_failures"]:
            print("  first unmatched round: " + ("none" if f is None else
                  f"{f['round']} ({100 * f['density']:.2f}%), barrier {100 * f['level_barrier']:.2f} points, "
                  f"round before {100 * (f['previous_level_barrier'] or 0):.2f}"))
    v = result["verdicts"]
    print(f"\nall measured rounds: {v['n']}; matching & connected {v['connected_matching']}, matching & broken "
          f"{v['broken_matching']}, unmatched & connected {v['connected_failing']}, unmatched & broken "
          f"{v['broken_failing']}: {v['agree']} agree")
    if result["largest_matching_barrier"] is not None and result["smallest_failing_barrier"] is not None:
        print(f"largest barrier of a matching round {100 * result['largest_matching_barrier']:.2f} points, smallest "
              f"of an unmatched round {100 * result['smallest_failing_barrier']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
