"""The sparse kernels (`[train] kernels`) against the dense path, on the CPU, in one run.

--part round   A LeNet-300-100 round (batch 60, Adam, validation every 100 iterations on 5,000
               examples, the three test reads on 10,000; synthetic Fashion-MNIST-shaped data) at
               each IMP level of the paper's rates (hidden layers 0.8^r, output 0.9^r), trained
               with kernels = "dense", "sparse" and "auto", windows alternating; the median
               seconds of each and the ratio to dense. The crossover is the highest density at
               which the sparse round is faster. First, auto's per-layer crossovers on this
               machine (engine/crossover.py: timed unless kept, and how long that took).
--part imp     A 15-round Fashion-MNIST IMP to 3.6% (the reproduction recipe: Adam 1.2e-3, batch 60,
               20%/10% per round, layer-wise, k = 0) with kernels = "dense" and "auto", end to end,
               and a second dense seed for the noise: the tickets' mask overlap and accuracies.
               Needs Debian's dataset-fashion-mnist (or the files under --data-dir).
--part export  An exported 3.6% ticket: the sparse inference model (CSR, Ticket.sparse_model)
               against the dense one at batch 1 and 1,000, its memory, and identical predictions.
--part conv    Whether a sparse path would pay for a conv layer: conv-2's, conv-4's and conv-6's
               layers on CIFAR-10-shaped inputs, the dense conv2d forward against im2col (unfold)
               times a CSR weight, at the IMP's conv densities.

`--load N` starts N busy processes competing for the cores while everything is measured, both
sides alike. One torch thread (as a study's worker has).

    python benchmarks/sparse_speed.py [--part round|imp|export|conv|all] [--load 1] [--json OUT]
    python benchmarks/sparse_speed.py --part plot --json IDLE.json --loaded LOADED.json --plot OUT.png
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ltstudy.engine.config import TicketConfig, TrainConfig
from ltstudy.engine.data import Dataset, Split
from ltstudy.engine.models import build_model
from ltstudy.engine.pruning import apply_masks, full_masks, prunable_layers
from ltstudy.engine.rounds import RoundJob
from ltstudy.engine.training import train

LEVELS = (0, 3, 7, 8, 10, 13, 15, 20)  # IMP rounds: 100%, 51%, 21%, 16.8%, 10.8%, 5.5%, 3.6%, 1.2% density


def busy() -> None:
    while True:
        pass


def fashion_shaped() -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))

    return Dataset("synthetic-fashion", split(55_000), split(5_000), split(10_000), 10)


def imp_masks(model, level: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random masks with the IMP's per-layer densities at `level` (hidden 0.8^r, output 0.9^r)."""
    g = torch.Generator().manual_seed(seed)
    masks = full_masks(model, prunable_layers(model))
    names = list(masks)
    out = {}
    for n in names:
        d = (0.9 if n == names[-1] else 0.8) ** level
        out[n] = (torch.rand(masks[n].shape, generator=g) < d).float()
    return out


def part_round(args) -> dict:
    data = fashion_shaped()
    torch.manual_seed(0)
    model = build_model("lenet-300-100", (1, 28, 28), 10)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    crossovers = auto_crossovers(model, TrainConfig(kernels="auto"))
    rows = []
    for level in LEVELS:
        masks = imp_masks(model, level)
        density = sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        times: dict[str, list[float]] = {"dense": [], "sparse": [], "auto": []}
        for _ in range(args.repeats):
            for kernels in times:
                model.load_state_dict(start)
                apply_masks(model, masks)
                cfg = TrainConfig(iterations=args.iterations, eval_every=100, kernels=kernels)
                sched = TicketConfig(train=cfg).resolve_schedule(len(data.train))
                t0 = time.perf_counter()
                train(RoundJob(1, model, masks, cfg, sched, 0, None, 0, args.iterations), data)
                times[kernels].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        # (the median of the ratios within each repeat: the three rounds of a repeat ran within seconds of each
        # other, so a burst of the machine's noise moves them together)
        paired = {k: statistics.median(a / b for a, b in zip(times[k], times["dense"], strict=True))
                  for k in ("sparse", "auto")}
        rows.append({"level": level, "density": density, "seconds": med,
                     "sparse_vs_dense": paired["sparse"], "auto_vs_dense": paired["auto"]})
        print(f"round {level:2d}  density {100 * density:6.2f}%  dense {med['dense']:6.2f} s  sparse "
              f"{med['sparse']:6.2f} s ({rows[-1]['sparse_vs_dense']:.2f}x)  auto {med['auto']:6.2f} s "
              f"({rows[-1]['auto_vs_dense']:.2f}x)", flush=True)
    # The highest density at and below which sparse is faster at every level measured (round 0 has nothing
    # pruned: both paths are the dense one there, and its ratio is noise).
    crossover = None
    for r in sorted((r for r in rows if r["density"] < 1.0), key=lambda r: r["density"]):
        if r["sparse_vs_dense"] >= 1.0:
            break
        crossover = r["density"]
    print(f"sparse is faster at and below {100 * crossover:.1f}% density" if crossover else "sparse never faster")
    worst = max((r for r in rows if r["density"] < 1.0), key=lambda r: r["auto_vs_dense"])
    print(f"auto against dense: at most {worst['auto_vs_dense']:.2f}x (at {100 * worst['density']:.1f}%)")
    return {"iterations": args.iterations, "rows": rows, "crossover_density": crossover, "auto": crossovers}


