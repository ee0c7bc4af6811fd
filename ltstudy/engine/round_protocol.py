"""What a round does besides stepping, written once for every trainer (the solo one and the packed one).

A `RoundProtocol` follows one `RoundJob` from its start state to its
`TrainResult`:

- the start: the test accuracy of the start state (reported, never selected on), and the
  snapshot of θ_k when k is the start;
- after each iteration: the θ_k snapshot at `capture_at`; at every evaluation point
  (`eval_every`, and the end) the mean training loss of the window (a NaN or infinite one
  is a divergence: `DivergedError`), validation, the best state so far (the early-stop
  snapshot, at the minimum validation loss), and patience;
- the end: validation if nothing was ever evaluated, and the other two test reads (the
  early-stop state and the final state).

The test split is read only at those three states. A trainer calls `begin()`,
then `after(done, ...)` whenever `due(done)` says an iteration needs it (and
its model then holds that iteration's weights), and `finish()`.

Validation can run on a second thread while training goes on (`overlap`):
point t is evaluated on a copy of the model holding the state at t, and its
result is read when the next point arrives, so results come one window late
but in the same order and with the same numbers. The last point is always
evaluated at once. An overlapped point keeps its state, so patience can go
back to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import pruning
from .callbacks import Callback
from .errors import DivergedError
from .rounds import Evaluation, Masks, RoundJob, RoundResult, State, TrainResult
from .sparse import SparseEval

if TYPE_CHECKING:
    from .data import Dataset, Split


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int, state: State | None = None,
             sparse: SparseEval | None = None) -> Evaluation:
    """Mean loss and accuracy on `split`, in eval mode, without autograd; one host sync at the end.

    With `state`, the model is evaluated as if it held those parameters and
    buffers (the early-stop snapshot) without touching its own; with `sparse`,
    through the sparse kernels' forward pass (sparse.py).
    """
    was_training = model.training
    model.eval()
    if sparse is not None:
        forward = sparse.prepare(state)
    else:
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


def clone_state(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def cpu(state: State) -> State:
    return {k: v.detach().cpu() for k, v in state.items()}


def round_record(round_: int, masks: Masks, res: TrainResult) -> RoundResult:
    """The record of a round trained on `masks` (the ticket's, or a branch's)."""
    return RoundResult(
        round=round_, density=pruning.density(masks), weights_remaining=pruning.remaining(masks),
        val_loss=res.val_loss, val_accuracy=res.val_accuracy, early_stop_iteration=res.early_stop_iteration,
        test_accuracy=res.test_accuracy, test_accuracy_at_early_stop=res.test_accuracy_at_early_stop,
        train_loss=res.train_loss, iterations=res.iterations, wall_seconds=round(res.wall_seconds, 4),
        start_test_accuracy=res.start_test_accuracy,
        layer_density=pruning.layer_density(masks), computed_iterations=res.iterations,
        stopped_early=res.stopped_early)


class RoundProtocol:
    """One round's evaluation points, θ_k capture, early-stop snapshot, patience, divergence and test reads."""

    def __init__(self, job: RoundJob, data: Dataset, callbacks: Callback, overlap: bool = False):
        self.job, self.data, self.callbacks = job, data, callbacks
        self.result = TrainResult(job.start, job.end, early_stop_iteration=job.start)
        self._every = job.sched.eval_every
        sparse = (SparseEval.of(job.model, job.masks, job.train, data.val.x.device, job.mask_updates is not None)
                  if job.evaluate else None)
        self._validation = _Validation(job.model, data.val, job.train.eval_batch_size, overlap and job.evaluate,
                                       sparse)
        self._best_loss, self._best_state, self._since_best = math.inf, None, 0
        self._start_test: Callable[[], Evaluation] | None = None
        self._t0 = time.perf_counter()

    def begin(self) -> None:
        """The start state (the model holds it, masked): its test accuracy, and θ_k when k is the start."""
        job = self.job
        self.callbacks.on_round_start(job)
        if job.evaluate:
            self._start_test = self._validation.later(self.data.test, clone_state(job.model))
        if job.capture_at is not None and job.capture_at == job.start:
            self.result.snapshot = clone_state(job.model)

    def due(self, done: int) -> bool:
        """Whether iteration `done` (iterations finished) needs `after`: a capture or an evaluation point."""
        return done == self.job.capture_at or (self.job.evaluate and (done % self._every == 0 or done == self.job.end))

    def after(self, done: int, train_loss: Callable[[], float]) -> bool:
        """Iteration `done` finished and the model holds its weights; True when the round ends here (patience).

        `train_loss()` returns the window's mean training loss and starts a new window.
        """
        job, result = self.job, self.result
        if done == job.capture_at:
            result.snapshot = clone_state(job.model)
        if not (job.evaluate and (done % self._every == 0 or done == job.end)):
            return False
        loss = train_loss()
        if not math.isfinite(loss):
            raise DivergedError(f"training loss became {loss} at iteration {done}; lower the learning rate", done)
        cfg = job.train
        for point in self._validation.point(done, loss, final=done == job.end):
            pdone, pstate, val, result.train_loss = point
            if val.loss < self._best_loss:
                self._best_loss, self._since_best = val.loss, 0
                result.val_loss, result.val_accuracy, result.early_stop_iteration = val.loss, val.accuracy, pdone
                self._best_state = None if pdone == job.end else (pstate if pstate is not None
                                                                  else clone_state(job.model))
            else:
                self._since_best += 1
            self.callbacks.on_evaluation(job, pdone, val)
            if cfg.patience and self._since_best >= cfg.patience and pdone < job.end:
                result.end, result.stopped_early = pdone, True
                if pstate is not None:  # evaluated in the background: training went on past it; go back
                    job.model.load_state_dict(pstate)
                if job.capture_at is not None and job.capture_at > pdone:
                    result.snapshot = None
                return True
        return False

    def finish(self) -> TrainResult:
        """The end of the round (the model holds its final weights): the remaining reads, and the result."""
        job, result, data = self.job, self.result, self.data
        try:
            if job.evaluate:
                if self._best_loss == math.inf:  # nothing trained (start == end): the state as it is
                    val = self._validation.now(data.val)
                    if not math.isfinite(val.loss):
                        raise DivergedError(f"validation loss is {val.loss} at iteration {result.end}", result.end)
                    result.val_loss, result.val_accuracy, result.early_stop_iteration = (val.loss, val.accuracy,
                                                                                          result.end)
                at_early_stop = (self._validation.later(data.test, self._best_state)
                                 if self._best_state is not None else None)
                result.test_accuracy = self._validation.now(data.test).accuracy
                result.test_accuracy_at_early_stop = (result.test_accuracy if at_early_stop is None
                                                      else at_early_stop().accuracy)
                assert self._start_test is not None
                result.start_test_accuracy = self._start_test().accuracy
        finally:
            self.close()
        result.wall_seconds = time.perf_counter() - self._t0
        return result

    def close(self) -> None:
        self._validation.close()
        self._best_state = None


