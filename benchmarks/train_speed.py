"""Training speed on the CPU: ltstudy's engine against a textbook PyTorch loop.

Both train LeNet-300-100 at 50% weight density on MNIST-shaped synthetic data
(60,000 random 1x28x28 inputs, 10 classes; nothing is downloaded), batch 60,
Adam at lr 1.2e-3.

ENGINE     `ltstudy.engine.training.train` itself: masks from `ltstudy.pruning`
           (full_masks + one prune at rate 0.5), a `Dataset` of in-memory
           tensors, a `Schedule` whose eval_every equals its length.
REFERENCE  DataLoader(TensorDataset(x, y), batch_size=60, shuffle=True),
           torch.nn.utils.prune.custom_from_mask on fc1/fc2/fc3 with the same
           masks, torch.optim.Adam (defaults but lr), the usual
           zero_grad / forward / backward / step loop.

What is timed: for the engine, one whole `train()` call of N iterations with
evaluation switched off (optimiser construction and N training steps; the
engine's step is steps.LeanStep for this network, bit for bit autograd's); for
the reference, N iterations of the loop, including DataLoader iterator creation
at epoch ends. `--load N` starts N busy processes (pure Python loops) that
compete for the cores while everything is measured, both loops alike.
Both are warmed up first, then timed windows of ~--seconds each alternate
between the two; the median over --repeats windows is reported (best too).

The FLOP share counts dense matmul work only (masks don't shrink a dense
GEMM): forward 2*B*sum(in*out), weight gradients of all three layers
2*B*sum(in*out), input gradients of fc2 and fc3 only (the input needs no
gradient). It is compared with a 1024x1024 float32 matmul loop at the same
thread count.

    python benchmarks/train_speed.py [--threads 1] [--seconds 2.5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from ltstudy.engine.config import PruneConfig, TicketConfig, TrainConfig
from ltstudy.engine.data import Dataset, Split
from ltstudy.engine.models import build_model
from ltstudy.engine.pruning import (
    apply_masks,
    check_masks_hold,
    density,
    full_masks,
    layer_rates,
    prunable_layers,
    prune,
)
from ltstudy.engine.rounds import RoundJob
from ltstudy.engine.training import train

N_TRAIN, N_EVAL, SHAPE, CLASSES = 60_000, 1_000, (1, 28, 28), 10
BATCH, LR, RATE = 60, 1.2e-3, 0.5
LAYERS = [(784, 300), (300, 100), (100, 10)]  # LeNet-300-100 (in, out) per Linear


def flops_per_iteration(batch: int = BATCH) -> dict[str, int]:
    """Dense matmul FLOPs of one training step of LeNet-300-100 (2 FLOPs per multiply-add)."""
    forward = sum(2 * batch * i * o for i, o in LAYERS)
    weight_grads = sum(2 * batch * i * o for i, o in LAYERS)
    input_grads = sum(2 * batch * i * o for i, o in LAYERS[1:])  # fc1's input (the data) needs no grad
    return {"forward": forward, "weight_grads": weight_grads, "input_grads": input_grads,
            "total": forward + weight_grads + input_grads}


def sgemm_gflops(seconds: float, n: int = 1024, repeats: int = 3) -> float:
    """Best float32 n x n matmul rate over `repeats` windows of ~seconds/repeats."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    best = 0.0
    for _ in range(repeats):
        count, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds / repeats:
            for _ in range(4):
                torch.mm(a, b, out=c)
            count += 4
        best = max(best, 2 * n**3 * count / elapsed / 1e9)
    return best


def make_data() -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g))

    return Dataset("synthetic-mnist", split(N_TRAIN), split(N_EVAL), split(N_EVAL), CLASSES)


