"""Trial packing: many ticket searches trained side by side as one network with stacked weights.

`PackedTrainer` holds `capacity` slots of one architecture on one device.
Each slot is a member: one `RoundJob` with its own weights, masks, optimiser
state, learning-rate schedule, data order, augmentations, dropout stream,
evaluation points, early-stop and patience bookkeeping. `step()` advances
every member by one iteration: one forward and one backward pass over all
members (Linear layers as batched matmuls, Conv2d as one grouped
convolution where that is exact and fits the cache, member by member
otherwise), the masks applied to all members at once, and one fused
optimiser call per group of members that share hyperparameters. A member
that reaches its end (or is stopped by patience, or diverges) leaves with the
`TrainResult` (or `DivergedError`) `training.train` gives it alone, its final
state copied back into `job.model`.

`drive_packed` runs an iterator of job generators (searches, or the study
layer's trials) through such packs, taking the next generator whenever one
finishes; `search_source` turns a search into such a generator and
`run_packed` is the convenience for a list of searches.

Numbers: bit-identical to the solo run, by construction and by check.

- The backward pass is written out (no autograd) with the very kernels
  autograd runs for the unpacked model: `addmm`'s backward (weight gradient
  gᵀx, input gradient gW, bias gradient Σ over the batch),
  `convolution_backward`, `max_pool2d_with_indices_backward`,
  `threshold_backward` for ReLU, dropout's two multiplies in autograd's order,
  `nll_loss_backward` and `_log_softmax_backward_data` on the members' rows.
- The optimiser is torch's own fused Adam / SGD kernel (what
  `training.make_optimizer` builds) on each member's slices, with each
  member's lr, weight decay, momentum and step count; state starts at 0 for
  every job, as a fresh optimiser does. Masks multiply the gradients before
  the step, as `train` does; a pruned weight that starts at 0 then stays
  exactly ±0 (zero gradient, zero moments or momentum, zero weight decay
  term: a zero update), so `train`'s multiply of the weights after the step
  changes no bit and is done only for a member whose start state has
  non-zero pruned weights.
- The batched kernels (bmm/baddbmm, grouped convolution) are *checked*: the
  first time a layer runs with n members, a probe runs its batched forward
  and backward on random data and compares output, input, weight and bias
  gradients bit for bit with `F.linear` / `F.conv2d` run member by member
  under autograd. Kernels pick algorithms from shapes, layouts and threads,
  never from values, so a probe answers for every step with those. A layer
  that is not exact batched runs member by member (still inside the one
  packed step), with the same kernels as the unpacked layer.
- Evaluations run on `job.model` itself, holding the member's weights.

On this CPU (torch 2.14, MKL, oneDNN, AVX-512) every Linear layer of the
packable models batches exactly, and so does every convolution reading 64 or
more channels; one reading few channels (conv1 on 1- or 3-channel images,
lenet-5's 6->16) is not exact grouped and runs member by member. On a CPU a
grouped convolution is also skipped when the members' stacked output would
exceed `GROUPED_CONV_MAX_BYTES` (16 MiB): past the caches it is slower than
member by member. `exact=False` skips the probes and batches whatever may
be batched: numbers then agree to float rounding at first (~1e-7 relative
per step), which training can amplify.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.optim.adam import adam as adam_update
from torch.optim.sgd import sgd as sgd_update

from .data import Batches, Dataset, augment_batch
from .models import Dropout, set_dropout_generator
from .pruning import apply_masks
from .ticket import ProgressCallback, RoundJob, RoundResult, TicketResult, train_job
from .ticket import search_jobs as search_source  # (the name this module's callers know)
from .training import DivergedError, TrainResult, clone_state, evaluate, lr_at

NoteCallback = Callable[[str], None]
JobSource = Generator[Any, Any, Any]  # yields RoundJobs, receives TrainResults, returns its result

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as make_optimizer uses them
# train() evaluates the start state's validation accuracy where TrainResult records it.
_START_VAL = "start_val_accuracy" in {f.name for f in dataclasses.fields(TrainResult)}

# --------------------------------------------------------------------------- layouts
#
# Activations of n members live in one of three layouts:
#   "member": one tensor (n, B, ...) — member i's batch is the contiguous slice [i] (batched matmuls);
#   "group":  one tensor (B, n*C, H, W) — member i's channels are [i*C:(i+1)*C] (a grouped convolution);
#   "list":   n tensors (B, ...) — layers run member by member on tensors of the unpacked model's size.

Act = torch.Tensor | list[torch.Tensor]


def _convert(h: Act, src: str, dst: str, n: int) -> Act:
    """Activations (or their gradients) of n members from layout `src` to layout `dst`."""
    if src == dst:
        return h
    if dst == "list":
        if src == "member":
            return list(h.unbind(0))
        c = h.shape[1] // n
        return [h[:, i * c:(i + 1) * c].contiguous() for i in range(n)]
    if src == "list":
        return torch.stack(h) if dst == "member" else torch.cat(h, 1)
    if dst == "group":
        return h.transpose(0, 1).reshape(h.shape[1], n * h.shape[2], *h.shape[3:])
    b, nc = h.shape[:2]
    return h.view(b, n, nc // n, *h.shape[2:]).transpose(0, 1).contiguous()


# Grouped convolutions stack all members' activations into one tensor; beyond this size a CPU's caches
# lose more than the one kernel call gains (conv-2 on 28x28, 4 members: 25% slower than member by member).
GROUPED_CONV_MAX_BYTES = 16 << 20


# --------------------------------------------------------------------------- packed layers
#
# forward(h, layout, n, batched, gens) -> (output, its layout); backward(g, need_input_grad) -> gradient of
# the input, in the layout the input came in. Parameter gradients land in the stacked `grads` buffers [:n].
# Each layer keeps what its backward needs from the last forward (one forward, one backward per step).


class _Layer:
    params: tuple[torch.Tensor, ...] = ()  # stacked (capacity, ...), in module.parameters() order
    grads: tuple[torch.Tensor, ...] = ()  # gradient buffers, same shapes
    batchable = False  # has a batched kernel that a probe must find exact

    def forward(self, h: Act, layout: str, n: int, batched: bool, gens: list | None) -> tuple[Act, str]:
        raise NotImplementedError

    def backward(self, g: Act, need_input_grad: bool) -> Act | None:
        raise NotImplementedError


class _Parametric(_Layer):
    batchable = True

    def __init__(self, m: nn.Linear | nn.Conv2d, capacity: int, device: torch.device):
        # Uninitialised: a slot's parameters are copied in when a job enters it, and the gradients of the
        # active slots are written in full by every backward pass before they are read.
        self.weight = torch.empty(capacity, *m.weight.shape, device=device)
        self.bias = None if m.bias is None else torch.empty(capacity, *m.bias.shape, device=device)
        self.params = (self.weight,) if self.bias is None else (self.weight, self.bias)
        self.grads = tuple(torch.empty_like(p) for p in self.params)
        self._views: dict[int, tuple] = {}

    def views(self, n: int) -> tuple:
        """(weight, bias, weight gradient, bias gradient) of slots 0..n-1, made once per n."""
        if n not in self._views:
            bias = None if self.bias is None else self.bias[:n]
            gbias = None if self.bias is None else self.grads[1][:n]
            self._views[n] = (self.weight[:n], bias, self.grads[0][:n], gbias)
        return self._views[n]


class _Linear(_Parametric):
    def forward(self, h, layout, n, batched, gens):
        x = _convert(h, layout, "member", n).contiguous()
        self.x, self.n, self.batched, self.in_layout = x, n, batched, layout
        w, b, _, _ = self.views(n)
        if batched:
            wt = w.transpose(1, 2)
            return (torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)), "member"
        return torch.stack([F.linear(x[i], w[i], None if b is None else b[i]) for i in range(n)]), "member"

    def backward(self, g, need_input_grad):
        # addmm(b, x, Wᵀ)'s backward: dW = gᵀ·x (computed in that layout), dx = g·W, db = Σ_batch g.
        x, n, g = self.x, self.n, g.contiguous()
        self.x = None
        w, _, gw, gb = self.views(n)
        if self.batched:
            torch.bmm(g.transpose(1, 2), x, out=gw)
            if gb is not None:
                torch.sum(g, 1, out=gb)
            gx = torch.bmm(g, w) if need_input_grad else None
        else:
            for i in range(n):
                torch.mm(g[i].t(), x[i], out=self.grads[0][i])
                if self.bias is not None:
                    torch.sum(g[i], 0, out=self.grads[1][i])
            gx = torch.stack([g[i].mm(w[i]) for i in range(n)]) if need_input_grad else None
        return None if gx is None else _convert(gx, "member", self.in_layout, n)

    @staticmethod
    def reference(x, w, b):
        return F.linear(x, w, b)


class _Conv(_Parametric):
    def __init__(self, m: nn.Conv2d, capacity: int, device: torch.device):
        super().__init__(m, capacity, device)
        self.stride, self.padding, self.dilation = list(m.stride), list(m.padding), list(m.dilation)
        self.kernel = list(m.kernel_size)

    def out_bytes(self, n: int, in_shape: tuple[int, ...]) -> int:
        """Bytes of the stacked output of n members for one member's input shape (B, C, H, W)."""
        hw = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
              zip(in_shape[2:], self.padding, self.dilation, self.kernel, self.stride, strict=True)]
        return 4 * n * in_shape[0] * self.weight.shape[1] * hw[0] * hw[1]

    def forward(self, h, layout, n, batched, gens):
        self.n, self.batched, self.in_layout = n, batched, layout
        w, b = self.weight[:n], None if self.bias is None else self.bias[:n]
        if batched:  # one grouped convolution over the members' stacked channels
            x = _convert(h, layout, "group", n).contiguous()
            self.x = x
            y = F.conv2d(x, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1), self.stride,
                         self.padding, self.dilation, n)
            return y, "group"
        xs = [t.contiguous() for t in _convert(h, layout, "list", n)]
        self.x = xs
        return [self.reference(xs[i], w[i], None if b is None else b[i]) for i in range(n)], "list"

    def _backward(self, g, x, w, groups, need_input_grad):
        bias = None if self.bias is None else [w.shape[0]]
        return torch.ops.aten.convolution_backward(g, x, w, bias, self.stride, self.padding, self.dilation, False,
                                                   [0, 0], groups, [need_input_grad, True, self.bias is not None])

    def backward(self, g, need_input_grad):
        x, n = self.x, self.n
        self.x = None
        w = self.weight[:n]
        if self.batched:
            gx, gw, gb = self._backward(g.contiguous(), x, w.reshape(-1, *w.shape[2:]), n, need_input_grad)
            self.grads[0][:n].copy_(gw.view_as(w))
            if gb is not None:
                self.grads[1][:n].copy_(gb.view(n, -1))
            return None if gx is None else _convert(gx, "group", self.in_layout, n)
        gxs = []
        for i in range(n):
            gx, gw, gb = self._backward(g[i].contiguous(), x[i], w[i], 1, need_input_grad)
            self.grads[0][i].copy_(gw)
            if gb is not None:
                self.grads[1][i].copy_(gb)
            gxs.append(gx)
        return _convert(gxs, "list", self.in_layout, n) if need_input_grad else None

    def reference(self, x, w, b):
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation)


