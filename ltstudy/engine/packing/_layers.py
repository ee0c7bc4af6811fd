"""Packed layers: each runs n members' forward and backward with the kernels autograd runs for one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..models.layers import Dropout
from ._layouts import Act, convert

# forward(h, layout, n, batched, gens) -> (output, its layout); backward(g, need_input_grad) -> gradient of
# the input, in the layout the input came in. Parameter gradients land in the stacked `grads` buffers [:n].
# Each layer keeps what its backward needs from the last forward (one forward, one backward per step).


class Layer:
    params: tuple[torch.Tensor, ...] = ()  # stacked (capacity, ...), in module.parameters() order
    grads: tuple[torch.Tensor, ...] = ()  # gradient buffers, same shapes
    batchable = False  # has a batched kernel that a probe must find exact

    def forward(self, h: Act, layout: str, n: int, batched: bool, gens: list | None) -> tuple[Act, str]:
        raise NotImplementedError

    def backward(self, g: Act, need_input_grad: bool) -> Act | None:
        raise NotImplementedError


class Parametric(Layer):
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


class PackedLinear(Parametric):
    def forward(self, h, layout, n, batched, gens):
        x = convert(h, layout, "member", n).contiguous()
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
        return None if gx is None else convert(gx, "member", self.in_layout, n)

    @staticmethod
    def reference(x, w, b):
        return F.linear(x, w, b)


class PackedConv(Parametric):
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
            x = convert(h, layout, "group", n).contiguous()
            self.x = x
            y = F.conv2d(x, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1), self.stride,
                         self.padding, self.dilation, n)
            return y, "group"
        xs = [t.contiguous() for t in convert(h, layout, "list", n)]
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
            return None if gx is None else convert(gx, "group", self.in_layout, n)
        gxs = []
        for i in range(n):
            gx, gw, gb = self._backward(g[i].contiguous(), x[i], w[i], 1, need_input_grad)
            self.grads[0][i].copy_(gw)
            if gb is not None:
                self.grads[1][i].copy_(gb)
            gxs.append(gx)
        return convert(gxs, "list", self.in_layout, n) if need_input_grad else None

    def reference(self, x, w, b):
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation)


class PackedReLU(Layer):
    def forward(self, h, layout, n, batched, gens):
        # In place: no layer keeps its own output (a Linear or conv keeps its input, which this is not).
        self.y = [torch.relu_(t) for t in h] if layout == "list" else torch.relu_(h)
        return self.y, layout

    def backward(self, g, need_input_grad):
        y, self.y = self.y, None
        if isinstance(y, list):
            return [torch.ops.aten.threshold_backward(gi, yi, 0) for gi, yi in zip(g, y, strict=True)]
        return torch.ops.aten.threshold_backward(g, y, 0)


class PackedMaxPool(Layer):
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


class PackedFlatten(Layer):
    def forward(self, h, layout, n, batched, gens):
        self.in_layout, self.n = layout, n
        if layout == "list":
            self.shape = h[0].shape
            return torch.stack([t.reshape(t.shape[0], -1) for t in h]), "member"
        h = convert(h, layout, "member", n)
        self.shape = h.shape[1:]
        return h.reshape(*h.shape[:2], -1), "member"

    def backward(self, g, need_input_grad):
        g = g.reshape(self.n, *self.shape)
        return list(g.unbind(0)) if self.in_layout == "list" else convert(g, "member", self.in_layout, self.n)


class PackedDropout(Layer):
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
        h = convert(h, layout, "member", n)
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
        return convert(g * scale * keep, "member", self.in_layout, self.n)


def build_layer(m: nn.Module, capacity: int, device: torch.device) -> Layer | None:
    if isinstance(m, nn.Linear):
        return PackedLinear(m, capacity, device)
    if isinstance(m, nn.Conv2d):
        return PackedConv(m, capacity, device)
    if isinstance(m, nn.ReLU):
        return PackedReLU()
    if isinstance(m, nn.MaxPool2d):
        return PackedMaxPool(m)
    if isinstance(m, nn.Flatten):
        return PackedFlatten()
    if isinstance(m, Dropout):
        return PackedDropout(m)
    return None  # nn.Identity


def unsupported_module(name: str, m: nn.Module) -> str | None:
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


def module_signature(m: nn.Module) -> tuple:
    sig: tuple = (type(m).__name__, *(tuple(p.shape) for p in m.parameters()))
    if isinstance(m, nn.Conv2d):
        sig += (m.stride, m.padding, m.dilation)
    elif isinstance(m, nn.MaxPool2d):
        sig += (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    elif isinstance(m, nn.Dropout):
        sig += (m.p,)
    return sig
