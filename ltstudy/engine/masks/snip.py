"""SNIP (Lee, Ajanthan and Torr, ICLR 2019): connection sensitivity |g ⊙ θ| on one batch at initialisation, global.

The batch is Lee et al.'s minibatch of 100 training examples (LeNet on MNIST).
"""

from __future__ import annotations

from .. import pruning
from .at_init import AtInit, loss_gradients, training_batch

BATCH = 100


class Snip(AtInit):
    method = "SNIP"

    def raw_scores(self, model, names, data, seed):
        x, y = training_batch(data, BATCH, seed)
        grads = loss_gradients(model, names, x, y)
        return {n: (g * w).abs() for (n, w), g in zip(pruning.weights(model, names).items(), grads, strict=True)}


class SnipShuffled(Snip):
    variant = "shuffled"


class SnipInverted(Snip):
    variant = "inverted"