def make_model_and_masks(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("lenet-300-100", SHAPE, CLASSES)
    layers = prunable_layers(model)
    cfg = PruneConfig(prune_rate=RATE)
    masks = prune(model, full_masks(model, layers), layer_rates(layers, cfg), shared=set())
    apply_masks(model, masks)
    return model, masks


class Engine:
    def __init__(self, data: Dataset):
        self.data = data
        self.model, self.masks = make_model_and_masks()
        self.cfg = TrainConfig(optimizer="adam", lr=LR, batch_size=BATCH)

    def run(self, iterations: int) -> float:
        """Seconds for `iterations` steps of the engine's train() (no evaluation)."""
        cfg = TrainConfig(**{**vars(self.cfg), "iterations": iterations, "eval_every": iterations})
        sched = TicketConfig(train=cfg).resolve_schedule(len(self.data.train))
        t0 = time.perf_counter()
        train(RoundJob(0, self.model, self.masks, cfg, sched, 0, None, 0, iterations, evaluate=False), self.data)
        return time.perf_counter() - t0


class Reference:
    def __init__(self, data: Dataset):
        self.model, masks = make_model_and_masks()
        for name in masks:
            torch_prune.custom_from_mask(getattr(self.model, name), "weight", masks[name])
        self.loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=BATCH, shuffle=True)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.batches = iter(self.loader)

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, iterations: int) -> float:
        model, opt = self.model, self.opt
        model.train()
        t0 = time.perf_counter()
        for _ in range(iterations):
            xb, yb = self.next_batch()
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--seconds", type=float, default=2.5, help="length of each timed window (default 2.5)")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows per loop (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--load", type=int, default=0, metavar="N", help="busy processes competing for the cores")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    competitors = start_load(args.load)
    try:
        return measure(args)
    finally:
        stop_load(competitors)


def _spin() -> None:
    while True:
        pass


def start_load(n: int) -> list:
    import multiprocessing

    procs = [multiprocessing.get_context("fork").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def stop_load(procs: list) -> None:
    for p in procs:
        p.kill()
        p.join()


def measure(args) -> dict:
    data = make_data()
    engine, reference = Engine(data), Reference(data)
    d_engine = density(engine.masks)

    # Warm-up, which also sizes the timed windows.
    engine.run(100)
    reference.run(100)
    warm = 300
    iters = {name: max(50, round(args.seconds * warm / loop.run(warm)))
             for name, loop in (("engine", engine), ("reference", reference))}

    rates: dict[str, list[float]] = {"engine": [], "reference": []}
    for _ in range(args.repeats):
        for name, loop in (("engine", engine), ("reference", reference)):
            rates[name].append(iters[name] / loop.run(iters[name]))

    check_masks_hold(engine.model, engine.masks)

    peak = sgemm_gflops(seconds=1.5)
    flops = flops_per_iteration()
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    achieved = med["engine"] * flops["total"] / 1e9

    print(f"LeNet-300-100, batch {BATCH}, Adam lr {LR:g}, density {d_engine:.2f}, "
          f"{N_TRAIN} synthetic 1x28x28 examples, CPU, torch {torch.__version__}, threads {args.threads}, "
          f"competing busy processes {args.load}")
    print(f"timed windows: {args.repeats} x ~{args.seconds:g} s per loop "
          f"(engine {iters['engine']} it, reference {iters['reference']} it)")
    for name in ("engine", "reference"):
        runs = ", ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:<10} {med[name]:7.1f} it/s  (median; best {best[name]:.1f}; runs {runs})")
    print(f"ratio      {med['engine'] / med['reference']:7.2f}x  engine / reference (median; "
          f"best/best {best['engine'] / best['reference']:.2f}x)")
    print(f"sgemm      {peak:7.1f} GFLOP/s  (1024x1024 float32 matmul, {args.threads} thread(s))")
    print(f"FLOPs/iter {flops['total'] / 1e6:7.2f} M  (forward {flops['forward'] / 1e6:.2f} + weight grads "
          f"{flops['weight_grads'] / 1e6:.2f} + input grads {flops['input_grads'] / 1e6:.2f}, dense)")
    print(f"engine     {achieved:7.2f} GFLOP/s  = {100 * achieved / peak:.1f}% of sgemm peak")

    result = {
        "model": "lenet-300-100", "batch_size": BATCH, "lr": LR, "density": d_engine, "threads": args.threads,
        "load": args.load,
        "seconds": args.seconds, "repeats": args.repeats, "iterations_per_window": iters,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "it_per_s": {"engine": rates["engine"], "reference": rates["reference"]},
        "median_it_per_s": med, "best_it_per_s": best, "ratio_median": med["engine"] / med["reference"],
        "sgemm_gflops": peak, "flops_per_iteration": flops, "engine_gflops": achieved,
        "engine_fraction_of_sgemm": achieved / peak,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return result


if __name__ == "__main__":
    main()
