"""What a study costs, with and without each saving, in one run.

A fixed 20-round study: LeNet-300-100 on the embedded digits, 8 trials (the grid
p in {0.2, 0.5} x k in {0, 20} x re-init in {rewind, random}), 300 iterations per
round at batch 60, validation every 20, one worker, one thread. It runs once per
variant, each in fresh stores and a fresh cache:

  plain        no cache, every round trained, nothing stopped early
  cache        the cross-trial cache (controls reuse their ticket's rounds; trials share dense rounds)
  patience     cache + [train] patience = 3 (rounds end after 3 evaluations without a lower val loss)
  unmatched    cache + [study] stop_on_drop = "unmatched" (a search ends at its first non-matching round)
  pack         cache + [study] pack = 4 (four trials trained side by side in one batched network)
  all          cache + patience + unmatched + pack

Cost is printed per trial in dense-training equivalents: iterations actually
trained / the iterations of one dense round, and wall time / the wall time of
one dense round measured in the same run. patience and unmatched change what a
study measures (they are off by default); plain, cache and pack give the same
numbers (checked here: the same objective values as plain).

    python benchmarks/study_cost.py [--variants plain,cache,...] [--iterations 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

ROUNDS, TRIALS = 20, 8


def to_toml(doc: dict) -> str:
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    return "\n".join(f"[{s}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                     for s, table in doc.items())


def study_file(folder: Path, iterations: int, **study) -> Path:
    doc = {
        "study": {"name": "cost", "sampler": "grid", "seed": 0, "n_trials": TRIALS, "device": "cpu",
                  "objectives": ["ticket_sparsity", "train_iterations"], "storage": f"journal:{folder / 'j'}",
                  "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "cache_dir": str(folder / "cache"),
                  **study},
        "data": {"name": "digits"},
        "model": {"name": "lenet-300-100"},
        "train": {"iterations": iterations, "eval_every": 20, "batch_size": 60},
        "search": {"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "reinit": ["rewind", "random"],
                   "scope": "layerwise", "rounds": ROUNDS},
    }
    path = folder / "study.toml"
    path.write_text(to_toml(doc))
    return path


VARIANTS = {
    "plain": ({"cache": False}, {}),
    "cache": ({}, {}),
    "patience": ({}, {"patience": 3}),
    "unmatched": ({"stop_on_drop": "unmatched"}, {}),
    "pack": ({"pack": 4}, {}),
    "all": ({"stop_on_drop": "unmatched", "pack": 4}, {"patience": 3}),
}


def dense_seconds(iterations: int) -> float:
    """Wall time of one dense round (training and its evaluations), the unit of cost."""
    from ltstudy.engine.config import TicketConfig
    from ltstudy.engine.ticket import TicketSearch

    cfg = TicketConfig.from_dict({"device": "cpu", "data": {"name": "digits"},
                                  "train": {"iterations": iterations, "eval_every": 20}, "prune": {"rounds": 0}})
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        TicketSearch(cfg).run()
        best = min(best, time.perf_counter() - t0)
    return best


def run_variant(name: str, iterations: int) -> dict:
    import optuna

    from ltstudy.study.config import load_study
    from ltstudy.study.runner import run_study
    from ltstudy.study.session import RunOptions
    from ltstudy.study.storage import open_storage

    study_extra, train_extra = VARIANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = study_file(folder, iterations, **study_extra)
        if train_extra:
            text = path.read_text().replace("[train]\n", "[train]\n" + "".join(
                f"{k} = {v}\n" for k, v in train_extra.items()))
            path.write_text(text)
        cfg = load_study(path)
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            run_study(cfg, RunOptions())
            wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="cost", storage=open_storage(f"journal:{folder / 'j'}"))
        trials = [t for t in study.trials if t.state.name == "COMPLETE"]
        computed = sum(r["computed_iterations"] for t in trials for per in t.user_attrs["rounds_per_seed"]
                       for r in per)
        values = {str(sorted(t.params.items())): t.values for t in trials}
    return {"wall_seconds": wall, "trials": len(trials), "computed_iterations": computed, "values": values}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import torch

    torch.set_num_threads(1)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unit = dense_seconds(args.iterations)
    results = {}
    for name in names:
        results[name] = run_variant(name, args.iterations)
    print(f"study: {TRIALS} trials x {ROUNDS} rounds, LeNet-300-100 on digits, {args.iterations} iterations per "
          f"round; one dense round = {args.iterations} iterations, {unit:.2f} s (measured in this run)")
    print(f"{'':<17} {'dense rounds per trial':>28}")
    print(f"{'variant':<10} {'trials':>6} {'by iterations':>14} {'by wall time':>13} {'wall/trial':>11}  "
          f"{'vs plain':>8}  same numbers as plain")
    base = results.get("plain")
    for name, r in results.items():
        per_trial_it = r["computed_iterations"] / r["trials"] / args.iterations
        per_trial_wall = r["wall_seconds"] / r["trials"] / unit
        vs = f"{base['wall_seconds'] / r['wall_seconds']:.2f}x" if base else "-"
        same = "-" if not base or name in ("plain",) else ("yes" if r["values"] == base["values"] else
                                                          "no (changes the protocol)")
        print(f"{name:<10} {r['trials']:>6} {per_trial_it:>14.2f} {per_trial_wall:>13.2f} "
              f"{r['wall_seconds'] / r['trials']:>10.2f}s  {vs:>8}  {same}")
        r.update(dense_trainings_per_trial_wall=per_trial_wall, dense_trainings_per_trial_iterations=per_trial_it)
    out = {"dense_round_seconds": unit, "iterations": args.iterations,
           "results": {k: {kk: vv for kk, vv in v.items() if kk != "values"} for k, v in results.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