class _ReLU(_Layer):
    def forward(self, h, layout, n, batched, gens):
        # In place: no layer keeps its own output (a Linear or conv keeps its input, which this is not).
        self.y = [torch.relu_(t) for t in h] if layout == "list" else torch.relu_(h)
        return self.y, layout

    def backward(self, g, need_input_grad):
        y, self.y = self.y, None
        if isinstance(y, list):
            return [torch.ops.aten.threshold_backward(gi, yi, 0) for gi, yi in zip(g, y, strict=True)]
        return torch.ops.aten.threshold_backward(g, y, 0)


class _MaxPool(_Layer):
    def __init__(self, m: nn.MaxPool2d):
        self.args = (_pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size),
                     _pair(m.padding), _pair(m.dilation), m.ceil_mode)

    def _pool(self, x):
        return torch.ops.aten.max_pool2d_with_indices(x, *self.args)

    def _unpool(self, g, x, indices):
        return torch.ops.aten.max_pool2d_with_indices_backward(g.contiguous(), x, *self.args, indices)

    def forward(self, h, layout, n, batched, gens):
        self.layout = layout
        if layout == "list":
            out = [self._pool(t) for t in h]
            self.x, self.indices = h, [i for _, i in out]
            return [y for y, _ in out], layout
        x = h if layout == "group" else h.flatten(0, 1)  # 4-D either way; every channel plane pools alike
        y, self.indices = self._pool(x)
        self.x, self.shape = x, h.shape
        return (y if layout == "group" else y.view(*h.shape[:2], *y.shape[1:])), layout

    def backward(self, g, need_input_grad):
        x, indices = self.x, self.indices
        self.x = self.indices = None
        if self.layout == "list":
            return [self._unpool(gi, xi, ii) for gi, xi, ii in zip(g, x, indices, strict=True)]
        g = g.flatten(0, 1) if self.layout == "member" else g
        return self._unpool(g, x, indices).view(self.shape)


