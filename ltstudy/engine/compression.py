"""Compression and theoretical speedup of a round, with ShrinkBench's definitions (Blalock et al., MLSys 2020).

- compression ratio: prunable weights over the remaining ones (1 / density), and
  over all parameters beside it: every parameter of the model (biases, batch
  norm and unpruned layers included) over the non-zero ones;
- FLOPs: multiply-adds per example of the Conv2d and Linear layers, a
  convolution counted by its output size (weights x output positions, which is
  what a direct convolution computes: ShrinkBench derives the output size from
  the padding mode instead, which miscounts a conv without padding); the
  non-zero FLOPs scale each layer's by its density, exact because every weight
  of a layer is used equally often;
- theoretical speedup: dense FLOPs over non-zero FLOPs.

The numbers follow from the architecture and the per-layer densities alone, so
a cached round gets them too: `Compression` is the registered round metric
(metrics.py) that adds them to every round. Masked weights are counted as zeros, not looked
for among the trained values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import FinishedRound, RoundMetric


@dataclass(frozen=True)
class CostModel:
    weights: dict[str, int]  # prunable weights per layer
    flops: dict[str, int]  # dense multiply-adds per example per layer
    params: int  # every parameter of the model

    @classmethod
    def of(cls, model: nn.Module, input_shape: tuple[int, ...]) -> CostModel:
        """Per-layer weights and multiply-adds of one example, read off a forward pass (no RNG, no state change)."""
        flops: dict[str, int] = {}
        hooks = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                channel_dim = 1 if isinstance(m, nn.Conv2d) else -1
                hooks.append(m.register_forward_hook(
                    lambda m, inp, out, name=name, dim=channel_dim: flops.__setitem__(
                        name, m.weight.numel() * (out.numel() // out.shape[dim]))))
        was_training = model.training
        device = next(model.parameters()).device
        try:
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, *input_shape, device=device))
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        weights = {n: m.weight.numel() for n, m in model.named_modules() if n in flops}
        return cls(weights, flops, sum(p.numel() for p in model.parameters()))

    def of_round(self, layer_density: dict[str, float]) -> dict[str, float | int]:
        """The round's numbers from its per-layer densities (a layer not listed is dense)."""
        remaining = {n: round(layer_density.get(n, 1.0) * w) for n, w in self.weights.items()}
        kept, total = sum(remaining.values()), sum(self.weights.values())
        nonzero_params = self.params - (total - kept)
        dense = sum(self.flops.values())
        nonzero = sum(self.flops[n] * remaining[n] / self.weights[n] for n in self.flops)
        return {"compression_ratio": total / kept if kept else math.inf,
                "compression_ratio_all_params": self.params / nonzero_params,
                "params_total": self.params, "params_nonzero": nonzero_params,
                "dense_flops": float(dense), "nonzero_flops": nonzero,
                "theoretical_speedup": dense / nonzero if nonzero else math.inf}


class Compression(RoundMetric):
    """ShrinkBench's compression ratios, parameter counts, FLOPs and theoretical speedup of every round."""

    def compute(self, finished: FinishedRound) -> dict[str, float | int]:
        return finished.cost.of_round(finished.record.layer_density)
