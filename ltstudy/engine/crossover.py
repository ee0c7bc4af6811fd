"""The density below which a pruned Linear layer trains faster on the CSR kernels: timed on this machine, kept.

`[train] kernels = "auto"` trains a layer sparse where that is faster, and where it is depends on the CPU: at
21% density the sparse round took 1.00x the dense one's time on an AMD EPYC and 1.18x on an Intel Xeon
(AVX-512), whose crossover was nearer 11%. So the crossover is measured where the run happens, for the run's own
layer shape, batch size, optimiser and thread count: one layer's training step (forward, weight and input
gradients, the optimiser's update) on the dense kernels and on the CSR ones (`csr.SparseLinear`, what the sparse
step runs), on seeded random data, at densities of a ladder bisected for the first where the sparse step wins,
each the fastest of alternated short windows (a shared machine's bursts of noise miss the fastest); the crossover
is interpolated between the two densities either side. About 0.1 s per layer shape, once per machine.

Each crossover is kept in a JSON file (`LTSTUDY_CROSSOVERS`, default ~/.cache/ltstudy/crossovers.json) under a
fingerprint of the CPU model, its kernels' instruction set and torch's version, and read from there afterwards
(under a lock: concurrent workers measure once). So a machine chooses the same kernels run after run, and the
same config gives it the same numbers. The choice is not part of any cache key: both kernels give the same
numbers to float tolerance (as another CPU does), and `kernels = "auto"` itself is in the keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from pathlib import Path

import torch

from . import strict_json
from .csr import SparseLinear

LADDER = (0.6, 0.45, 0.33, 0.25, 0.19, 0.14, 0.1, 0.07, 0.05, 0.03, 0.015)  # densities timed, going down
WINDOWS = 5  # alternated windows per kernel and density; the fastest of each counts
WINDOW_S = 0.002  # seconds per window (calls of a layer's step: at least one)

_known: dict[str, float] = {}  # this process's crossovers, by key


def crossover(out_features: int, in_features: int, batch_size: int, first: bool, optimizer: str) -> float:
    """The density below which this layer's training step is faster on the CSR kernels, on this machine."""
    key = (f"{out_features}x{in_features} batch {batch_size} {'first' if first else 'inner'} {optimizer} "
           f"threads {torch.get_num_threads()}")
    if key not in _known:
        _known[key] = _kept(fingerprint(), key, lambda: measure(out_features, in_features, batch_size, first,
                                                                optimizer))
    return _known[key]