class _Flatten(_Layer):
    def forward(self, h, layout, n, batched, gens):
        self.in_layout, self.n = layout, n
        if layout == "list":
            self.shape = h[0].shape
            return torch.stack([t.reshape(t.shape[0], -1) for t in h]), "member"
        h = _convert(h, layout, "member", n)
        self.shape = h.shape[1:]
        return h.reshape(*h.shape[:2], -1), "member"

    def backward(self, g, need_input_grad):
        g = g.reshape(self.n, *self.shape)
        return list(g.unbind(0)) if self.in_layout == "list" else _convert(g, "member", self.in_layout, self.n)


class _Dropout(_Layer):
    """Each member's mask drawn from its own generator, in the shape and order the unpacked model draws it."""

    def __init__(self, m: Dropout):
        self.p = m.p
        self.keep: list[torch.Tensor] | torch.Tensor | None = None

    def forward(self, h, layout, n, batched, gens):
        if self.p == 0.0 or gens is None:  # (gens None: shape inference while planning)
            self.keep = None
            return h, layout
        scale = 1.0 / (1.0 - self.p)
        if layout == "list":
            self.keep = [torch.empty_like(t).bernoulli_(1.0 - self.p, generator=gen) for t, gen in zip(h, gens)]
            return [t * k * scale for t, k in zip(h, self.keep, strict=True)], layout
        self.in_layout, self.n = layout, n
        h = _convert(h, layout, "member", n)
        keep = torch.empty_like(h)
        for i, gen in enumerate(gens):
            keep[i].bernoulli_(1.0 - self.p, generator=gen)
        self.keep = keep
        return h * keep * scale, "member"

    def backward(self, g, need_input_grad):
        if self.keep is None:
            return g
        keep, self.keep = self.keep, None
        scale = 1.0 / (1.0 - self.p)
        if isinstance(keep, list):  # autograd's order: (g * scale) * keep
            return [gi * scale * k for gi, k in zip(g, keep, strict=True)]
        return _convert(g * scale * keep, "member", self.in_layout, self.n)


