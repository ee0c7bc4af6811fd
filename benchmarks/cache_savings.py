"""What the cross-trial training cache saves on a small grid study.

Runs the same grid study (prune_rate x rewind_iter x scope, on digits) twice
in fresh stores, once with `--no-cache` and once with an empty cache, and
prints for each the training iterations actually run, the nominal iterations
the trials account for, and the wall time. Both runs must give the same
objective values: the cache changes the cost, never the numbers.

    python benchmarks/cache_savings.py [--rounds 4] [--iterations 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

STUDY = """
[study]
name = "cache-benchmark"
sampler = "grid"
n_trials = 1000                 # the grid sampler stops at the grid size
objectives = ["ticket_sparsity", "train_iterations"]
storage = "journal:{tmp}/optuna.journal"
tracking_uri = "sqlite:///{tmp}/mlflow.db"
cache_dir = "{tmp}/cache"

[data]
name = "digits"

[model]
name = "lenet-300-100"

[train]
iterations = {iterations}
eval_every = {eval_every}

[search]
prune_rate = [0.2, 0.4]
rewind_iter = [0, 20, 100]
scope = ["layerwise", "global"]
reinit = "rewind"
rounds = {rounds}
output_rate = 0.5
"""


def run(use_cache: bool, args: argparse.Namespace) -> dict:
    from optuna.trial import TrialState

    from ltstudy.study.config import load_study
    from ltstudy.study.runner import run_study
    from ltstudy.study.session import RunOptions

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.toml"
        path.write_text(STUDY.format(tmp=tmp, iterations=args.iterations, eval_every=args.iterations // 5,
                                     rounds=args.rounds))
        cfg = load_study(path)
        t0 = time.perf_counter()
        summary = run_study(cfg, RunOptions(no_cache=not use_cache))
        wall = time.perf_counter() - t0
        done = [t for t in summary.trials if t.state == TrialState.COMPLETE]
        rounds = [r for t in done for r in t.user_attrs["rounds"]]
        return {
            "trials": len(done),
            "nominal": sum(r["iterations"] for r in rounds),
            "computed": sum(r["computed_iterations"] for r in rounds),
            "reused_rounds": sum(bool(r["reused"]) for r in rounds),
            "rounds": len(rounds),
            "wall": wall,
            "values": sorted((t.params["prune_rate"], t.params["rewind_iter"], t.params["scope"], tuple(t.values))
                             for t in done),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print(f"grid study: prune_rate 2 x rewind_iter 3 x scope 2 = 12 trials, {args.rounds} rounds of "
          f"{args.iterations} iterations, digits, LeNet-300-100, {args.threads} thread(s)")
    without = run(False, args)
    with_ = run(True, args)
    for name, r in (("no cache", without), ("cache", with_)):
        print(f"{name:9} trials {r['trials']:3}  iterations trained {r['computed']:7.0f}  (nominal {r['nominal']:.0f}, "
              f"rounds reused {r['reused_rounds']}/{r['rounds']})  wall {r['wall']:6.1f} s")
    print(f"saving: {1 - with_['computed'] / without['computed']:.1%} of training iterations, "
          f"{1 - with_['wall'] / without['wall']:.1%} of wall time")
    same = without["values"] == with_["values"]
    print(f"objective values identical with and without the cache: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
