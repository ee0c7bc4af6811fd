"""Learning-rate rewinding (Renda et al. 2020): keep the trained weights, replay the schedule from iteration k."""

from __future__ import annotations

from .base import Reinit, Start


class LrRewind(Reinit):
    def reset(self, model, start: Start) -> None:
        if start.trained is not None:
            model.load_state_dict(start.trained())