def _build_layer(m: nn.Module, capacity: int, device: torch.device) -> _Layer | None:
    if isinstance(m, nn.Linear):
        return _Linear(m, capacity, device)
    if isinstance(m, nn.Conv2d):
        return _Conv(m, capacity, device)
    if isinstance(m, nn.ReLU):
        return _ReLU()
    if isinstance(m, nn.MaxPool2d):
        return _MaxPool(m)
    if isinstance(m, nn.Flatten):
        return _Flatten()
    if isinstance(m, Dropout):
        return _Dropout(m)
    return None  # nn.Identity


def _unsupported_module(name: str, m: nn.Module) -> str | None:
    if isinstance(m, nn.Linear | nn.ReLU | nn.Identity):
        return None
    if isinstance(m, nn.Flatten):
        return None if (m.start_dim, m.end_dim) == (1, -1) else f"{name}: Flatten({m.start_dim}, {m.end_dim})"
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            return f"{name}: Conv2d(groups={m.groups}, padding_mode={m.padding_mode}, padding={m.padding!r})"
        return None
    if isinstance(m, nn.MaxPool2d):
        return f"{name}: MaxPool2d(return_indices=True)" if m.return_indices else None
    if isinstance(m, Dropout):
        return None
    return f"{name}: {type(m).__name__}"


def _signature(m: nn.Module) -> tuple:
    sig: tuple = (type(m).__name__, *(tuple(p.shape) for p in m.parameters()))
    if isinstance(m, nn.Conv2d):
        sig += (m.stride, m.padding, m.dilation)
    elif isinstance(m, nn.MaxPool2d):
        sig += (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    elif isinstance(m, nn.Dropout):
        sig += (m.p,)
    return sig


# --------------------------------------------------------------------------- exactness probes

_PROBES: dict[tuple, bool] = {}


def probe_layer(module: nn.Linear | nn.Conv2d, n: int, in_shape: tuple[int, ...], in_layout: str,
                needs_input_grad: bool, batched: bool, device: torch.device | str = "cpu") -> bool:
    """Is the packed layer (batched, or member by member) bit-identical to `module` run alone, for n members?

    Runs the packed forward and backward on random inputs (`in_shape` is one
    member's input, handed over in `in_layout`) and compares the output and
    the input, weight and bias gradients with F.linear / F.conv2d under
    autograd, member by member. Kernels choose their algorithm from shapes,
    strides, the thread count and perhaps alignment, never from values; the
    probe's stacks have a pack's strides and slot offsets. The answer is cached.
    """
    device = torch.device(device)
    layer = _build_layer(module, n, device)
    assert isinstance(layer, _Linear | _Conv)
    key = (_signature(module), n, tuple(in_shape), in_layout, needs_input_grad, batched, str(device),
           torch.get_num_threads())
    if key in _PROBES:
        return _PROBES[key]
    gen = torch.Generator().manual_seed(20190301)
    with torch.no_grad():
        for p in layer.params:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    x = torch.randn(n, *in_shape, generator=gen).to(device)
    with torch.no_grad():
        xin = _convert(x, "member", in_layout, n)
        y, layout = layer.forward(xin, in_layout, n, batched, None)
        y = _convert(y, layout, "member", n)
        g = torch.randn(y.shape, generator=gen).to(device)
        gx = layer.backward(_convert(g, "member", layout, n), needs_input_grad)
        gx = None if gx is None else _convert(gx, in_layout, "member", n)
    ok = True
    for i in range(n):
        with torch.enable_grad():
            xi = x[i].clone().requires_grad_(needs_input_grad)
            ps = [p[i].clone().requires_grad_() for p in layer.params]
            yi = layer.reference(xi, ps[0], ps[1] if len(ps) > 1 else None)
            ref = torch.autograd.grad(yi, ([xi] if needs_input_grad else []) + ps, g[i])
        got = ([gx[i]] if needs_input_grad else []) + [gr[i] for gr in layer.grads]
        ok = ok and torch.equal(yi.detach(), y[i]) and all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))
    _PROBES[key] = ok
    return ok


