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


def set_threads(threads: int = 0) -> int:
    """Set this process's torch (and OpenMP) threads; 0 = the default, one. Returns the count set."""
    import torch

    n = threads if threads > 0 else 1
    os.environ["OMP_NUM_THREADS"] = str(n)  # (for libraries that read it later)
    torch.set_num_threads(n)
    return n
