"""Peak resident memory of a Fashion-MNIST ticket search, against `import torch` in the same run.

Each measurement is a fresh Python process (the same interpreter, the same environment), whose peak resident set
(ru_maxrss, read with os.wait4 for that child alone, the kernel's VmHWM at exit) is reported:

TORCH    python -c 'import torch': the floor every torch program pays.
DATA     ltstudy.engine.data.load_dataset on Fashion-MNIST (55,000 training, 5,000 validation and 10,000 test images
         as float32 tensors, 219 MB once normalised): the data path alone.
SEARCH   `ltstudy ticket` with open_lth's LeNet-300-100 recipe on Fashion-MNIST (Adam 1.2e-3, batch 60, 7 levels of
         --iterations each, global pruning of 20% per level with the output layer unpruned), end to end.

The figure that matters is SEARCH's peak in MB (and its excess over TORCH: what ltstudy adds to torch). TORCH's
peak is reached at exit (torch's teardown pages in about 130 MB more than the import left resident). The
measurements alternate --repeats times and the medians are printed; `--load N` runs N busy processes (pure Python
loops) beside them. The data must be installed (`apt-get install dataset-fashion-mnist`, or --data-dir).

    python benchmarks/memory.py [--iterations 2000] [--repeats 1] [--load 0] [--data-dir data] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

DATA = """
from ltstudy.engine.config import DataConfig
from ltstudy.engine.data import load_dataset
d = load_dataset(DataConfig(name="fashion-mnist", root={root!r}))
print(len(d.train), len(d.val), len(d.test))
del d  # (as a program that is done with it: the dataset does not live on through torch's teardown)
"""


def peak_mb(argv: list[str]) -> float:
    """Peak resident memory of one child process, in MB (10^6 bytes)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"memory.py: {' '.join(argv[:4])} ... failed:\n{log.read().decode(errors='replace')[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e6  # (Linux reports kilobytes)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "torch": [py, "-c", "import torch"],
        "data": [py, "-c", DATA.format(root=args.data_dir)],
        "search": [py, "-m", "ltstudy.cli", "ticket", "--quiet", "--dataset", "fashion-mnist", "--data-dir",
                   args.data_dir, "--model", "lenet-300-100", "--optimizer", "adam", "--lr", "1.2e-3",
                   "--batch-size", "60", "--iterations", str(args.iterations), "--eval-every",
                   str(args.iterations), "--prune-rate", "0.2", "--rounds", "6", "--scope", "global",
                   "--ignore", "fc3", "--rewind-iter", "0", "--device", "cpu"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=2000, help="training iterations per level (open_lth's: 2000)")
    ap.add_argument("--repeats", type=int, default=1, help="alternated measurements of each; medians are printed")
    ap.add_argument("--load", type=int, default=0, help="busy processes running beside the measurements")
    ap.add_argument("--data-dir", default="data", help="searched before /usr/share/datasets/fashion-mnist")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        peaks: dict[str, list[float]] = {name: [] for name in commands(args)}
        for _ in range(args.repeats):
            for name, argv in commands(args).items():
                peaks[name].append(peak_mb(argv))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    med = {name: statistics.median(v) for name, v in peaks.items()}
    print(f"{cpu_name()}; a fresh process each; busy processes beside: {args.load}; medians of {args.repeats}")
    for name, label in (("torch", "import torch"), ("data", "load_dataset(fashion-mnist)"),
                        ("search", f"ticket search, 7 levels x {args.iterations} it")):
        print(f"  {label:<36} peak {med[name]:7.0f} MB   over import torch {med[name] - med['torch']:+6.0f} MB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"peaks_mb": peaks, "medians_mb": med, "iterations": args.iterations, "load": args.load}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