def auto_crossovers(model, cfg: TrainConfig) -> dict:
    """kernels = "auto"'s crossover of each layer on this machine (crossover.py), timed now unless kept: before
    any round is timed, as a run's first round would time them."""
    from ltstudy.engine import crossover

    linears = [(n, m) for n, m in model.named_children() if isinstance(m, torch.nn.Linear)]
    t0 = time.perf_counter()
    found = {n: crossover.crossover(m.out_features, m.in_features, cfg.batch_size, i == 0, cfg.optimizer)
             for i, (n, m) in enumerate(linears)}
    seconds = time.perf_counter() - t0
    file = crossover.path()
    kept = json.loads(file.read_text()).get(crossover.fingerprint(), {}) if file.is_file() else {}
    timing = sum(e.get("seconds", 0.0) for e in kept.values())
    print(f"auto's crossovers on this machine: {', '.join(f'{n} {100 * d:.1f}%' for n, d in found.items())} "
          f"({seconds:.2f} s here; timing them took {timing:.2f} s when measured; kept in {crossover.path()})",
          flush=True)
    return {"crossovers": found, "seconds_here": seconds, "seconds_measured": timing}


def part_imp(args) -> dict:
    from ltstudy.engine.searches import ticket_search

    recipe = {"device": "cpu", "data": {"name": "fashion-mnist", "root": args.data_dir},
              "train": {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "iterations": args.imp_iterations,
                        "eval_every": 100},
              "prune": {"prune_rate": 0.2, "output_rate": 0.5, "scope": "layerwise", "rounds": 15}}
    from ltstudy.engine.callbacks import Callback

    class Keep(Callback):
        """Each round's masks."""

        def __init__(self):
            self.masks: dict[int, dict[str, torch.Tensor]] = {}

        def on_state(self, state) -> None:
            self.masks[state.record.round] = {n: m.bool().clone() for n, m in state.masks.items()}

    runs = {}
    for name, kernels, seed in (("dense", "dense", 0), ("auto", "auto", 0), ("dense seed 1", "dense", 1)):
        cfg = TicketConfig.from_dict({**recipe, "seed": seed, "train": {**recipe["train"], "kernels": kernels}})
        keep = Keep()
        t0 = time.perf_counter()
        result = ticket_search(cfg).run(keep)
        runs[name] = {"seconds": time.perf_counter() - t0, "rounds": result.rounds, "masks": keep.masks}
        print(f"{name}: {runs[name]['seconds']:.1f} s", flush=True)
    dense, auto, other = runs["dense"], runs["auto"], runs["dense seed 1"]
    last = max(dense["masks"])

    def overlap(a, b) -> float:
        return sum(int((a[n] & b[n]).sum()) for n in a) / sum(int(a[n].sum()) for n in a)

    out = {"speedup": dense["seconds"] / auto["seconds"], "seconds": {k: v["seconds"] for k, v in runs.items()},
           "mask_overlap_auto_vs_dense": overlap(dense["masks"][last], auto["masks"][last]),
           "mask_overlap_seed1_vs_seed0": overlap(dense["masks"][last], other["masks"][last]),
           "test_accuracy": {k: [r.test_accuracy_at_early_stop for r in v["rounds"]] for k, v in runs.items()},
           "density": [r.density for r in dense["rounds"]]}
    gaps = [abs(a - b) for a, b in zip(out["test_accuracy"]["auto"], out["test_accuracy"]["dense"], strict=True)]
    noise = [abs(a - b) for a, b in zip(out["test_accuracy"]["dense seed 1"], out["test_accuracy"]["dense"],
                                         strict=True)]
    out["max_accuracy_gap_auto"], out["max_accuracy_gap_seed"] = max(gaps), max(noise)
    print(f"IMP to {100 * dense['rounds'][-1].density:.1f}%: auto {out['speedup']:.2f}x faster than dense end to end; "
          f"final masks overlap {100 * out['mask_overlap_auto_vs_dense']:.1f}% (another seed: "
          f"{100 * out['mask_overlap_seed1_vs_seed0']:.1f}%); test accuracy per round differs by at most "
          f"{100 * max(gaps):.2f} points (another seed: {100 * max(noise):.2f})")
    return out


