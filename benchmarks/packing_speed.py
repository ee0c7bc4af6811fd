"""Trial packing: N searches' rounds trained as one packed network against one after another.

Workload: N members, each a round of LeNet-300-100 (and conv-2 at N = 4 with
--conv) on Fashion-MNIST-shaped synthetic data (60,000 random 1x28x28
inputs, 10 classes, 100 validation and 100 test examples; nothing is
downloaded), batch 60, Adam lr 1.2e-3. Members differ as trials of a sweep
do: their own initial weights (seed i), masks (one magnitude-pruning step at
rate 0.2 * i mod 0.8, so densities 1.0, 0.8, 0.6, 0.4, ...), data order and
dropout seed.

PACKED     `PackedTrainer` (ltstudy.engine.packing): the N jobs added to one
           pack of capacity N, `step()` until all have finished.
           Row "16 = 4x4": the 16 jobs in 4 packs of 4, each taking 8 steps
           before the next (what `drive_packed(..., width=4, block=8)` does).
UNPACKED   `ltstudy.engine.training.train` on each member in turn, the same jobs.

Both include what `train` does besides stepping (start evaluation, one
evaluation at the end, test accuracies; small here): the same work on both
sides. A window trains every member `iterations` steps (at least 50) from the
same start states on both sides, so the benchmark also checks that the final
weights are bit-identical. Timed windows of ~--seconds alternate between the
two, in alternating order (packed first, then unpacked first, ...); reported
are the median member-iterations per second of each and the median of the
--repeats paired ratios packed / unpacked, which a machine shared with other
work disturbs least.

On CUDA (--device cuda, or auto where present) the data and models live on the
GPU and each timed window ends with torch.cuda.synchronize().

    python benchmarks/packing_speed.py [--threads 1] [--seconds 2] [--repeats 5] [--ns 1,4,16]
                                       [--lanes 16:4:8] [--conv] [--device auto] [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch

from ltstudy.engine.config import PruneConfig, TicketConfig, TrainConfig
from ltstudy.engine.data import Dataset, Split
from ltstudy.engine.device import resolve_device
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.models import build_model
from ltstudy.engine.packing import PackedTrainer
from ltstudy.engine.pruning import apply_masks, density, full_masks, layer_rates, prunable_layers, prune
from ltstudy.engine.rounds import RoundJob
from ltstudy.engine.training import train

N_TRAIN, N_EVAL, SHAPE, CLASSES = 60_000, 100, (1, 28, 28), 10
BATCH, LR = 60, 1.2e-3


def make_data(device: torch.device) -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, *SHAPE, generator=g).to(device),
                     torch.randint(0, CLASSES, (n,), generator=g).to(device))

    return Dataset("synthetic-fashion-mnist", split(N_TRAIN), split(N_EVAL), split(N_EVAL), CLASSES)


class Members:
    """N members' start states (weights, masks) and configs; `jobs()` hands out fresh copies."""

    def __init__(self, model_name: str, n: int, device: torch.device):
        self.starts = []
        for i in range(n):
            torch.manual_seed(i)
            model = build_model(model_name, SHAPE, CLASSES).to(device)
            layers = prunable_layers(model)
            masks = full_masks(model, layers)
            rate = round(0.2 * (i % 4), 2)
            if rate:
                cfg = PruneConfig(prune_rate=rate)
                masks = prune(model, masks, layer_rates(layers, cfg), shared=set())
                apply_masks(model, masks)
            self.starts.append((model, masks))
        self.train_cfg = TrainConfig(optimizer="adam", lr=LR, batch_size=BATCH)

    def jobs(self, iterations: int) -> list[RoundJob]:
        cfg = TrainConfig(**{**vars(self.train_cfg), "iterations": iterations, "eval_every": iterations})
        sched = TicketConfig(train=cfg).resolve_schedule(N_TRAIN)
        return [RoundJob(0, copy.deepcopy(model), masks, cfg, sched, data_seed=i, dropout_seed=1000 + i, start=0,
                         end=iterations) for i, (model, masks) in enumerate(self.starts)]

    def densities(self) -> list[float]:
        return [round(density(masks), 2) for _, masks in self.starts]


def _sync(data: Dataset) -> None:
    if data.train.x.is_cuda:  # kernels are queued: time them, not their launch
        torch.cuda.synchronize()


def run_unpacked(jobs: list[RoundJob], data: Dataset) -> float:
    _sync(data)
    t0 = time.perf_counter()
    for job in jobs:
        train(job, data)
    _sync(data)
    return time.perf_counter() - t0


