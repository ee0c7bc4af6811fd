"""One training step (forward, backward, masked gradients, optimiser), two ways, bit for bit the same.

- `AutogradStep` works for every model: autograd, then torch.optim's fused optimiser.
- `SparseStep` is LeanStep with the pruned layers on sparse.py's CSR kernels (`[train] kernels`):
  the same numbers to float tolerance, not bit for bit; masks that move (SET, RigL) rebuild its structure
  at each update (`masks_changed`).
- `LeanStep` is for networks made of Flatten, Linear, ReLU and the seeded Dropout only
  (LeNet-300-100, the paper's MNIST network): it runs the very aten ops autograd runs
  for them (addmm, relu_, log_softmax, nll_loss and their backward kernels), in the
  same order and with the same operand layouts, without building a graph each step, and
  calls the fused Adam kernel directly (SGD goes through torch.optim). The results are
  identical to AutogradStep's, which a test checks bit for bit.

Masks hold exactly with gradients masked alone: a pruned weight is 0 and its gradient
is masked to 0, so Adam's moments and SGD's momentum stay 0 there, and the update
(weight decay included, as it multiplies the weight) is exactly 0 too. So weights are
not re-masked after the step; `pruning.check_masks_hold` verifies it after every round.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .csr import SparseLinear
from .mask_updates import Change
from .models.layers import Dropout, plain_mlp
from .pruning import Masks, weights
from .sparse import sparse_supported, trains_sparse


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # Fused kernels where the device has them (CUDA, and CPU in recent torch); foreach otherwise.
    kind = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kind)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **kind)


class Step:
    """What the trainers call: `set_lr`, `step(xb, yb)` (the loss), `state(param)` (its optimiser state), `sync`."""

    def sync(self) -> None:
        """Make the model hold the step's weights: the trainer calls it before anything reads the model (a step
        that trains other tensors, like SparseStep's values, writes them back only here)."""

    def masks_changed(self, changes: dict[str, Change]) -> None:
        """The masks were changed in place (mask_updates.py: dynamic sparse training), the weights and optimiser
        state at the changed positions zeroed: a step that holds a copy of the structure rebuilds it here."""

    def clear_state(self, param: torch.Tensor, positions: torch.Tensor) -> None:
        """Zero the optimiser state of `param` at the flat `positions` (a mask update's dropped and grown ones)."""
        for state in self.state(param).values():
            if torch.is_tensor(state) and state.shape == param.shape:
                state.view(-1)[positions] = 0


class AutogradStep(Step):
    def __init__(self, model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, cfg, device)
        self.masked = list(weights(model, masks).values())
        self.mask_list = list(masks.values())

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.model(xb), yb)
        loss.backward()
        if self.mask_list:
            torch._foreach_mul_([w.grad for w in self.masked], self.mask_list)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.opt.state.get(param, {}))