def fingerprint() -> str:
    """The machine as far as the kernels' speed goes: CPU model, the instruction set torch's kernels use, torch."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    return f"{model} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__.split('+')[0]}"


def path() -> Path:
    """Where the crossovers are kept: $LTSTUDY_CROSSOVERS, or crossovers.json in the user's cache folder."""
    if os.environ.get("LTSTUDY_CROSSOVERS"):
        return Path(os.environ["LTSTUDY_CROSSOVERS"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ltstudy" / "crossovers.json"


def _kept(machine: str, key: str, measure_now) -> float:
    """The kept crossover for (machine, key), measured and kept first where there is none."""
    file = path()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        lock = open(file.with_name(file.name + ".lock"), "a")  # noqa: SIM115 (held until the entry is written)
    except OSError:  # (a read-only home: measured for this process only)
        return measure_now()["crossover"]
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            kept = json.loads(file.read_text()) if file.is_file() else {}
        except (OSError, ValueError):  # (damaged: measured again and rewritten)
            kept = {}
        entry = kept.get(machine, {}).get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("crossover"), int | float):
            entry = kept.setdefault(machine, {})[key] = measure_now()
            tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
            with contextlib.suppress(OSError):
                tmp.write_text(strict_json.dumps(kept, indent=1, sort_keys=True))
                os.replace(tmp, file)
        return float(entry["crossover"])


def measure(out_features: int, in_features: int, batch_size: int, first: bool, optimizer: str) -> dict:
    """Time this layer's step dense and sparse down the ladder; {"crossover", "ratios" (sparse/dense), ...}."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=g) * 0.05
    bias = torch.zeros(out_features)
    x = torch.randn(batch_size, in_features, generator=g)
    grad_out = torch.randn(batch_size, out_features, generator=g)
    dense = _dense_step(weight, bias, x, grad_out, first, optimizer, g)
    per_call = _fastest(dense, 1, 3)
    calls = max(1, round(WINDOW_S / max(per_call, 1e-7)))
    start = time.perf_counter()
    ratios: dict[float, float] = {}

    def timed(i: int) -> bool:
        """Whether the sparse step wins at LADDER[i] (timed once)."""
        density = LADDER[i]
        if density not in ratios:
            mask = (torch.rand(weight.shape, generator=g) < density).float()
            sparse = _sparse_step(mask, weight, bias, x, grad_out, first, optimizer)
            sparse()  # (warm: first-call allocations)
            times: dict[str, list[float]] = {"dense": [], "sparse": []}
            for _ in range(WINDOWS):
                for name, fn in (("dense", dense), ("sparse", sparse)):
                    times[name].append(_fastest(fn, calls, 1))
            ratios[density] = min(times["sparse"]) / min(times["dense"])
        return ratios[density] < 1.0

    # The sparse step's time falls with density: bisect for the first rung (going down) where it wins.
    lo, hi = 0, len(LADDER) - 1  # (LADDER[hi] the lowest density)
    if timed(hi) and not timed(lo):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if timed(mid) else (mid, hi)
    return {"crossover": crossover_of(ratios), "ratios": {str(d): round(r, 3) for d, r in ratios.items()},
            "seconds": round(time.perf_counter() - start, 3), "measured": time.strftime("%Y-%m-%d")}


def crossover_of(ratios: dict[float, float]) -> float:
    """The density where sparse/dense time crosses 1, from the ratios timed at some densities: interpolated
    between the highest density where sparse won and the lowest above it where it lost; the highest density timed
    if it won there, 0 (never sparse) if it won nowhere."""
    won = [d for d, r in ratios.items() if r < 1.0]
    if not won:
        return 0.0
    density = max(won)
    lost = [d for d in ratios if d > density]
    if not lost:
        return density
    above = min(lost)
    ratio, r_above = ratios[density], ratios[above]
    return density + (above - density) * (1.0 - ratio) / (r_above - ratio)


def _fastest(fn, calls: int, windows: int) -> float:
    """The fastest of `windows` windows of `calls` calls, per call."""
    best = float("inf")
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def _update(optimizer: str):
    """The optimiser's update of a list of parameters, as the lean step runs it (fused Adam; SGD's momentum)."""
    if optimizer == "adam":
        def adam(params, grads, state):
            state["step"].add_(1)
            torch._fused_adam_(params, grads, state["m"], state["v"], [], [state["step"]] * len(params),
                               amsgrad=False, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
                               maximize=False)
        return adam

    def sgd(params, grads, state):
        torch._foreach_mul_(state["m"], 0.9)
        torch._foreach_add_(state["m"], grads)
        torch._foreach_add_(params, state["m"], alpha=-1e-3)
    return sgd


def _state(params: list[torch.Tensor]) -> dict:
    return {"m": [torch.zeros_like(p) for p in params], "v": [torch.zeros_like(p) for p in params],
            "step": torch.zeros(())}


def _dense_step(weight, bias, x, grad_out, first, optimizer, g):
    """steps.LeanStep's work for one masked layer: addmm, the two gradient products, the mask, the update."""
    w, b = weight.clone(), bias.clone()
    mask = (torch.rand(w.shape, generator=g) < 0.5).float()
    update, state = _update(optimizer), _state([w, b])

    def step():
        torch.addmm(b, x, w.t())
        grad_w = grad_out.t().mm(x)
        if not first:
            grad_out.mm(w)
        grad_w.mul_(mask)
        update([w, b], [grad_w, grad_out.sum(0)], state)
    return step


def _sparse_step(mask, weight, bias, x, grad_out, first, optimizer):
    """steps.SparseStep's work for the same layer: its CSR forward, gradients and the update of the values."""
    layer, b = SparseLinear(mask, weight), bias.clone()
    update, state = _update(optimizer), _state([layer.values, b])

    def step():
        kept, _ = layer.forward(x, b)
        g_t = grad_out.t().contiguous()
        grad_values = layer.weight_grad(g_t, kept)
        if not first:
            layer.input_grad(g_t)
        update([layer.values, b], [grad_values, grad_out.sum(0)], state)
    return step