def part_export(args) -> dict:
    import copy

    from ltstudy.engine.sparse import SparseMLP, sparse_model

    torch.manual_seed(0)
    model = build_model("lenet-300-100", (1, 28, 28), 10).eval()
    masks = imp_masks(model, 15)
    apply_masks(model, masks)
    fast = sparse_model(model, masks)
    # The same chain over the masked dense weights: how much of the gain is the chain's, not the sparsity's.
    same_loop = SparseMLP([copy.deepcopy(m) for m in model.children() if not isinstance(m, torch.nn.Dropout)])
    x_all = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = {}
    nets = (("dense", model), ("sparse", fast), ("dense, same loop", same_loop))
    with torch.inference_mode():
        same = torch.equal(model(x_all).argmax(1), fast(x_all).argmax(1)) and all(
            torch.equal(model(x_all[i:i + 1]).argmax(1), fast(x_all[i:i + 1]).argmax(1)) for i in range(1000))
        for batch in (1, 1000):
            x = x_all[:batch]
            times: dict[str, list[float]] = {name: [] for name, _ in nets}
            # Short windows, many of them, alternating: a shared machine's noise comes in bursts longer than a
            # window, and the median of the paired ratios leaves them out.
            n = 300 if batch == 1 else 4
            for _ in range(10 * args.repeats):
                for name, net in nets:
                    t0 = time.perf_counter()
                    for _ in range(n):
                        net(x)
                    times[name].append((time.perf_counter() - t0) / n)
            med = {k: statistics.median(v) for k, v in times.items()}

            def paired(ref: str, times=times) -> float:
                return statistics.median(a / b for a, b in zip(times[ref], times["sparse"], strict=True))

            out[f"batch_{batch}"] = {"seconds": med, "speedup": paired("dense"),
                                     "speedup_vs_same_loop": paired("dense, same loop")}
            r = out[f"batch_{batch}"]
            print(f"exported 3.6% ticket, batch {batch}: dense {1e6 * med['dense']:.0f} us, sparse "
                  f"{1e6 * med['sparse']:.0f} us: {r['speedup']:.2f}x (median of paired windows; the dense weights "
                  f"in the sparse model's chain: {1e6 * med['dense, same loop']:.0f} us, "
                  f"{r['speedup_vs_same_loop']:.2f}x)", flush=True)
    dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    sparse_bytes = sum(m.nbytes() if hasattr(m, "nbytes") else 0 for m in fast) + sum(
        p.numel() * p.element_size() for p in fast.parameters())
    out.update(identical_predictions=same, dense_bytes=dense_bytes, sparse_bytes=sparse_bytes)
    print(f"weights: dense {dense_bytes / 1e3:.0f} kB, sparse {sparse_bytes / 1e3:.0f} kB; identical predictions "
          f"on 1,000 inputs, one at a time and as one batch: {same}")
    return out


def im2col_csr(x: torch.Tensor, layer, cout: int) -> torch.Tensor:
    """A 3x3 convolution (padding 1) as unfold, then the CSR weight times the columns."""
    batch, cin, hw, _ = x.shape
    cols = F.unfold(x, 3, padding=1)  # (batch, cin*9, hw*hw)
    flat = cols.transpose(1, 2).reshape(-1, cin * 9)
    return layer(flat).reshape(batch, hw * hw, cout).transpose(1, 2).reshape(batch, cout, hw, hw)