class LeanStep(Step):
    """See the module docstring. `supports(model)` says whether a model qualifies."""

    @staticmethod
    def supports(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
        return device.type == "cpu" and plain_mlp(model)

    def __init__(self, model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device):
        self.layers = list(model.children())
        self.linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        params = [p for m in self.linears for p in (m.weight, m.bias)]
        self.params = [p.detach() for p in params]
        names = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        # A mask without a zero (every layer in the dense round) changes no bit: skip multiplying by it.
        self._mask_of, self._names = masks, [names[id(lin.weight)] for lin in self.linears]
        self.masks = self._multipliers()
        self.cfg = cfg
        self.lr = cfg.lr
        self._one = torch.ones((), device=device)
        self._grad_params = params
        self._layer_setup(masks, [names[id(lin.weight)] for lin in self.linears])
        params = self._grad_params
        if cfg.optimizer == "adam":
            # The state torch.optim.Adam(fused=True) keeps: zero moments and a float32 step count per parameter.
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
            # Every parameter has taken the same number of steps: one count, incremented once, read by the kernel
            # for each (torch keeps one per parameter and increments all of them).
            self.step_count = torch.zeros((), dtype=torch.float32, device=device)
            self.steps = [self.step_count] * len(self.params)
            self.opt = None
        else:
            self.opt = make_optimizer(params, cfg, device)

    def masks_changed(self, changes: dict[str, Change]) -> None:
        self.masks = self._multipliers()

    def _multipliers(self, skip=()) -> list[torch.Tensor | None]:
        """Each Linear layer's gradient mask; None where nothing is pruned, and for the layers `skip` names."""
        return [None if i in skip or m is None or bool(m.all()) else m
                for i, m in enumerate(self._mask_of.get(n) for n in self._names)]

    def _layer_setup(self, masks: Masks, names: list[str]) -> None:
        """A subclass's place to train some layers' weights as other tensors (sparse.py's values)."""

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        if self.opt is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr

    @torch.no_grad()
    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        saved = []
        x = xb
        linear = 0
        for m in self.layers:  # forward, keeping what each backward kernel reads
            kind = type(m)
            if kind is nn.Linear:
                kept, x = self._linear(linear, m, x)
                saved.append(kept)
                linear += 1
            elif kind is nn.ReLU:
                x = torch.relu_(x)
                saved.append(x)
            elif kind is nn.Flatten:
                x = torch.flatten(x, m.start_dim, m.end_dim)
            else:  # the seeded Dropout, as its forward computes it
                if m.training and m.p != 0.0:
                    # (drawn in the logical order whatever x's layout: the sparse step's views draw the same)
                    keep = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - m.p,
                                                                                           generator=m.generator)
                    scale = 1.0 / (1.0 - m.p)
                    x = x * keep * scale
                    saved.append((keep, scale))
                else:
                    saved.append(None)
        log_probs = torch.log_softmax(x, 1)
        loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, yb, None, 1, -100)
        g = torch.ops.aten.nll_loss_backward(self._one, log_probs, yb, None, 1, -100, total_weight)
        g = torch.ops.aten._log_softmax_backward_data(g, log_probs, 1, log_probs.dtype)
        grads: list[torch.Tensor] = []
        for m in reversed(self.layers):  # backward: autograd's kernels and layouts (see mm_mat2_backward)
            kind = type(m)
            if kind is nn.Linear:
                linear -= 1
                grads.append(g.sum(0))  # bias, weight (reversed below)
                grad_weight, g = self._linear_backward(linear, m, g, saved.pop())
                grads.append(grad_weight)
            elif kind is nn.ReLU:
                g = torch.ops.aten.threshold_backward(g, saved.pop(), 0)
            elif kind is nn.Flatten:
                pass  # (the input needs no gradient)
            else:
                drop = saved.pop()
                if drop is not None:
                    keep, scale = drop
                    g = g * scale * keep
        grads.reverse()
        masked = [(grads[2 * i], mask) for i, mask in enumerate(self.masks) if mask is not None]
        if masked:
            torch._foreach_mul_([g for g, _ in masked], [mask for _, mask in masked])
        if self.opt is None:
            self.step_count.add_(1)
            torch._fused_adam_(self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.steps, amsgrad=False,
                               lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=self.cfg.weight_decay, eps=1e-8,
                               maximize=False)
        else:
            for p, grad in zip(self._grad_params, grads, strict=True):
                p.grad = grad
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self._after_step()
        return loss

    def _linear(self, i: int, m: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the input as the backward pass reads it, the output)."""
        return x, torch.addmm(m.bias, x, m.weight.t())

    def _linear_backward(self, i: int, m: nn.Linear, g: torch.Tensor, inp: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the weight's gradient, the input's; the first layer's input needs none: g is passed on unused)."""
        return g.t().mm(inp), g.mm(m.weight) if i > 0 else g

    def _after_step(self) -> None:
        pass

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.opt is not None:
            return dict(self.opt.state.get(param, {}))
        i = next(i for i, p in enumerate(self.params) if p.data_ptr() == param.data_ptr())
        return {"exp_avg": self.exp_avg[i], "exp_avg_sq": self.exp_avg_sq[i], "step": self.steps[i]}


