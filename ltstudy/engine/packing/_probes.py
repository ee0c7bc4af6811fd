"""Exactness probes: a packed layer is used batched only where it gives the unpacked layer's bits."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import PackedConv, PackedLinear, build_layer, module_signature
from ._layouts import convert

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
    layer = build_layer(module, n, device)
    assert isinstance(layer, PackedLinear | PackedConv)
    key = (module_signature(module), n, tuple(in_shape), in_layout, needs_input_grad, batched, str(device),
           torch.get_num_threads())
    if key in _PROBES:
        return _PROBES[key]
    gen = torch.Generator().manual_seed(20190301)
    with torch.no_grad():
        for p in layer.params:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    x = torch.randn(n, *in_shape, generator=gen).to(device)
    with torch.no_grad():
        xin = convert(x, "member", in_layout, n)
        y, layout = layer.forward(xin, in_layout, n, batched, None)
        y = convert(y, layout, "member", n)
        g = torch.randn(y.shape, generator=gen).to(device)
        gx = layer.backward(convert(g, "member", layout, n), needs_input_grad)
        gx = None if gx is None else convert(gx, in_layout, "member", n)
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
