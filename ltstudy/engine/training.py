"""Masked training and evaluation on in-memory tensors.

Masks hold exactly: gradients are masked before each optimiser step (so
momentum and Adam moments stay 0 at pruned positions) and the weights are
masked again after it (so weight decay or any other update cannot revive
them). Both are single foreach kernels over all prunable layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, Schedule, TrainConfig
from .data import Batches, Dataset, Split, augment_batch
from .models import set_dropout_generator
from .pruning import Masks, apply_masks
from .steps import make_optimizer, make_step  # noqa: F401  (make_optimizer: part of this module's API)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: a result (a bad region of the search), not a crash."""

    def __init__(self, message: str, iteration: int = 0):
        super().__init__(message)
        self.iteration = iteration


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use device = 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but is not available; use device = 'auto' or 'cpu'")
    return torch.device(name)


def lr_at(iteration: int, cfg: TrainConfig, sched: Schedule) -> float:
    """Learning rate for the step taken at `iteration` (0-based): linear warmup, then milestones."""
    lr = cfg.lr * cfg.gamma ** sum(iteration >= m for m in sched.milestones)
    if iteration < sched.warmup:
        lr *= (iteration + 1) / sched.warmup
    return lr


@dataclass
class Evaluation:
    loss: float
    accuracy: float


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int, state: dict[str, torch.Tensor] | None = None
             ) -> Evaluation:
    """Mean loss and accuracy on `split`, in eval mode, without autograd; one host sync at the end.

    With `state`, the model is evaluated as if it held those parameters and
    buffers (the early-stop snapshot) without touching its own.
    """
    was_training = model.training
    model.eval()
    forward = model if state is None else (lambda x: torch.func.functional_call(model, state, (x,)))
    loss = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), batch_size):
        out = forward(split.x[start:start + batch_size])
        y = split.y[start:start + batch_size]
        loss += F.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(split))
    return Evaluation(loss.item() / n, correct.item() / n)


@dataclass
class TrainResult:
    start: int  # first iteration of this run in the schedule
    end: int  # iteration training stopped at: the schedule's end, or earlier with patience
    train_loss: float  # mean training loss over the last evaluation window
    val_loss: float  # at the early-stop iteration (minimum validation loss)
    val_accuracy: float  # at the early-stop iteration
    early_stop_iteration: int  # iteration of minimum validation loss
    test_accuracy: float  # at the end of training (reported, never selected on)
    test_accuracy_at_early_stop: float  # at the early-stop iteration (reported, never selected on)
    wall_seconds: float
    start_test_accuracy: float = math.nan  # the state training started from, before any step
    snapshot: dict[str, torch.Tensor] | None = None  # model state at `capture_at`
    stopped_early: bool = False  # patience ended the run before the schedule's end

    @property
    def iterations(self) -> int:
        return self.end - self.start