class SparseStep(LeanStep):
    """LeanStep (the same networks, on the CPU) with the layers `trains_sparse` picks on the sparse kernels."""

    @staticmethod
    def supports(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
        return sparse_supported(model, cfg, device)

    def _layer_setup(self, masks: Masks, names: list[str]) -> None:
        self.sparse: dict[int, SparseLinear] = {}
        self._stale = False
        for i, (lin, name) in enumerate(zip(self.linears, names, strict=True)):
            if trains_sparse(masks.get(name), self.cfg, first=i == 0):
                layer = self.sparse[i] = SparseLinear(masks[name], lin.weight)
                self.params[2 * i] = layer.values
                self._grad_params[2 * i] = nn.Parameter(layer.values, requires_grad=False)
                self.masks[i] = None  # (its gradient exists at the mask's positions only)

    def _linear(self, i: int, m: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.sparse.get(i)
        return super()._linear(i, m, x) if layer is None else layer.forward(x, m.bias)

    def _linear_backward(self, i: int, m: nn.Linear, g: torch.Tensor, inp: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.sparse.get(i)
        if layer is None:
            return super()._linear_backward(i, m, g, inp)
        g_t = g.t().contiguous()
        return layer.weight_grad(g_t, inp), layer.input_grad(g_t) if i > 0 else g

    def _after_step(self) -> None:
        self._stale = True  # (the model's weights: written back at `sync`, not after every step)

    def sync(self) -> None:
        if self._stale:
            for i, layer in self.sparse.items():
                layer.write(self.linears[i].weight)
            self._stale = False

    def masks_changed(self, changes: dict[str, Change]) -> None:
        """Each changed sparse layer's structure rebuilt from its mask; its values and optimiser state carried over
        position by position (a survivor keeps its weight, moments and momentum exactly; a grown position starts at
        0 with zero state; a dropped one is gone), so the step trains on as the dense step with masks does."""
        for i in [i for i in self.sparse if self._names[i] in changes]:
            self._rebuild(i)
        self.masks = self._multipliers(skip=self.sparse)  # (a sparse layer's gradient exists at its mask only)

    def _rebuild(self, i: int) -> None:
        old = self.sparse[i]
        new = self.sparse[i] = SparseLinear(self._mask_of[self._names[i]], self.linears[i].weight)
        new.values.copy_(carried(old.values, old, new))  # (the step's own values: the model's may not be synced)
        self.params[2 * i] = new.values
        if self.opt is None:
            self.exp_avg[2 * i] = carried(self.exp_avg[2 * i], old, new)
            self.exp_avg_sq[2 * i] = carried(self.exp_avg_sq[2 * i], old, new)
        else:  # (torch.optim keys its state by the parameter: a new one, its state carried)
            was, now = self._grad_params[2 * i], nn.Parameter(new.values, requires_grad=False)
            self._grad_params[2 * i] = now
            for group in self.opt.param_groups:
                group["params"] = [now if p is was else p for p in group["params"]]
            self.opt.state[now] = {k: carried(v, old, new) if torch.is_tensor(v) and v.shape == old.values.shape
                                   else v for k, v in self.opt.state.pop(was, {}).items()}
        self._stale = True

    def clear_state(self, param: torch.Tensor, positions: torch.Tensor) -> None:
        if self._sparse_layer(param) is None:  # (a sparse layer's: `masks_changed` carries only the survivors')
            super().clear_state(param, positions)

    def _sparse_layer(self, param: torch.Tensor) -> int | None:
        return next((i for i in self.sparse if self.linears[i].weight.data_ptr() == param.data_ptr()), None)

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """As LeanStep's; for a sparse layer's (dense) weight, its values' state scattered to the weight's shape:
        a copy, 0 at the pruned positions."""
        i = self._sparse_layer(param)
        if i is None:
            return super().state(param)
        layer = self.sparse[i]
        state = super().state(self._grad_params[2 * i] if self.opt is not None else layer.values)
        return {k: layer.dense(v) if torch.is_tensor(v) and v.shape == layer.values.shape else v
                for k, v in state.items()}


class CudaGraphStep(Step):
    """On CUDA: the whole step (forward, backward, masked gradients, optimiser) captured once as a CUDA graph.

    Shapes are static (every batch has batch_size examples), so one capture
    serves the whole run: each step copies its batch into the captured input
    and replays the graph, with no per-step Python or kernel-launch overhead.
    The learning rate is a device tensor the captured optimiser reads (Adam
    with capturable=True). Warm-up steps run before the capture, as CUDA
    graphs require; the weights, buffers and optimiser state are put back
    afterwards, so the run starts where it would have. Dropout draws from a
    generator the graph would have to own, so models with dropout keep the
    eager step. On GPUs numbers agree with the eager step to float
    tolerance (another Adam kernel; GPU kernels are not bit-reproducible
    anyway). tests/test_steps_cuda.py runs where CUDA is present; a CPU test
    checks that the solo trainer hands `make_step` its first batch and takes the graph step when `supports` says so.
    """

    WARMUP = 3

    @staticmethod
    def supports(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
        return device.type == "cuda" and not any(isinstance(m, Dropout) and m.p > 0 for m in model.modules())

    def __init__(self, model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device, x: torch.Tensor,
                 y: torch.Tensor):
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.lr = torch.tensor(cfg.lr, device=device)
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=self.lr, weight_decay=cfg.weight_decay, capturable=True,
                                        foreach=True)
        else:
            self.opt = torch.optim.SGD(params, lr=self.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                       weight_decay=cfg.weight_decay, foreach=True)
        masked = list(weights(model, masks).values())
        mask_list = list(masks.values())
        self.x, self.y = x.clone(), y.clone()
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def step() -> torch.Tensor:
            loss = F.cross_entropy(model(self.x), self.y)
            loss.backward()
            if mask_list:
                torch._foreach_mul_([w.grad for w in masked], mask_list)
            self.opt.step()
            return loss.detach()

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self.opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.no_grad():  # back to the start: weights, buffers, and a fresh optimiser state
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
            for state in self.opt.state.values():
                for v in state.values():
                    if torch.is_tensor(v):
                        v.zero_()
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = step()

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        self.x.copy_(xb)
        self.y.copy_(yb)
        self.graph.replay()
        return self.loss.clone()

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.opt.state.get(param, {}))


def carried(t: torch.Tensor, old: SparseLinear, new: SparseLinear) -> torch.Tensor:
    """t, a tensor over `old`'s values, over `new`'s: the positions in both keep their entries, new ones get 0."""
    dense = t.new_zeros(old.numel)
    dense[old.flat] = t
    return dense.index_select(0, new.flat)


def make_step(model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device, lean: bool = True,
              example: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None):
    """The fastest step for this model and device: lean (CPU, LeNet-style; sparse layers with `cfg.kernels`),
    a CUDA graph, or plain autograd.

    `example()` gives a batch of the run's shape, which a CUDA graph is captured with (the solo trainer
    passes its first batch). Masks that change during training (mask_updates.py) train on any of them: each step
    follows the update in `masks_changed` (SparseStep rebuilds its CSR structure there).
    """
    if lean and SparseStep.supports(model, cfg, device):
        return SparseStep(model, masks, cfg, device)
    if lean and LeanStep.supports(model, cfg, device):
        return LeanStep(model, masks, cfg, device)
    if lean and example is not None and CudaGraphStep.supports(model, cfg, device):
        try:
            return CudaGraphStep(model, masks, cfg, device, *example())
        except RuntimeError:  # a capture that fails (an op without graph support): the eager step
            pass
    return AutogradStep(model, masks, cfg, device)
