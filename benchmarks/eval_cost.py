"""What evaluation costs in a round: the engine against the evaluation it replaced, in the same run.

A Fashion-MNIST-sized LeNet-300-100 round (60,000 training examples of which 5,000
are held out for validation, 10,000 test, synthetic 1x28x28 inputs, no download):
3,000 iterations at batch 60, Adam, validation every 100 iterations, one thread.

ENGINE     `ltstudy.engine.training.train` as it is: validation at every evaluation
           point; the test split only where it is reported (before training, at the
           early-stop state and at the end). Measured twice: validating on the
           training thread, and overlapped with training on a second core (what a
           process alone on a machine does; the same numbers).
REFERENCE  the same call, plus the evaluation the engine used to do and no longer
           does: the test split at every evaluation point (through a callback's `on_evaluation`).

It prints each one's round time, the seconds spent in evaluation and their share
of the round, the examples evaluated per round, and checks that both give the
same validation numbers and the same early-stop iteration.

    python benchmarks/eval_cost.py [--iterations 3000] [--eval-every 100] [--load N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ltstudy.engine import round_protocol
from ltstudy.engine.callbacks import Callback
from ltstudy.engine.config import TicketConfig, TrainConfig
from ltstudy.engine.data import Dataset, Split
from ltstudy.engine.models import build_model
from ltstudy.engine.pruning import full_masks, prunable_layers
from ltstudy.engine.rounds import RoundJob
from ltstudy.engine.training import train


def make_data(seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(784, 10, generator=g)  # a learnable synthetic task: labels from a random linear map

    def split(n: int) -> Split:
        x = torch.randn(n, 1, 28, 28, generator=g)
        return Split(x, (x.flatten(1) @ w).argmax(1))

    return Dataset("synthetic-fashion", split(55_000), split(5_000), split(10_000), 10, digest="bench")


def train_only(data: Dataset, iterations: int) -> float:
    torch.manual_seed(0)
    model = build_model("lenet-300-100", (1, 28, 28), 10)
    cfg = TrainConfig(iterations=iterations, eval_every=iterations)
    sched = TicketConfig(train=cfg).resolve_schedule(len(data.train))
    t0 = time.perf_counter()
    train(RoundJob(0, model, full_masks(model, prunable_layers(model)), cfg, sched, 0, None, 0, sched.iterations,
                   evaluate=False), data)
    return time.perf_counter() - t0


class Counting:
    """Wraps round_protocol.evaluate: seconds and examples spent evaluating."""

    def __init__(self):
        self.real, self.seconds, self.examples = round_protocol.evaluate, 0.0, 0

    def __call__(self, model, split, batch_size, state=None):
        t0 = time.perf_counter()
        out = self.real(model, split, batch_size, state=state)
        self.seconds += time.perf_counter() - t0
        self.examples += len(split)
        return out


def one_round(data: Dataset, iterations: int, eval_every: int, reference: bool, overlap: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model("lenet-300-100", (1, 28, 28), 10)
    masks = full_masks(model, prunable_layers(model))
    cfg = TrainConfig(iterations=iterations, eval_every=eval_every)
    sched = TicketConfig(train=cfg).resolve_schedule(len(data.train))
    counter = Counting()
    vals = []

    class OnEval(Callback):
        def on_evaluation(self, job, done, val):
            vals.append((done, val.loss, val.accuracy))
            if reference:  # the old loop evaluated the test split at every point too
                counter(model, data.test, cfg.eval_batch_size)

    round_protocol.evaluate = counter
    try:
        t0 = time.perf_counter()
        res = train(RoundJob(0, model, masks, cfg, sched, 0, None, 0, sched.iterations), data, OnEval(),
                    overlap_eval=overlap)
        total = time.perf_counter() - t0
    finally:
        round_protocol.evaluate = counter.real
    if overlap:  # the evaluations on the other thread cost the round only the time spent waiting for them
        counter.seconds = total - train_only(data, iterations)
    return {"seconds": total, "eval_seconds": counter.seconds, "eval_share": counter.seconds / total,
            "examples_evaluated": counter.examples, "early_stop_iteration": res.early_stop_iteration,
            "val_accuracy": res.val_accuracy, "val_loss": res.val_loss, "validation": vals}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--load", type=int, default=0, metavar="N", help="busy processes competing for the cores")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from train_speed import start_load, stop_load

    data = make_data()
    one_round(data, 200, 100, False)  # warm-up
    competitors = start_load(args.load)
    try:
        ref = one_round(data, args.iterations, args.eval_every, True)
        eng = one_round(data, args.iterations, args.eval_every, False)
        over = one_round(data, args.iterations, args.eval_every, False, overlap=True)
    finally:
        stop_load(competitors)
    same = all(r["validation"] == ref["validation"] and r["early_stop_iteration"] == ref["early_stop_iteration"]
               for r in (eng, over))
    print(f"LeNet-300-100, {args.iterations} iterations at batch 60, validation every {args.eval_every}; "
          f"val 5,000, test 10,000; 1 thread; competing busy processes {args.load}")
    for name, r in (("reference", ref), ("engine", eng), ("overlapped", over)):
        print(f"{name:<10} round {r['seconds']:6.2f} s   evaluation {r['eval_seconds']:5.2f} s = "
              f"{100 * r['eval_share']:4.1f}% of the round   {r['examples_evaluated']:>7,} examples evaluated")
    print(f"evaluation time: engine / reference = {eng['eval_seconds'] / ref['eval_seconds']:.2f} "
          f"(overlapped: {over['eval_seconds'] / ref['eval_seconds']:.2f}); round time: engine / reference = "
          f"{eng['seconds'] / ref['seconds']:.2f} (overlapped: {over['seconds'] / ref['seconds']:.2f})")
    print(f"same validation numbers at every point and the same early-stop iteration ({eng['early_stop_iteration']}):"
          f" {same}")
    out = {"reference": {k: v for k, v in ref.items() if k != "validation"},
           "engine": {k: v for k, v in eng.items() if k != "validation"},
           "overlapped": {k: v for k, v in over.items() if k != "validation"}, "same_validation": same,
           "iterations": args.iterations, "eval_every": args.eval_every, "load": args.load}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
