"""Trials packed side by side: `[study] pack = N` trains N trials at once as one batched network.

Each trial keeps everything of its own (masks, θ0, θ_k, re-init, rewind point,
data order, early stopping, its MLflow run and Optuna result) and gets the
numbers it would get alone, bit for bit (engine/packing.py). When a trial
finishes or is pruned, its slot takes the next trial the sampler proposes.
Models without a packed form (batch norm: vgg-19, resnet-20) are trained one
at a time, with one note saying so.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

from ..engine.data import load_dataset
from ..engine.packing import drive_packed
from ..engine.ticket import RoundJob
from ..engine.training import TrainResult, resolve_device
from .objective import Outcome, TrialContext


def drive_packed_trials(trials: Iterator[Generator[RoundJob, TrainResult, Outcome]], ctx: TrialContext, pack: int,
                        notes: list[str]) -> None:
    data = load_dataset(ctx.cfg.base.data, resolve_device(ctx.cfg.base.device))
    drive_packed(trials, data, pack, on_note=notes.append, progress=ctx.hooks.iteration)
