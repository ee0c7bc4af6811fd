"""SynFlow (Tanaka, Kunin, Yamins and Ganguli, NeurIPS 2020): data-free, iterative, global.

The network is linearised (every parameter replaced by its absolute value, in
double precision, evaluation mode) and fed one all-ones input; the score of a
weight is |θ ⊙ dR/dθ| with R the sum of the outputs. Pruning goes in 100
iterations on an exponential schedule: after iteration i of n the pruned
layers keep a fraction d^(i/n) of their weights, d being the target density,
each iteration rescoring the network as masked so far. The inverted ablation
keeps the lowest scores at every iteration.
"""

from __future__ import annotations

import torch

from .. import pruning
from .at_init import AtInit

ITERATIONS = 100


class Synflow(AtInit):
    method = "SynFlow"

    def scores(self, model, names, data, seed, keep, invert):
        model.double().eval()
        w = pruning.weights(model, names)
        with torch.no_grad():
            for p in model.state_dict().values():
                if p.is_floating_point():
                    p.abs_()
        original = {n: t.detach().clone() for n, t in w.items()}
        total = sum(t.numel() for t in w.values())
        mask = {n: torch.ones_like(t) for n, t in w.items()}
        x = torch.ones(1, *data.input_shape, dtype=torch.float64, device=data.train.x.device)
        for i in range(1, ITERATIONS + 1):
            with torch.no_grad():
                for n, t in w.items():
                    t.copy_(original[n] * mask[n])
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
            scores = {n: (t.grad * t).detach().abs() for n, t in w.items()}
            if invert:  # (the weights already gone stay gone)
                scores = {n: torch.where(mask[n].bool(), -s, -torch.inf) for n, s in scores.items()}
            if i == ITERATIONS:
                return scores
            n_keep = round(total * (keep / total) ** (i / ITERATIONS))
            flat = pruning.keep_largest(torch.cat([scores[n].flatten() for n in names]), n_keep)
            mask = {n: f.view_as(w[n]) for n, f in zip(names, flat.split([w[n].numel() for n in names]), strict=True)}
        raise AssertionError("unreachable")


class SynflowShuffled(Synflow):
    variant = "shuffled"


class SynflowInverted(Synflow):
    variant = "inverted"
