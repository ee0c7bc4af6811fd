"""Rewinding: survivors <- θ_k and retrain iterations k..T (Frankle & Carbin's ticket at k = 0; Frankle et al. 2020)."""

from __future__ import annotations

from .base import Reinit, Start


class Rewind(Reinit):
    rewinds = True

    def reset(self, model, start: Start) -> None:
        model.load_state_dict(start.theta_k())