def part_conv(args) -> dict:
    from ltstudy.engine.sparse import CSRLinear

    shapes = [("conv-2/4/6 first", 3, 64, 32), ("conv-4/6 second block", 64, 128, 16), ("conv-6 third", 128, 256, 8)]
    rows = []
    x_batch = 60
    for label, cin, cout, hw in shapes:
        x = torch.randn(x_batch, cin, hw, hw)
        w = torch.randn(cout, cin, 3, 3)
        for density in (1.0, 0.51, 0.21, 0.107, 0.036):
            mask = (torch.rand_like(w) < density).float()
            layer = CSRLinear(w.reshape(cout, -1), mask.reshape(cout, -1), None)
            wm = w * mask

            dense = functools.partial(F.conv2d, x, wm, padding=1)
            sparse = functools.partial(im2col_csr, x, layer, cout)

            assert torch.allclose(dense(), sparse(), atol=1e-3)
            times = {"dense": [], "sparse": []}
            for _ in range(args.repeats):
                for name, fn in (("dense", dense), ("sparse", sparse)):
                    t0 = time.perf_counter()
                    for _ in range(5):
                        fn()
                    times[name].append((time.perf_counter() - t0) / 5)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"layer": label, "density": density, "seconds": med, "sparse_vs_dense": med["sparse"] /
                         med["dense"]})
            print(f"{label:22} density {100 * density:5.1f}%: dense {1e3 * med['dense']:7.2f} ms, im2col x CSR "
                  f"{1e3 * med['sparse']:7.2f} ms ({rows[-1]['sparse_vs_dense']:.2f}x)", flush=True)
    return {"batch": x_batch, "rows": rows}


def plot(result: dict, path: str) -> None:
    """Round time against density, each path; the idle run's and, given one, the loaded run's (`--load`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    for run, style in ((result, "-"), (result.get("loaded"), ":")):
        if not run or "round" not in run:
            continue
        rows = run["round"]["rows"]
        xs = [100 * r["density"] for r in rows]
        for kernels, marker, color in (("dense", "o", "C0"), ("sparse", "s", "C1"), ("auto", "^", "C2")):
            ax.plot(xs, [r["seconds"][kernels] for r in rows], style, marker=marker, ms=4, color=color,
                    label=f"{kernels}" + (" (beside a busy process)" if style == ":" else ""))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100 * r["density"] for r in result["round"]["rows"]]
    ticks = [t for i, t in enumerate(ticks) if i == 0 or ticks[i - 1] / t > 1.5]  # (labels that do not overlap)
    ax.set_xticks(ticks, [f"{t:.3g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("density of the round (LeNet-300-100, IMP's per-layer densities)")
    ax.set_ylabel(f"seconds per round of {result['round']['iterations']:,} iterations")
    ax.set_title(f"round time against density, evaluation included; CPU, one thread ({result['date']})",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["round", "imp", "export", "conv", "all", "plot"], default="all",
                    help="plot: draw --plot from the --json of an earlier run (and --loaded)")
    ap.add_argument("--iterations", type=int, default=1000, help="iterations of each timed round (--part round)")
    ap.add_argument("--imp-iterations", type=int, default=3000, help="iterations per round of the IMP (--part imp)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--load", type=int, default=0, help="competing busy processes")
    ap.add_argument("--json")
    ap.add_argument("--plot", metavar="OUT.png", help="round time against density (--part round)")
    ap.add_argument("--loaded", metavar="LOADED.json", help="with --plot: a --load run's JSON to draw beside")
    args = ap.parse_args(argv)
    if args.plot and args.part == "plot":
        result = json.loads(Path(args.json).read_text())
        if args.loaded:
            result["loaded"] = json.loads(Path(args.loaded).read_text())
        plot(result, args.plot)
        return result
    torch.set_num_threads(1)
    procs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.load)]
    for p in procs:
        p.start()
    try:
        parts = ["round", "imp", "export", "conv"] if args.part == "all" else [args.part]
        result = {"load": args.load, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
        for part in parts:
            result[part] = {"round": part_round, "imp": part_imp, "export": part_export, "conv": part_conv}[part](args)
    finally:
        for p in procs:
            p.terminate()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
