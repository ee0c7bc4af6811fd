"""GraSP (Wang, Zhang and Grosse, ICLR 2020): keep the weights whose removal least reduces gradient flow, global.

Wang et al. remove the weights with the largest −θ ⊙ Hg, H the Hessian of the
loss and g its gradient; here the kept score is θ ⊙ Hg (the same ranking).
As in their code, the gradients are taken on 10 training examples per class
with the logits divided by a temperature of 200.
"""

from __future__ import annotations

import torch

from .. import pruning
from .at_init import AtInit, loss_gradients, training_batch

PER_CLASS = 10
TEMPERATURE = 200.0


class Grasp(AtInit):
    method = "GraSP"

    def raw_scores(self, model, names, data, seed):
        x, y = training_batch(data, 0, seed, per_class=PER_CLASS)
        g = [t.detach() for t in loss_gradients(model, names, x, y, temperature=TEMPERATURE)]
        g_graph = loss_gradients(model, names, x, y, create_graph=True, temperature=TEMPERATURE)
        w = list(pruning.weights(model, names).values())
        hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g_graph, g, strict=True)), w)
        return {n: wi.detach() * h for n, wi, h in zip(names, w, hg, strict=True)}


class GraspShuffled(Grasp):
    variant = "shuffled"


class GraspInverted(Grasp):
    variant = "inverted"