def train(
    model: nn.Module,
    data: Dataset,
    masks: Masks,
    cfg: TrainConfig,
    sched: Schedule,
    *,
    seed: int,
    dropout_seed: int | None = None,
    start: int = 0,
    capture_at: int | None = None,
    constant_lr: float | None = None,
    on_eval: Callable[[int, Evaluation], None] | None = None,
    end: int | None = None,
    evaluate_splits: bool = True,
    on_step: Callable[[int, float, object], None] | None = None,
    lean: bool = True,
    overlap_eval: bool | None = None,
) -> TrainResult:
    """Train from schedule iteration `start` to the end, evaluating validation every `eval_every`.

    The test split is read only where it is reported: once before training
    (the start state's accuracy), and at the end for both the final state and
    the early-stop state (minimum validation loss, kept as a snapshot when
    validation improves). `capture_at` snapshots the full state (parameters
    and buffers) after that many iterations: θ_k for rewinding.
    `constant_lr` replaces the schedule (fine-tuning at the final rate).
    `end` stops early (replaying the first k iterations to rebuild θ_k, with
    `evaluate_splits=False`). `seed` fixes the data order (shared by all
    rounds, so iteration i sees the same batch in every round) and the
    augmentations; `dropout_seed` seeds the dropout masks. `on_step(iteration,
    lr, step)` is called after every optimiser step (tests read the step's
    optimiser state through `step.state(param)`); `lean=False` forces the
    autograd step (steps.py: both give the same bits). `overlap_eval`
    validates on a second thread while training goes on (default: see
    `set_overlap_eval`); the numbers are the same either way.
    """
    device = data.train.x.device
    t0 = time.perf_counter()
    apply_masks(model, masks)  # the masks define the network from its first step (the engine's starts are masked)
    step = make_step(model, masks, cfg, device, lean)
    batches = Batches(len(data.train), cfg.batch_size, seed, device)
    aug_gen = torch.Generator() if data.augment else None
    set_dropout_generator(model, None if dropout_seed is None else
                          torch.Generator(device=device).manual_seed(dropout_seed))
    X, Y = data.train.x, data.train.y
    end = sched.iterations if end is None else end
    result = TrainResult(start, end, math.nan, math.nan, math.nan, start, math.nan, math.nan, 0.0)

    validation = _Validation(model, data.val, cfg.eval_batch_size,
                             _OVERLAP_EVAL if overlap_eval is None else overlap_eval)
    # The start state's test accuracy (reported like the one after training, never selected on).
    start_test = validation.later(data.test, clone_state(model)) if evaluate_splits else None
    if capture_at is not None and capture_at == start:
        result.snapshot = clone_state(model)
    best_loss, best_state, since_best = math.inf, None, 0
    window_loss = torch.zeros((), device=device)
    window_n = 0
    lr_now = None

    try:
        model.train()
        for it in range(start, end):
            lr = constant_lr if constant_lr is not None else lr_at(it, cfg, sched)
            if lr != lr_now:
                step.set_lr(lr)
                lr_now = lr
            xb, yb = X.index_select(0, batches.indices(it)), batches.labels(it, Y)
            if aug_gen is not None:  # seeded by iteration, so a rewound round replays round 0's crops and flips
                xb = augment_batch(xb, aug_gen.manual_seed(seed * 7919 + it))
            window_loss += step(xb, yb)
            window_n += 1
            if on_step is not None:
                on_step(it, lr, step)

            done = it + 1
            if capture_at is not None and done == capture_at:
                result.snapshot = clone_state(model)
            if evaluate_splits and (done % sched.eval_every == 0 or done == end):
                train_loss = window_loss.item() / window_n
                if not math.isfinite(train_loss):
                    raise DivergedError(f"training loss became {train_loss} at iteration {done}; lower the "
                                        "learning rate", done)
                window_loss.zero_()
                window_n = 0
                stop = None
                for point in validation.point(done, train_loss, final=done == end):
                    pdone, pstate, val, result.train_loss = point
                    if val.loss < best_loss:
                        best_loss, since_best = val.loss, 0
                        result.val_loss, result.val_accuracy = val.loss, val.accuracy
                        result.early_stop_iteration = pdone
                        best_state = None if pdone == end else (pstate if pstate is not None else clone_state(model))
                    else:
                        since_best += 1
                    if on_eval is not None:
                        on_eval(pdone, val)
                    if cfg.patience and since_best >= cfg.patience and pdone < end:
                        stop = point
                        break
                if stop is not None:
                    result.end, result.stopped_early = stop[0], True
                    if stop[1] is not None:  # evaluated in the background: training went on past it; go back
                        model.load_state_dict(stop[1])
                    if capture_at is not None and capture_at > result.end:
                        result.snapshot = None
                    break

        if evaluate_splits:
            if best_loss == math.inf:  # nothing trained (start == end) or validation never finite: the state as it is
                val = evaluate(model, data.val, cfg.eval_batch_size)
                if not math.isfinite(val.loss):
                    raise DivergedError(f"validation loss is {val.loss} at iteration {result.end}", result.end)
                result.val_loss, result.val_accuracy, result.early_stop_iteration = val.loss, val.accuracy, result.end
            at_early_stop = validation.later(data.test, best_state) if best_state is not None else None
            result.test_accuracy = evaluate(model, data.test, cfg.eval_batch_size).accuracy
            result.test_accuracy_at_early_stop = result.test_accuracy if at_early_stop is None else \
                at_early_stop().accuracy
            result.start_test_accuracy = start_test().accuracy
    finally:
        validation.close()
    set_dropout_generator(model, None)
    result.wall_seconds = time.perf_counter() - t0
    return result


_OVERLAP_EVAL = False


def set_overlap_eval(on: bool) -> None:
    """Whether `train` validates in the background by default: for a process that has a second core to itself."""
    global _OVERLAP_EVAL
    _OVERLAP_EVAL = on


class _Validation:
    """The validation points of one run, in order: evaluated at once, or overlapped with training.

    Overlapped, point t is evaluated on a second thread (on a copy of the
    model holding the state at t) while training runs on to the next point,
    whose arrival waits for it: at most one is in flight, so the results come
    one window late but in the same order and with the same numbers. The last
    point is always evaluated at once. Each overlapped point keeps its state,
    so early stopping by patience can go back to it.
    """

    def __init__(self, model: nn.Module, split: Split, batch_size: int, overlap: bool):
        self.model, self.split, self.batch_size = model, split, batch_size
        self.pool = self.copy = None
        self.pending = None
        if overlap:
            import copy
            from concurrent.futures import ThreadPoolExecutor

            self.copy = copy.deepcopy(model).eval()
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="ltstudy-validation")

    def point(self, done: int, train_loss: float, final: bool) -> list[tuple]:
        """Validation point `done`; returns the points whose results are known now: (done, state, val, train loss)."""
        if self.pool is None or final:
            ready = self.drain()
            return [*ready, (done, None, evaluate(self.model, self.split, self.batch_size), train_loss)]
        state = clone_state(self.model)
        ready = self.drain()
        self.pending = (done, state, train_loss,
                        self.pool.submit(evaluate, self.copy, self.split, self.batch_size, state))
        return ready

    def later(self, split: Split, state: dict[str, torch.Tensor]) -> Callable[[], Evaluation]:
        """Evaluate `state` on `split` in the background (at once when not overlapping); call the result to wait."""
        if self.pool is None:
            evaluation = evaluate(self.model, split, self.batch_size, state=state)
            return lambda: evaluation
        return self.pool.submit(evaluate, self.copy, split, self.batch_size, state).result

    def drain(self) -> list[tuple]:
        if self.pending is None:
            return []
        done, state, train_loss, future = self.pending
        self.pending = None
        return [(done, state, future.result(), train_loss)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