# --------------------------------------------------------------------------- the packed network


class _PackedNet:
    """The stacked parameters, gradients and masks of `capacity` copies of a Sequential, and its passes."""

    def __init__(self, template: nn.Sequential, capacity: int, input_shape: tuple[int, ...], batch: int,
                 device: torch.device, exact: bool, note: NoteCallback | None):
        self.device, self.exact, self.batch, self.note, self.capacity = device, exact, batch, note, capacity
        self.input_shape = tuple(input_shape)
        self.modules: list[nn.Module] = []
        self.layers: list[_Layer] = []
        weights: dict[str, torch.Tensor] = {}
        grads: dict[str, torch.Tensor] = {}
        for name, m in template.named_children():
            layer = _build_layer(m, capacity, device)
            if layer is None:
                continue
            self.modules.append(m)
            self.layers.append(layer)
            if isinstance(layer, _Parametric):
                weights[name], grads[name] = layer.weight, layer.grads[0]
        self.params = [p for layer in self.layers for p in layer.params]
        self.grads = [g for layer in self.layers for g in layer.grads]
        self.param_names = [name for name, _ in template.named_parameters()]  # the order of self.params
        self.names = list(weights)
        self.weights, self.weight_grads = list(weights.values()), list(grads.values())
        self.masks = [torch.empty_like(w) for w in self.weights]  # stacked per layer; a slot's set when a job enters
        self.first = next(i for i, layer in enumerate(self.layers) if layer.params)  # no backward below it
        # Per-slot views, made once: what the optimiser and the copies in and out work on.
        self.slot_params = [[p[s] for p in self.params] for s in range(capacity)]
        self.slot_grads = [[g[s] for g in self.grads] for s in range(capacity)]
        self._plans: dict[tuple[int, int], list[bool]] = {}
        self._spans: dict[tuple[int, int], tuple[list, ...]] = {}
        self._nll: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.inexact: set[str] = set()

    def span(self, a: int, b: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Views of slots a..b-1: (weights, weight gradients, masks)."""
        if (a, b) not in self._spans:
            self._spans[a, b] = ([w[a:b] for w in self.weights], [g[a:b] for g in self.weight_grads],
                                 [m[a:b] for m in self.masks])
        return self._spans[a, b]

    def plan(self, n: int) -> list[bool]:
        """Per layer: batched (True) or member by member, for n members; probed once per n (and thread count)."""
        key = (n, torch.get_num_threads())
        if key not in self._plans:
            plan: list[bool] = []
            # Shapes from one example per member; the probes then run at the real batch size.
            x, layout, needs_grad = torch.zeros(n, 1, *self.input_shape, device=self.device), "member", False
            with torch.no_grad():
                for m, layer in zip(self.modules, self.layers, strict=True):
                    batched = False
                    if layer.batchable:
                        in_shape = (self.batch, *_convert(x, layout, "member", n).shape[2:])
                        if not (isinstance(layer, _Conv) and self.device.type == "cpu"
                                and layer.out_bytes(n, in_shape) > GROUPED_CONV_MAX_BYTES):
                            batched = not self.exact or probe_layer(m, n, in_shape, layout, needs_grad, True,
                                                                    self.device)
                        # Member by member, a member's kernels do not depend on n (only, perhaps, on where its
                        # slices sit in memory): probed once, over every slot.
                        if not batched and self.exact and not probe_layer(m, self.capacity, in_shape, layout,
                                                                          needs_grad, False, self.device):
                            self._inexact(m)
                    plan.append(batched)
                    x, layout = layer.forward(x, layout, n, batched, None)
                    needs_grad |= bool(layer.params)
            for layer in self.layers:  # drop what the shape pass left behind
                for attr in ("x", "y", "indices", "keep"):
                    if hasattr(layer, attr):
                        setattr(layer, attr, None)
            self._plans[key] = plan
        return self._plans[key]

    def _inexact(self, m: nn.Module) -> None:
        label = f"{type(m).__name__}{tuple(m.weight.shape)}"
        if label not in self.inexact:
            self.inexact.add(label)
            if self.note is not None:
                self.note(f"packing: {label} is not bit-identical to the unpacked layer on this platform even member "
                          "by member; its numbers agree to float rounding")

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, n: int, gens: list) -> torch.Tensor:
        """One pass over n members: fills the gradient buffers [:n]; returns each member's loss (n,)."""
        plan = self.plan(n)
        h, layout = x, "member"
        for layer, batched in zip(self.layers, plan, strict=True):
            h, layout = layer.forward(h, layout, n, batched, gens)
        logits = _convert(h, layout, "member", n)
        b, classes = logits.shape[1], logits.shape[2]
        logp = torch.log_softmax(logits.view(n * b, classes), 1)
        # Each member's mean cross-entropy: its loss value reduced exactly as F.cross_entropy reduces it ...
        lp, yv = logp.view(n, b, classes), y.view(n, b)
        losses = torch.stack([torch._C._nn.nll_loss(lp[i], yv[i], None, 1, -100) for i in range(n)])
        # ... and its gradient as nll_loss's backward writes it: -1/B (in float32) at each example's target.
        scale, unused_total = self._nll_grad(n, b)
        g = torch.ops.aten.nll_loss_backward(scale, logp, y, None, 0, -100, unused_total)
        g = torch._log_softmax_backward_data(g, logp, 1, logp.dtype).view(n, b, classes)
        for i in range(len(self.layers) - 1, self.first - 1, -1):
            g = self.layers[i].backward(g, i > self.first)
        return losses

    def _nll_grad(self, n: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """nll_loss_backward's grad_output for n members' mean losses: 1/B in float32 per example, as mean does."""
        if (n, b) not in self._nll:
            self._nll[n, b] = (torch.ones(n * b, device=self.device).div_(b), torch.ones((), device=self.device))
        return self._nll[n, b]


# --------------------------------------------------------------------------- members and the trainer


@dataclass
class _Member:
    job: RoundJob
    token: Any
    slot: int
    it: int  # the next iteration to train
    batches: Batches
    dropout: torch.Generator | None
    aug: torch.Generator | None
    result: TrainResult
    t0: float
    params: list[torch.Tensor]  # job.model's parameters, in the pack's order
    opt: dict[str, list] = field(default_factory=dict)  # optimiser state per parameter, as torch.optim keeps it
    steps: int = 0
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    since_best: int = 0
    window_n: int = 0
    synced: bool = True  # job.model holds the slot's current weights
    left: bool = False  # finished; the slot is freed at the end of the step

    def lr(self) -> float:
        job = self.job
        return job.constant_lr if job.constant_lr is not None else lr_at(self.it, job.train, job.sched)


def _job_key(job: RoundJob, data: Dataset) -> tuple:
    """What members of one pack share: layers and their shapes, input shape, batch size, optimiser type."""
    return (tuple(_signature(m) for m in job.model.children()), tuple(data.input_shape),
            min(job.train.batch_size, len(data.train)), job.train.optimizer)


class PackedTrainer:
    """`capacity` training slots on the data's device; members share architecture, batch size and optimiser type.

    `add(job, token)` puts a job into a free slot; `step()` trains every member
    one iteration and returns the (token, TrainResult | DivergedError) of those
    that ended. The architecture is that of the first job added; an empty pack
    takes the next job's.
    """

    def __init__(self, data: Dataset, capacity: int, *, exact: bool = True, progress: ProgressCallback | None = None,
                 on_note: NoteCallback | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.data, self.capacity, self.exact, self.progress, self.on_note = data, capacity, exact, progress, on_note
        self.device = data.train.x.device
        self.key: tuple | None = None
        self.net: _PackedNet | None = None
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
        if not isinstance(model, nn.Sequential):
            return f"{label} is not an nn.Sequential of Linear/Conv2d/ReLU/MaxPool2d/Flatten/Dropout layers"
        for name, m in model.named_children():
            reason = _unsupported_module(name, m)
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
        if self.members and _job_key(job, self.data) != self.key:
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
        key = _job_key(job, self.data)
        if key != self.key:  # an empty pack takes the new architecture
            self.key, self.net = key, None
            self.net = _PackedNet(job.model, self.capacity, self.data.input_shape, key[2], self.device, self.exact,
                                  self.on_note)
        net = self.net
        assert net is not None
        t0 = time.perf_counter()
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
        res = TrainResult(job.start, job.end, math.nan, math.nan, math.nan, job.start, math.nan, math.nan, 0.0)
        if _START_VAL:
            res.start_val_accuracy = evaluate(model, self.data.val, cfg.eval_batch_size).accuracy
        res.start_test_accuracy = evaluate(model, self.data.test, cfg.eval_batch_size).accuracy
        if job.capture_at is not None and job.capture_at == job.start:
            res.snapshot = clone_state(model)
        dropout = None if job.dropout_seed is None else torch.Generator(self.device).manual_seed(job.dropout_seed)
        member = _Member(job, token, slot, job.start,
                         Batches(len(self.data.train), cfg.batch_size, job.data_seed, self.device), dropout,
                         torch.Generator() if self.data.augment else None, res, t0, params)
        member.opt = self._fresh_state(net.slot_params[slot], cfg.optimizer)
        self.members.append(member)
        if job.start >= job.end:  # nothing to train: train() goes straight to its epilogue
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
                                          m.aug.manual_seed(m.job.data_seed * 7919 + m.it))
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

    # ------------------------------------------------------------------ per member: the tail of train()'s loop

    def _sync(self, m: _Member) -> None:
        """Copy the slot's weights into job.model (for evaluations, snapshots and the final state)."""
        if not m.synced:
            assert self.net is not None
            with torch.no_grad():
                torch._foreach_copy_(m.params, self.net.slot_params[m.slot])
            m.synced = True

    def _after_iteration(self, m: _Member) -> None:
        job, cfg, res = m.job, m.job.train, m.result
        m.it += 1
        m.window_n += 1
        m.synced = False
        done = m.it
        if job.capture_at is not None and done == job.capture_at:
            self._sync(m)
            res.snapshot = clone_state(job.model)
        if done % job.sched.eval_every == 0 or done == job.end:
            res.train_loss = self._window[m.slot].item() / m.window_n
            if not math.isfinite(res.train_loss):
                self._end(m, DivergedError(f"training loss became {res.train_loss} at iteration {done}; lower the "
                                           "learning rate", done))
                return
            self._window[m.slot].zero_()
            m.window_n = 0
            self._sync(m)
            val = evaluate(job.model, self.data.val, cfg.eval_batch_size)
            if val.loss < m.best_loss:
                m.best_loss, m.since_best = val.loss, 0
                res.val_loss, res.val_accuracy, res.early_stop_iteration = val.loss, val.accuracy, done
                m.best_state = None if done == job.end else clone_state(job.model)
            else:
                m.since_best += 1
            if self.progress is not None:
                self.progress(job, done - job.start, job.end - job.start)
            if cfg.patience and m.since_best >= cfg.patience and done < job.end:
                res.end, res.stopped_early = done, True
                self._finish(m)
                return
        if done >= job.end:
            self._finish(m)

    def _finish(self, m: _Member) -> None:
        """train()'s epilogue: validation if never evaluated, the test accuracies; the final state in job.model."""
        self._sync(m)
        cfg, res, model = m.job.train, m.result, m.job.model
        if m.best_loss == math.inf:
            val = evaluate(model, self.data.val, cfg.eval_batch_size)
            if not math.isfinite(val.loss):
                self._end(m, DivergedError(f"validation loss is {val.loss} at iteration {res.end}", res.end))
                return
            res.val_loss, res.val_accuracy, res.early_stop_iteration = val.loss, val.accuracy, res.end
        res.test_accuracy = evaluate(model, self.data.test, cfg.eval_batch_size).accuracy
        res.test_accuracy_at_early_stop = res.test_accuracy if m.best_state is None else \
            evaluate(model, self.data.test, cfg.eval_batch_size, state=m.best_state).accuracy
        set_dropout_generator(model, None)
        res.wall_seconds = time.perf_counter() - m.t0
        self._end(m, res)

    def _end(self, m: _Member, outcome: TrainResult | DivergedError) -> None:
        self._sync(m)
        m.left, m.best_state, m.opt = True, None, {}
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


# --------------------------------------------------------------------------- drivers


def drive_packed(sources: Iterable[JobSource], data: Dataset, capacity: int, on_note: NoteCallback | None = None,
                 progress: ProgressCallback | None = None, *, return_exceptions: bool = False, exact: bool = True,
                 width: int | None = None, block: int = 1) -> list[Any]:
    """Run job generators `capacity` at a time in packs; returns their return values in the order pulled.

    A generator yields RoundJobs and receives each job's TrainResult (or has
    the DivergedError thrown in at its yield); anything else it yields is
    answered with None. Whenever a generator finishes, the next one is pulled
    from `sources`. Jobs without a packed form are trained unpacked with
    `train_job` at once (each reason reported once through `on_note`). An
    exception escaping a generator ends the run (the others are closed) and
    propagates, unless `return_exceptions`: then it is that generator's result.

    Jobs of one architecture share packs of at most `width` members (default:
    `capacity`, one pack); each pack takes `block` steps before the next one
    steps. On a CPU, narrow packs stepped in blocks keep each pack's state in
    cache (LeNet-300-100, 16 slots: 4 packs of 4 in blocks of 8 steps against
    one pack of 16: -2% to +10% in our runs); conv nets on large images gain
    nothing from width on a CPU (see benchmarks/README.md). Numbers depend on
    neither.
    """
    if capacity < 1 or block < 1 or (width is not None and width < 1):
        raise ValueError(f"capacity, width and block must be >= 1, got {capacity}, {width}, {block}")
    width = capacity if width is None else min(width, capacity)
    pending: Iterator[JobSource] = iter(sources)
    results: list[Any] = []
    live: dict[int, JobSource] = {}
    packs: dict[tuple, list[PackedTrainer]] = {}  # per architecture, packs of up to `width` members
    noted: set[str] = set()
    exhausted = False

    def note(reason: str) -> None:
        if reason not in noted:
            noted.add(reason)
            if on_note is not None:
                on_note(reason)

    def advance(index: int, reply: Any = None, thrown: BaseException | None = None) -> None:
        """Run generator `index` until its next packable job is in a pack, or it ends."""
        gen = live[index]
        while True:
            try:
                event = gen.throw(thrown) if thrown is not None else gen.send(reply)
            except StopIteration as done:
                results[index] = done.value
                del live[index]
                return
            except Exception as exc:
                del live[index]
                if not return_exceptions:
                    raise
                results[index] = exc
                return
            reply, thrown = None, None
            if not isinstance(event, RoundJob):
                continue
            reason = PackedTrainer.supports(event)
            if reason is not None:
                note(f"{reason}; trained unpacked")
                try:
                    reply = train_job(event, data, progress)
                except DivergedError as exc:
                    thrown = exc
                continue
            lanes = packs.setdefault(_job_key(event, data), [])
            pack = next((p for p in lanes if p.free), None)
            if pack is None:
                pack = PackedTrainer(data, width, exact=exact, progress=progress, on_note=note)
                lanes.append(pack)
            pack.add(event, index)
            return

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(live) < capacity:
            try:
                gen = next(pending)
            except StopIteration:
                exhausted = True
                return
            results.append(None)
            live[len(results) - 1] = gen
            advance(len(results) - 1)

    try:
        fill()
        while live:
            for pack in [p for lanes in packs.values() for p in lanes]:
                for _ in range(block):
                    if not pack.busy:
                        break
                    for token, outcome in pack.step():
                        if isinstance(outcome, DivergedError):
                            advance(token, thrown=outcome)
                        else:
                            advance(token, reply=outcome)
                fill()
            for key, lanes in list(packs.items()):  # let go of emptied packs (their stacked tensors)
                packs[key] = [p for p in lanes if p.busy]
                if not packs[key]:
                    del packs[key]
    finally:
        for gen in live.values():
            gen.close()
    return results


def run_packed(searches: Iterable[Any], capacity: int, on_round: Callable[[int, RoundResult], None] | None = None,
               on_note: NoteCallback | None = None, progress: ProgressCallback | None = None, *,
               return_exceptions: bool = False, exact: bool = True, width: int | None = None,
               block: int = 1) -> list[TicketResult | BaseException]:
    """Run searches packed `capacity` at a time; their TicketResults in the given order.

    `on_round(i, record)` sees search i's finished rounds (raising StopSearch
    ends that search). Searches on different Dataset objects run in separate
    packs, one data set after another.
    """
    searches = list(searches)
    results: list[Any] = [None] * len(searches)
    by_data: dict[int, list[int]] = {}
    for i, s in enumerate(searches):
        by_data.setdefault(id(s.data), []).append(i)

    def source(i: int) -> JobSource:
        callback = None if on_round is None else (lambda rec, i=i: on_round(i, rec))
        return search_source(searches[i], callback)

    for indices in by_data.values():
        out = drive_packed((source(i) for i in indices), searches[indices[0]].data, capacity, on_note, progress,
                           return_exceptions=return_exceptions, exact=exact, width=width, block=block)
        for i, value in zip(indices, out, strict=True):
            results[i] = value
    return results


__all__ = ["PackedTrainer", "drive_packed", "probe_layer", "run_packed", "search_source"]
