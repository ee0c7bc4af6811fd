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
from .pruning import Masks, weights


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


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


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # Fused kernels where the device has them (CUDA, and CPU in recent torch); foreach otherwise.
    kind = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kind)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **kind)


@dataclass
class Evaluation:
    loss: float
    accuracy: float


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int) -> Evaluation:
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), batch_size):
        out = model(split.x[start:start + batch_size])
        y = split.y[start:start + batch_size]
        loss += F.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(split))
    return Evaluation(loss.item() / n, correct.item() / n)


@dataclass
class TrainResult:
    start: int  # first iteration of this run in the schedule
    end: int  # iterations completed in the schedule (= sched.iterations)
    train_loss: float  # mean training loss over the last evaluation window
    val_loss: float  # at the early-stop iteration
    val_accuracy: float  # at the early-stop iteration
    early_stop_iteration: int  # iteration of minimum validation loss
    test_accuracy: float  # at the end of training
    test_accuracy_at_early_stop: float
    wall_seconds: float
    snapshot: dict[str, torch.Tensor] | None = None  # model state at `capture_at`

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
    start: int = 0,
    capture_at: int | None = None,
    constant_lr: float | None = None,
    on_eval: Callable[[int, Evaluation], None] | None = None,
    end: int | None = None,
) -> TrainResult:
    """Train from schedule iteration `start` to the end and evaluate every `eval_every`.

    `capture_at` snapshots the full state (parameters and buffers) after that
    many iterations: θ_k for rewinding. `constant_lr` replaces the schedule
    (fine-tuning at the final rate). `end` stops early (replaying the first k
    iterations to rebuild θ_k). `seed` fixes the data order (shared by
    all rounds, so iteration i sees the same batch in every round) while the
    caller seeds dropout.
    """
    device = data.train.x.device
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg, device)
    masked_w = list(weights(model, masks).values())
    mask_list = list(masks.values())
    batches = Batches(len(data.train), cfg.batch_size, seed, device)
    aug_gen = torch.Generator() if data.augment else None
    X, Y = data.train.x, data.train.y

    snapshot = None
    if capture_at is not None and capture_at == start:
        snapshot = clone_state(model)
    best: tuple[float, float, int, float] | None = None  # val loss, val acc, iteration, test acc
    test_end = float("nan")
    window_loss = torch.zeros((), device=device)
    window_n = 0
    train_loss = float("nan")
    lr_now = None

    model.train()
    end = sched.iterations if end is None else end
    for it in range(start, end):
        lr = constant_lr if constant_lr is not None else lr_at(it, cfg, sched)
        if lr != lr_now:
            for group in opt.param_groups:
                group["lr"] = lr
            lr_now = lr
        idx = batches.indices(it)
        xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
        if aug_gen is not None:  # seeded by iteration, so a rewound round replays round 0's crops and flips
            xb = augment_batch(xb, aug_gen.manual_seed(seed * 7919 + it))
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if mask_list:
            torch._foreach_mul_([w.grad for w in masked_w], mask_list)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if mask_list:
            with torch.no_grad():
                torch._foreach_mul_(masked_w, mask_list)
        window_loss += loss.detach()
        window_n += 1

        done = it + 1
        if capture_at is not None and done == capture_at:
            snapshot = clone_state(model)
        if done % sched.eval_every == 0 or done == end:
            train_loss = window_loss.item() / window_n
            if not math.isfinite(train_loss):
                raise DivergedError(f"training loss became {train_loss} at iteration {done}; lower the learning rate")
            window_loss.zero_()
            window_n = 0
            val = evaluate(model, data.val, cfg.eval_batch_size)
            test = evaluate(model, data.test, cfg.eval_batch_size)
            test_end = test.accuracy
            if best is None or val.loss < best[0]:
                best = (val.loss, val.accuracy, done, test.accuracy)
            if on_eval is not None:
                on_eval(done, val)

    if best is None:  # nothing left to train (start == end): evaluate the state as it is
        val = evaluate(model, data.val, cfg.eval_batch_size)
        test = evaluate(model, data.test, cfg.eval_batch_size)
        best, test_end = (val.loss, val.accuracy, start, test.accuracy), test.accuracy
    return TrainResult(start, end, train_loss, best[0], best[1], best[2], test_end, best[3],
                       time.perf_counter() - t0, snapshot)


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