# --------------------------------------------------------------------------- validation, at once or overlapped

_OVERLAP_EVAL = False


def set_overlap_eval(on: bool) -> None:
    """Whether solo rounds validate in the background by default: for a process with a second core to itself."""
    global _OVERLAP_EVAL
    _OVERLAP_EVAL = on


def overlap_default() -> bool:
    return _OVERLAP_EVAL


class _Validation:
    """The validation points of one round, in order: evaluated at once, or overlapped (see the module docstring)."""

    def __init__(self, model: nn.Module, split: Split, batch_size: int, overlap: bool,
                 sparse: SparseEval | None = None):
        self.model, self.split, self.batch_size, self.sparse = model, split, batch_size, sparse
        self.pool = self.copy = self.sparse_bg = None
        self.pending = None
        if overlap:
            import copy
            from concurrent.futures import ThreadPoolExecutor

            self.copy = copy.deepcopy(model).eval()
            self.sparse_bg = sparse.on(self.copy) if sparse is not None else None  # (buffers of its own)
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="ltstudy-validation")

    def now(self, split: Split) -> Evaluation:
        """The model as it is, on `split`, at once (on this thread)."""
        return evaluate(self.model, split, self.batch_size, sparse=self.sparse)

    def point(self, done: int, train_loss: float, final: bool) -> list[tuple]:
        """Validation point `done`; the points whose results are known now: (done, state, val, train loss)."""
        if self.pool is None or final:
            ready = self.drain()
            return [*ready, (done, None, self.now(self.split), train_loss)]
        state = clone_state(self.model)
        ready = self.drain()
        self.pending = (done, state, train_loss,
                        self.pool.submit(evaluate, self.copy, self.split, self.batch_size, state, self.sparse_bg))
        return ready

    def later(self, split: Split, state: State) -> Callable[[], Evaluation]:
        """Evaluate `state` on `split` in the background (at once when not overlapping); call the result to wait."""
        if self.pool is None:
            evaluation = evaluate(self.model, split, self.batch_size, state=state, sparse=self.sparse)
            return lambda: evaluation
        return self.pool.submit(evaluate, self.copy, split, self.batch_size, state, self.sparse_bg).result

    def drain(self) -> list[tuple]:
        if self.pending is None:
            return []
        done, state, train_loss, future = self.pending
        self.pending = None
        return [(done, state, future.result(), train_loss)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
