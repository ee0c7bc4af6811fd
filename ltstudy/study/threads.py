"""Torch threads per process.

Small-batch training (batch 60 on LeNet-300-100) cannot keep two cores busy
from one process: OpenMP threads spin at every kernel's barrier, and when
another process shares the cores those spinning threads burn CPU time waiting
(rounds were up to 7x slower with two threads per process under a competing
load). One thread per process is the default; scale out with --jobs (processes).
`[study].threads` overrides it (e.g. large batches or conv nets on an idle machine).
"""

from __future__ import annotations

import os


def set_threads(threads: int = 0, alone: bool = True) -> int:
    """Set this process's torch (and OpenMP) threads; 0 = the default, one. Returns the count set.

    A process `alone` on a machine with a second core (not one of several
    --jobs workers) validates on that core while it trains
    (training.set_overlap_eval: the same numbers, a shorter round).
    """
    import torch

    from ..engine.round_protocol import set_overlap_eval

    n = threads if threads > 0 else 1
    if n > cores():
        import warnings

        from ..engine.errors import SettingWarning

        warnings.warn(f"study.threads = {n} but this process may run on {cores()} cores: the extra threads wait on "
                      "each other (slower, not faster)", SettingWarning, stacklevel=2)
    os.environ["OMP_NUM_THREADS"] = str(n)  # (for libraries that read it later)
    torch.set_num_threads(n)
    set_overlap_eval(alone and n == 1 and cores() >= 2)
    return n


def cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1