def run_packed(jobs: list[RoundJob], data: Dataset, width: int | None = None, block: int = 1) -> float:
    """Train the jobs in packs of `width` (default: all in one), each pack taking `block` steps in turn."""
    _sync(data)
    t0 = time.perf_counter()
    width = width or len(jobs)
    packs = [PackedTrainer(data, width) for _ in range(0, len(jobs), width)]
    for i, job in enumerate(jobs):
        packs[i // width].add(job, i)
    while any(len(p) for p in packs):
        for pack in packs:
            for _ in range(block):
                if len(pack):
                    pack.step()
    _sync(data)
    return time.perf_counter() - t0


def same_weights(a: list[RoundJob], b: list[RoundJob]) -> bool:
    return all(torch.equal(p, q) for ja, jb in zip(a, b, strict=True)
               for p, q in zip(ja.model.parameters(), jb.model.parameters(), strict=True))


def measure(model_name: str, n: int, data: Dataset, seconds: float, repeats: int, min_iterations: int = 50,
            width: int | None = None, block: int = 1) -> dict:
    members = Members(model_name, n, data.train.x.device)
    packed = lambda jobs, data: run_packed(jobs, data, width, block)  # noqa: E731
    # Warm-up (also runs the packed network's exactness probes), then size the windows.
    packed(members.jobs(3), data)
    run_packed(members.jobs(3), data)
    run_unpacked(members.jobs(3), data)
    probe = 10
    per_it = min(packed(members.jobs(probe), data), run_unpacked(members.jobs(probe), data)) / (n * probe)
    iterations = max(min_iterations, round(seconds / (n * per_it)))
    rates: dict[str, list[float]] = {"packed": [], "unpacked": []}
    identical = True
    for r in range(repeats):
        jobs = {"packed": members.jobs(iterations), "unpacked": members.jobs(iterations)}
        for side in ("packed", "unpacked") if r % 2 == 0 else ("unpacked", "packed"):
            run = packed if side == "packed" else run_unpacked
            rates[side].append(n * iterations / run(jobs[side], data))
        identical &= same_weights(jobs["packed"], jobs["unpacked"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = [p / u for p, u in zip(rates["packed"], rates["unpacked"], strict=True)]
    label = str(n) if width is None else f"{n} = {n // width}x{width}"
    return {"model": model_name, "n": n, "label": label, "width": width, "block": block,
            "iterations_per_member": iterations, "densities": members.densities(),
            "member_it_per_s": rates, "median": med, "ratios": ratios, "ratio": statistics.median(ratios),
            "bit_identical": identical}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each timed window (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed windows per side and N (default 5)")
    ap.add_argument("--ns", default="1,4,16", help="pack sizes N for LeNet-300-100 (default 1,4,16)")
    ap.add_argument("--lanes", default="16:4:8", help="N:width:block rows of narrow packs in blocks (default 16:4:8; "
                                                     "'' for none)")
    ap.add_argument("--conv", action="store_true", help="also conv-2 at N = 4 (~0.2 s per member-iteration)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: CUDA where present (default)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ConfigError as err:
        ap.error(str(err).replace("device = ", "--device "))
    data = make_data(device)
    cases = [("lenet-300-100", int(n), None, 1) for n in args.ns.split(",") if n.strip()]
    for lane in filter(None, args.lanes.split(",")):
        n, width, block = (int(v) for v in lane.split(":"))
        cases.append(("lenet-300-100", n, width, block))
    if args.conv:
        cases.append(("conv-2", 4, None, 1))
    rows = [measure(model, n, data, args.seconds, args.repeats, 50 if model == "lenet-300-100" else 3, width, block)
            for model, n, width, block in cases]

    print(f"Packed vs one-after-another training, batch {BATCH}, Adam lr {LR:g}, {N_TRAIN} synthetic 1x28x28 "
          f"examples, {device.type.upper()}, torch {torch.__version__}, threads {args.threads}, "
          f"{args.repeats} x ~{args.seconds:g} s windows per side")
    print(f"{'model':<14} {'N':>8} {'it/member':>9} {'packed':>9} {'unpacked':>9} {'ratio':>6}  {'ratios':<30} "
          "identical")
    for r in rows:
        spread = " ".join(f"{x:.2f}" for x in r["ratios"])
        print(f"{r['model']:<14} {r['label']:>8} {r['iterations_per_member']:>9} {r['median']['packed']:>9.1f} "
              f"{r['median']['unpacked']:>9.1f} {r['ratio']:>5.2f}x  {spread:<30} "
              f"{'yes' if r['bit_identical'] else 'NO'}")
    print("(packed, unpacked: member-iterations/s, median; ratio: median of the paired ratios packed/unpacked)")
    result = {"threads": args.threads, "seconds": args.seconds, "repeats": args.repeats, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "device": device.type, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return result


if __name__ == "__main__":
    main()
