"""The solo trainer: one round of masked training on in-memory tensors, through the round protocol.

Masks hold exactly: the start state is masked before the first step, and
gradients are masked inside every step, so a pruned weight (0) gets a zero
update from Adam, SGD, momentum and weight decay alike and stays exactly 0;
no re-masking pass is needed after the step (steps.py says why, and
`pruning.check_masks_hold` verifies it after every round). What a round does
besides stepping (evaluation points, θ_k, early stopping, test reads) is the
`RoundProtocol`'s, shared with the packed trainer.
"""

from __future__ import annotations

import torch

from .callbacks import Callback, Callbacks, overrides
from .config import Schedule, TrainConfig
from .data import Batches, Dataset, augment_batch
from .models.layers import set_dropout_generator
from .pruning import apply_masks
from .round_protocol import RoundProtocol, overlap_default
from .rounds import RoundJob, TrainResult
from .seeds import stream_seed
from .steps import make_step


def lr_at(iteration: int, cfg: TrainConfig, sched: Schedule) -> float:
    """Learning rate for the step taken at `iteration` (0-based): linear warmup, then milestones."""
    lr = cfg.lr * cfg.gamma ** sum(iteration >= m for m in sched.milestones)
    if iteration < sched.warmup:
        lr *= (iteration + 1) / sched.warmup
    return lr


def job_lr(job: RoundJob, iteration: int) -> float:
    return job.constant_lr if job.constant_lr is not None else lr_at(iteration, job.train, job.sched)


def train(job: RoundJob, data: Dataset, callbacks: Callback | None = None, *, lean: bool = True,
          overlap_eval: bool | None = None) -> TrainResult:
    """Train `job` in place from its start to its end (or until patience ends it); its TrainResult.

    The data order is a seeded permutation per epoch (`job.data_seed`), so
    iteration i sees the same batch in every round and a rewound round replays
    the batches from k; augmentations are seeded by iteration; dropout draws
    from its own seeded generator. `lean=False` forces the autograd step
    (steps.py: the steps give the same bits). `overlap_eval` validates on a
    second thread while training goes on (default: `set_overlap_eval`); the
    numbers are the same either way.
    """
    callbacks = Callbacks(callbacks)
    model, cfg, device = job.model, job.train, data.train.x.device
    apply_masks(model, job.masks)  # the masks define the network from its first step
    batches = Batches(len(data.train), cfg.batch_size, job.data_seed, device)
    aug = torch.Generator() if data.augment else None
    X, Y = data.train.x, data.train.y

    def batch(it: int) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = X.index_select(0, batches.indices(it)), batches.labels(it, Y)
        if aug is not None:  # seeded by iteration, so a rewound round replays round 0's crops and flips
            xb = augment_batch(xb, aug.manual_seed(stream_seed(job.data_seed, it, 7919)))
        return xb, yb

    # The step sees one batch of the run's shape: a CUDA graph is captured with it.
    updates = job.mask_updates  # (dynamic sparse training: mask_updates.py)
    step = make_step(model, job.masks, cfg, device, lean, example=lambda: batch(job.start))
    set_dropout_generator(model, None if job.dropout_seed is None else
                          torch.Generator(device=device).manual_seed(job.dropout_seed))
    protocol = RoundProtocol(job, data, callbacks, overlap_default() if overlap_eval is None else overlap_eval)
    on_step = overrides(callbacks.members, "on_step")
    window = torch.zeros((), device=device)
    n = 0

    def train_loss() -> float:
        nonlocal n
        mean = window.item() / n
        window.zero_()
        n = 0
        return mean

    lr_now = None
    try:
        protocol.begin()
        model.train()
        for it in range(job.start, job.end):
            if updates is not None and updates.due(it):
                step.sync()
                step.masks_changed(updates.update(it, model, job.masks, step, batch(it)))
            lr = job_lr(job, it)
            if lr != lr_now:
                step.set_lr(lr)
                lr_now = lr
            window += step(*batch(it))
            n += 1
            if on_step:
                step.sync()
                for cb in on_step:
                    cb.on_step(job, it, lr, step)
            if protocol.due(it + 1):
                step.sync()  # (the protocol reads the model only here and at the end)
                if protocol.after(it + 1, train_loss):
                    break
        step.sync()  # (after an early stop, nothing has stepped since the last sync: it writes nothing)
        return protocol.finish()
    finally:
        protocol.close()
        set_dropout_generator(model, None)
