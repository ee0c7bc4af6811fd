"""Dynamic sparse training on the sparse kernels against the same training on the dense kernels, in one run.

RigL and static sparse on LeNet-300-100 (batch 60, Adam, validation every 100 iterations on 5,000 examples and
the test reads on 10,000; synthetic Fashion-MNIST-shaped data), one round of --iterations (3,000) from a fresh
initialisation at each density (the IMP's 3.6% and 10.8%: rounds 15 and 10 at the paper's rates, hidden 0.8^r,
output 0.9^r), the level's count split over the layers as the controls split it (`--layer-density`, ERK by
default), trained with `[train] kernels = "dense"` (LeanStep with masks; RigL's updates as the control runs them,
ΔT = 100, α = 0.3 to 75% of training) and `"sparse"` (SparseStep: CSR from the first step, its structure rebuilt
at every update). Windows alternate between the kernels; each ratio is the median over repeats of sparse/dense
within a repeat. Also printed: whether the two kernels end with the same masks, and their largest weight
difference (the products sum in another order, so the runs drift apart by float noise over thousands of steps;
tests/test_sparse_training_kernels.py checks agreement on a short run).

`--load N` starts N busy processes competing for the cores while everything is measured, both sides alike. One
torch thread (as a study's worker has).

    python benchmarks/sparse_training_speed.py [--iterations 3000] [--repeats 3] [--load 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time

import torch
from sparse_speed import busy, fashion_shaped, imp_masks  # (a sibling script: its folder is on sys.path)

from ltstudy.engine.branches.rigl import RigLUpdates
from ltstudy.engine.config import TicketConfig, TrainConfig
from ltstudy.engine.layer_densities import layer_counts, random_masks
from ltstudy.engine.models import build_model
from ltstudy.engine.pruning import apply_masks, weights
from ltstudy.engine.rounds import RoundJob
from ltstudy.engine.training import train

LEVELS = {15: 0.036, 10: 0.108}  # IMP round: its density (hidden 0.8^r, output 0.9^r)
METHODS = ("rigl", "static")
GOALS = {("rigl", 15): 0.5, ("static", 15): 0.4, ("rigl", 10): 0.8}  # issue 23: sparse/dense at most


def masks_of(model, level: int, rule: str) -> dict[str, torch.Tensor]:
    """The controls' masks at IMP level `level`: its count split by `rule`, at random positions (seeded)."""
    like = imp_masks(model, level)
    shapes = {n: w.shape for n, w in weights(model, like).items()}
    return random_masks(layer_counts(rule, like, shapes), like, torch.Generator().manual_seed(level))


def run(method: str, kernels: str, model, start, masks, data, iterations: int) -> tuple[float, dict, dict]:
    """(seconds, the end state, the end masks) of one round."""
    model.load_state_dict(start)
    masks = {n: m.clone() for n, m in masks.items()}
    apply_masks(model, masks)
    cfg = TrainConfig(iterations=iterations, eval_every=100, kernels=kernels)
    sched = TicketConfig(train=cfg).resolve_schedule(len(data.train))
    updates = RigLUpdates(100, round(0.75 * iterations), 0.3, seed=0, round=1) if method == "rigl" else None
    t0 = time.perf_counter()
    train(RoundJob(1, model, masks, cfg, sched, 0, None, 0, iterations, mask_updates=updates), data)
    return time.perf_counter() - t0, {k: v.clone() for k, v in model.state_dict().items()}, masks


def measure(args) -> dict:
    data = fashion_shaped()
    torch.manual_seed(0)
    model = build_model("lenet-300-100", (1, 28, 28), 10)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    for level, nominal in LEVELS.items():
        masks = masks_of(model, level, args.layer_density)
        density = sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        layers = {n: round(float(m.float().mean()), 4) for n, m in masks.items()}
        for method in METHODS:
            times: dict[str, list[float]] = {"dense": [], "sparse": []}
            ends = {}
            for _ in range(args.repeats):
                for kernels in times:
                    seconds, state, end_masks = run(method, kernels, model, start, masks, data, args.iterations)
                    times[kernels].append(seconds)
                    ends[kernels] = (state, end_masks)
            ratio = statistics.median(s / d for s, d in zip(times["sparse"], times["dense"], strict=True))
            (dense_state, dense_masks), (sparse_state, sparse_masks) = ends["dense"], ends["sparse"]
            row = {"method": method, "level": level, "density": density, "layer_density": layers,
                   "seconds": {k: statistics.median(v) for k, v in times.items()}, "all_seconds": times,
                   "sparse_vs_dense": ratio, "goal": GOALS.get((method, level)),
                   "masks_identical": all(torch.equal(dense_masks[n], sparse_masks[n]) for n in masks),
                   "mask_overlap": sum(int((dense_masks[n].bool() & sparse_masks[n].bool()).sum()) for n in masks)
                   / sum(int(m.sum()) for m in masks.values()),
                   "max_weight_difference": max(float((dense_state[k] - sparse_state[k]).abs().max())
                                                for k in dense_state)}
            rows.append(row)
            goal = "" if row["goal"] is None else (f"  goal <= {row['goal']}x: "
                                                   f"{'met' if ratio <= row['goal'] else 'NOT met'}")
            print(f"{method:6s} {100 * nominal:4.1f}% ({100 * density:.2f}%, layers "
                  f"{', '.join(f'{n} {100 * d:.1f}%' for n, d in layers.items())})  dense "
                  f"{row['seconds']['dense']:6.2f} s  sparse {row['seconds']['sparse']:6.2f} s  "
                  f"sparse/dense {ratio:.2f}x{goal}  masks {'identical' if row['masks_identical'] else 'differ'} "
                  f"(overlap {100 * row['mask_overlap']:.1f}%), weights within {row['max_weight_difference']:.1e}",
                  flush=True)
    return {"iterations": args.iterations, "repeats": args.repeats, "layer_density_rule": args.layer_density,
            "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=3000, help="iterations of each timed round")
    ap.add_argument("--repeats", type=int, default=3, help="alternated windows per method, density and kernel")
    ap.add_argument("--layer-density", choices=["erk", "uniform"], default="erk",
                    help="how a level's count is split over the layers (the controls' [sparse_training] setting)")
    ap.add_argument("--load", type=int, default=0, help="competing busy processes")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    procs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.load)]
    for p in procs:
        p.start()
    try:
        result = {"load": args.load, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                  "loadavg_before": os.getloadavg()}
        result.update(measure(args))
        result["loadavg_after"] = os.getloadavg()
    finally:
        for p in procs:
            p.terminate()
    print(f"load average (1, 5, 15 min) before {result['loadavg_before']}, after {result['loadavg_after']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
