"""Magnitude pruning at initialisation (Frankle et al., ICLR 2021): the largest |θ| of the start weights, global."""

from __future__ import annotations

from .. import pruning
from .at_init import AtInit


class MagnitudeInit(AtInit):
    method = "magnitude at init"

    def raw_scores(self, model, names, data, seed):
        return {n: w.detach().abs() for n, w in pruning.weights(model, names).items()}


class MagnitudeInitShuffled(MagnitudeInit):
    variant = "shuffled"


class MagnitudeInitInverted(MagnitudeInit):
    variant = "inverted"
