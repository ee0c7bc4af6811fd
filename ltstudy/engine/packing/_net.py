"""The packed network: stacked parameters, gradients and masks of `capacity` copies, and one pass over them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ._layers import Layer, PackedConv, Parametric, build_layer
from ._layouts import GROUPED_CONV_MAX_BYTES, convert
from ._probes import probe_layer

if TYPE_CHECKING:
    from ..callbacks import Callback


class PackedNet:
    """The stacked parameters, gradients and masks of `capacity` copies of a Sequential, and its passes."""

    def __init__(self, template: nn.Sequential, capacity: int, input_shape: tuple[int, ...], batch: int,
                 device: torch.device, exact: bool, callbacks: Callback):
        self.device, self.exact, self.batch, self.callbacks, self.capacity = device, exact, batch, callbacks, capacity
        self.input_shape = tuple(input_shape)
        self.modules: list[nn.Module] = []
        self.layers: list[Layer] = []
        weights: dict[str, torch.Tensor] = {}
        grads: dict[str, torch.Tensor] = {}
        for name, m in template.named_children():
            layer = build_layer(m, capacity, device)
            if layer is None:
                continue
            self.modules.append(m)
            self.layers.append(layer)
            if isinstance(layer, Parametric):
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
                        in_shape = (self.batch, *convert(x, layout, "member", n).shape[2:])
                        if not (isinstance(layer, PackedConv) and self.device.type == "cpu"
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
            self.callbacks.on_note(f"packing: {label} is not bit-identical to the unpacked layer on this platform even "
                                   "member by member; its numbers agree to float rounding")

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, n: int, gens: list) -> torch.Tensor:
        """One pass over n members: fills the gradient buffers [:n]; returns each member's loss (n,)."""
        plan = self.plan(n)
        h, layout = x, "member"
        for layer, batched in zip(self.layers, plan, strict=True):
            h, layout = layer.forward(h, layout, n, batched, gens)
        logits = convert(h, layout, "member", n)
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
