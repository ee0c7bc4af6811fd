"""Fine-tuning: keep the trained weights and train T-k more iterations at the schedule's final learning rate."""

from __future__ import annotations

from .base import Reinit, Start


class Finetune(Reinit):
    def constant_lr(self, train, sched) -> float:
        from ..training import lr_at  # (here: the config checks load this class without torch)

        return lr_at(sched.iterations - 1, train, sched)

    def reset(self, model, start: Start) -> None:
        if start.trained is not None:
            model.load_state_dict(start.trained())
