"""Helpers for the engine tests: small callbacks, and a RoundJob from the pieces a test has at hand."""

from __future__ import annotations

from ltstudy.engine.callbacks import Callback
from ltstudy.engine.rounds import RoundJob

# --------------------------------------------------------------------------- callbacks


class OnRoundEnd(Callback):
    """A search callback calling fn(record) at every finished round (it may raise StopSearch)."""

    def __init__(self, fn):
        self.fn = fn

    def on_round_end(self, record):
        self.fn(record)


class OnRoundStart(Callback):
    """A callback calling fn(job) as each round's training begins."""

    def __init__(self, fn):
        self.fn = fn

    def on_round_start(self, job):
        self.fn(job)


class OnEvaluation(Callback):
    """A callback calling fn(job, iteration, evaluation) at every validation point."""

    def __init__(self, fn):
        self.fn = fn

    def on_evaluation(self, job, iteration, evaluation):
        self.fn(job, iteration, evaluation)


class OnNote(Callback):
    """A callback calling fn(message) at every note."""

    def __init__(self, fn):
        self.fn = fn

    def on_note(self, message):
        self.fn(message)


class OnStep(Callback):
    """A callback calling fn(job, iteration, lr, step) after every optimiser step."""

    def __init__(self, fn):
        self.fn = fn

    def on_step(self, job, iteration, lr, step):
        self.fn(job, iteration, lr, step)


def plain_job(model, masks, cfg, sched, seed: int = 0, **kw) -> RoundJob:
    """A RoundJob from the pieces tests have at hand (round 0, the whole schedule unless start/end say otherwise)."""
    return RoundJob(kw.pop("round", 0), model, masks, cfg, sched, seed, kw.pop("dropout_seed", None),
                    kw.pop("start", 0), kw.pop("end", sched.iterations), **kw)


def train_plain(model, data, masks, cfg, sched, *, seed: int = 0, dropout_seed=None, start: int = 0, end=None,
                capture_at=None, constant_lr=None, on_step=None, on_eval=None, lean: bool = True,
                overlap_eval=None):
    """`training.train` on a job made of these pieces; `on_step(it, lr, step)` and `on_eval(done, evaluation)`
    are wrapped as callbacks."""
    from ltstudy.engine.callbacks import Callbacks
    from ltstudy.engine.training import train

    callbacks = [*([OnStep(lambda job, it, lr, step: on_step(it, lr, step))] if on_step else []),
                 *([OnEvaluation(lambda job, it, ev: on_eval(it, ev))] if on_eval else [])]
    job = plain_job(model, masks, cfg, sched, seed, dropout_seed=dropout_seed, start=start,
                    end=sched.iterations if end is None else end, capture_at=capture_at, constant_lr=constant_lr)
    return train(job, data, Callbacks(callbacks), lean=lean, overlap_eval=overlap_eval)
