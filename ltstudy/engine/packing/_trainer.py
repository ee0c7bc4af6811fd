"""The packed trainer: `capacity` slots of one architecture, every member one iteration per `step()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.adam import adam as adam_update
from torch.optim.sgd import sgd as sgd_update

from ..callbacks import Callback, Callbacks
from ..data import Batches, Dataset, augment_batch
from ..errors import DivergedError
from ..models.layers import Dropout, set_dropout_generator
from ..pruning import apply_masks
from ..round_protocol import RoundProtocol
from ..rounds import RoundJob, TrainResult
from ..seeds import stream_seed
from ..training import job_lr
from ._layers import module_signature, unsupported_module
from ._net import PackedNet

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as make_optimizer uses them


@dataclass
class _Member:
    job: RoundJob
    token: Any
    slot: int
    it: int  # the next iteration to train
    batches: Batches
    dropout: torch.Generator | None
    aug: torch.Generator | None
    protocol: RoundProtocol  # everything of the round besides the step
    params: list[torch.Tensor]  # job.model's parameters, in the pack's order
    opt: dict[str, list] = field(default_factory=dict)  # optimiser state per parameter, as torch.optim keeps it
    steps: int = 0
    window_n: int = 0
    synced: bool = True  # job.model holds the slot's current weights
    left: bool = False  # finished; the slot is freed at the end of the step

    def lr(self) -> float:
        return job_lr(self.job, self.it)


def job_key(job: RoundJob, data: Dataset) -> tuple:
    """What members of one pack share: layers and their shapes, input shape, batch size, optimiser type."""
    return (tuple(module_signature(m) for m in job.model.children()), tuple(data.input_shape),
            min(job.train.batch_size, len(data.train)), job.train.optimizer)


class PackedTrainer:
    """`capacity` training slots on the data's device; members share architecture, batch size and optimiser type.

    `add(job, token)` puts a job into a free slot; `step()` trains every member
    one iteration and returns the (token, TrainResult | DivergedError) of those
    that ended. The architecture is that of the first job added; an empty pack
    takes the next job's.
    """

    def __init__(self, data: Dataset, capacity: int, *, exact: bool = True, callbacks: Callback | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.data, self.capacity, self.exact = data, capacity, exact
        self.callbacks = Callbacks(callbacks)
        self.device = data.train.x.device
        self.key: tuple | None = None
        self.net: PackedNet | None = None
        self.members: list[_Member] = []  # members[i].slot == i: slots 0..n-1 are the active ones
        self._window = torch.zeros(capacity, device=self.device)  # training-loss sums since the last evaluation
        self._fused = self.device.type in ("cuda", "cpu")  # as training.make_optimizer chooses
        self._ended: list[tuple[Any, TrainResult | DivergedError]] = []

    # ------------------------------------------------------------------ admission

    @staticmethod
    def supports(job: RoundJob) -> str | None:
        """None if the job has a packed form; else a one-line reason (a driver then trains it unpacked)."""
        model = job.model
        label = type(model).__name__
        if job.mask_updates is not None:
            return "masks that change during training (dynamic sparse training) have no packed form"
        if not isinstance(model, nn.Sequential):
            return f"{label} is not an nn.Sequential of Linear/Conv2d/ReLU/MaxPool2d/Flatten/Dropout layers"
        for name, m in model.named_children():
            reason = unsupported_module(name, m)
            if reason is not None:
                return f"{label} holds {reason}, which has no packed form"
        children = [m for m in model.children() if not isinstance(m, nn.Identity)]
        if not children or not isinstance(children[-1], nn.Linear):
            return f"{label} does not end in a Linear layer"
        if any(True for _ in model.buffers()):
            return f"{label} has buffers, which the packed form does not carry"
        if any(not p.requires_grad or p.dtype != torch.float32 for p in model.parameters()):
            return f"{label} has frozen or non-float32 parameters"
        if job.train.optimizer not in ("adam", "sgd"):
            return f"optimizer {job.train.optimizer!r} has no packed form"
        if job.dropout_seed is None and any(isinstance(m, Dropout) and m.p > 0 for m in model.modules()):
            return "dropout without a seed draws from the global RNG, which a pack cannot share"
        return None

    def accepts(self, job: RoundJob) -> str | None:
        """None if `add(job)` would succeed now; else why not."""
        reason = self.supports(job)
        if reason is not None:
            return reason
        if len(self.members) >= self.capacity:
            return "the pack is full"
        if self.members and job_key(job, self.data) != self.key:
            return "the pack trains another architecture, input shape, batch size or optimiser"
        return None

    def __len__(self) -> int:
        return len(self.members)

    @property
    def busy(self) -> bool:
        """Members to train, or outcomes the next step() will hand back."""
        return bool(self.members or self._ended)

    @property
    def free(self) -> int:
        return self.capacity - len(self.members)

    def add(self, job: RoundJob, token: Any = None) -> None:
        """Copy the job's start state and masks into a free slot and evaluate the start state, as `train` does."""
        reason = self.accepts(job)
        if reason is not None:
            raise ValueError(f"cannot pack this job: {reason}")
        key = job_key(job, self.data)
        if key != self.key:  # an empty pack takes the new architecture
            self.key, self.net = key, None
            self.net = PackedNet(job.model, self.capacity, self.data.input_shape, key[2], self.device, self.exact,
                                 self.callbacks)
        net = self.net
        assert net is not None
        slot, model, cfg = len(self.members), job.model, job.train
        apply_masks(model, job.masks)  # as train() does: the masks define the network from its first step
        params = list(model.parameters())
        with torch.no_grad():
            for p, own in zip(params, net.slot_params[slot], strict=True):
                own.copy_(p)
            for name, masks in zip(net.names, net.masks, strict=True):
                mask = job.masks.get(name)
                if mask is None:  # an unmasked layer: multiplying by 1 changes no bit
                    masks[slot].fill_(1.0)
                else:
                    masks[slot].copy_(mask)
        self._window[slot].zero_()
        model.train()
        protocol = RoundProtocol(job, self.data, self.callbacks)  # (the start's test read and θ_k at k = start)
        protocol.begin()
        dropout = None if job.dropout_seed is None else torch.Generator(self.device).manual_seed(job.dropout_seed)
        member = _Member(job, token, slot, job.start,
                         Batches(len(self.data.train), cfg.batch_size, job.data_seed, self.device), dropout,
                         torch.Generator() if self.data.augment else None, protocol, params)
        member.opt = self._fresh_state(net.slot_params[slot], cfg.optimizer)
        self.members.append(member)
        if job.start >= job.end:  # nothing to train: straight to the round's end
            self._finish(member)
            self._compact()

    def _fresh_state(self, params: list[torch.Tensor], optimizer: str) -> dict[str, list]:
        """A fresh optimiser's state, as torch.optim creates it: each round starts anew."""
        if optimizer == "adam":
            def step():
                return (torch.zeros((), dtype=torch.float32, device=self.device) if self._fused
                        else torch.tensor(0.0))
            return {"step": [step() for _ in params], "exp_avg": [torch.zeros_like(p) for p in params],
                    "exp_avg_sq": [torch.zeros_like(p) for p in params]}
        return {"momentum_buffer": [None] * len(params)}

    def inspect(self, token: Any) -> dict[str, dict[str, Any]]:
        """Live views of a member's slot: "weights" and "masks" by layer, "optimizer" state by parameter name."""
        net = self.net
        m = next((m for m in self.members if m.token == token and not m.left), None)
        if m is None or net is None:
            raise KeyError(f"no active member {token!r}")
        optimizer = {name: {k: v[j] for k, v in m.opt.items()} for j, name in enumerate(net.param_names)}
        return {"weights": {n: w[m.slot] for n, w in zip(net.names, net.weights, strict=True)},
                "masks": {n: k[m.slot] for n, k in zip(net.names, net.masks, strict=True)},
                "optimizer": optimizer}

    # ------------------------------------------------------------------ one iteration of every member

    def step(self) -> list[tuple[Any, TrainResult | DivergedError]]:
        """Train every member one iteration; returns (token, TrainResult | DivergedError) of the members that ended."""
        n = len(self.members)
        if n:
            self._train_step(n)
            for m in self.members:
                self._after_iteration(m)
            self._compact()
        ended, self._ended = self._ended, []
        return ended

    def _train_step(self, n: int) -> None:
        net, data, members = self.net, self.data, self.members
        assert net is not None
        batch = net.batch
        idx = torch.cat([m.batches.indices(m.it) for m in members]) if n > 1 else members[0].batches.indices(
            members[0].it)
        xb, yb = data.train.x.index_select(0, idx), data.train.y.index_select(0, idx)
        if data.augment:  # per member, seeded by its iteration exactly as train() seeds it
            xb = torch.cat([augment_batch(xb[i * batch:(i + 1) * batch],
                                          m.aug.manual_seed(stream_seed(m.job.data_seed, m.it, 7919)))
                            for i, m in enumerate(members)])
        gens = [m.dropout for m in members]
        losses = net.forward_backward(xb.view(n, batch, *xb.shape[1:]), yb, n, gens)
        _, grads, masks = net.span(0, n)
        with torch.no_grad():
            torch._foreach_mul_(grads, masks)  # masked gradients: optimiser state stays 0 at pruned positions
            self._optimizer_step(members)  # (the update leaves every pruned weight at exactly 0: see steps.py)
        self._window[:n] += losses

    def _optimizer_step(self, members: list[_Member]) -> None:
        """torch's fused Adam / SGD kernel on each member's slices, one call per group of equal hyperparameters."""
        net = self.net
        assert net is not None
        adam = self.key is not None and self.key[3] == "adam"
        groups: dict[tuple, list[_Member]] = {}
        for m in members:
            cfg = m.job.train
            key = (m.lr(), cfg.weight_decay) if adam else (m.lr(), cfg.weight_decay, cfg.momentum, cfg.nesterov,
                                                           m.steps == 0)
            groups.setdefault(key, []).append(m)
            m.steps += 1
        for key, group in groups.items():
            params = [p for m in group for p in net.slot_params[m.slot]]
            grads = [g for m in group for g in net.slot_grads[m.slot]]
            if adam:
                lr, wd = key
                exp_avgs = [t for m in group for t in m.opt["exp_avg"]]
                exp_avg_sqs = [t for m in group for t in m.opt["exp_avg_sq"]]
                steps = [t for m in group for t in m.opt["step"]]
                if self._fused:  # what torch.optim.adam._fused_adam does for a CPU/CUDA group with a float lr
                    torch._foreach_add_(steps, 1)
                    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr,
                                       beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=wd, eps=ADAM_EPS,
                                       maximize=False)
                else:
                    adam_update(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=True, amsgrad=False,
                                beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=lr, weight_decay=wd, eps=ADAM_EPS,
                                maximize=False)
                continue
            lr, wd, momentum, nesterov, first = key
            if momentum == 0:
                bufs: list = []
            elif first:  # torch.optim.sgd._fused_sgd's first step: buffers are created, then set from the gradient
                bufs = [torch.empty_like(g) for g in grads] if self._fused else [None] * len(grads)
            else:
                bufs = [b for m in group for b in m.opt["momentum_buffer"]]
            if self._fused:
                torch._fused_sgd_(params, grads, bufs, weight_decay=wd, momentum=momentum, lr=lr, dampening=0.0,
                                  nesterov=nesterov, maximize=False, is_first_step=first and momentum != 0)
            else:
                sgd_update(params, grads, bufs, foreach=True, weight_decay=wd, momentum=momentum, lr=lr,
                           dampening=0.0, nesterov=nesterov, maximize=False)
            if momentum != 0:
                k = len(net.params)
                for j, m in enumerate(group):
                    m.opt["momentum_buffer"] = bufs[j * k:(j + 1) * k]

    # ------------------------------------------------------------------ per member: the round protocol

    def _sync(self, m: _Member) -> None:
        """Copy the slot's weights into job.model (for evaluations, snapshots and the final state)."""
        if not m.synced:
            assert self.net is not None
            with torch.no_grad():
                torch._foreach_copy_(m.params, self.net.slot_params[m.slot])
            m.synced = True

    def _train_loss(self, m: _Member) -> float:
        mean = self._window[m.slot].item() / m.window_n
        self._window[m.slot].zero_()
        m.window_n = 0
        return mean

    def _after_iteration(self, m: _Member) -> None:
        m.it += 1
        m.window_n += 1
        m.synced = False
        done = m.it
        if m.protocol.due(done):
            self._sync(m)
            try:
                stop = m.protocol.after(done, lambda: self._train_loss(m))
            except DivergedError as exc:
                self._end(m, exc)
                return
            if stop:
                self._finish(m)
                return
        if done >= m.job.end:
            self._finish(m)

    def _finish(self, m: _Member) -> None:
        """The round's end: its final state in job.model, the protocol's last reads."""
        self._sync(m)
        try:
            outcome: TrainResult | DivergedError = m.protocol.finish()
        except DivergedError as exc:
            outcome = exc
        set_dropout_generator(m.job.model, None)
        self._end(m, outcome)

    def _end(self, m: _Member, outcome: TrainResult | DivergedError) -> None:
        self._sync(m)
        m.protocol.close()
        m.left, m.opt = True, {}
        self._ended.append((m.token, outcome))

    def _compact(self) -> None:
        """Free the slots of members that ended: the last active slot moves into each hole (0..n-1 stay active)."""
        net = self.net
        if net is None:
            return
        for hole in sorted((m.slot for m in self.members if m.left), reverse=True):
            last = len(self.members) - 1
            if hole != last:
                mover = self.members[last]
                with torch.no_grad():
                    for stack in (*net.params, *net.masks):
                        stack[hole].copy_(stack[last])
                    self._window[hole].copy_(self._window[last])
                mover.slot = hole
                self.members[hole] = mover
            self.members.pop()


