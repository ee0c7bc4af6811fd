"""Synthetic finished trials with exactly known numbers, for the report and compare tests.

A trial here is what the runner stores: "params_all", "seeds", "rounds" (the mean over seeds) and
"rounds_per_seed", built with optuna.trial.create_trial so it can also be added to a real study.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ltstudy.study.curves import mean_rounds


def kind_for(settings: dict[str, Any]) -> str:
    """The kind a trial with these settings records ("ticket", "control: random re-init", ...), as the runner does."""
    from ltstudy.engine.config import TicketConfig
    from ltstudy.engine.searches import kind_of  # (the engine: imported only when a test asks)

    prune = {k: settings[k] for k in ("reinit", "mask") if k in settings}
    return kind_of(TicketConfig.from_dict({"device": "cpu", "prune": prune}))


CONTROL_KINDS = {"random-reinit": "control: random re-init", "random-mask": "control: random mask",
                 "random-both": "control: random re-init + random mask"}
DEFAULTS: dict[str, Any] = {"prune_rate": 0.2, "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                            "mask": "magnitude", "rounds": 3, "lr": 0.0012}


def rnd(i: int, density: float, val: float, test: float | None = None, es: int = 100, iters: int = 100,
        test_end: float | None = None) -> dict[str, Any]:
    """One round record; test accuracy at early stop defaults to val - 0.01, at the end to val - 0.02."""
    test = val - 0.01 if test is None else test
    return {"round": i, "density": density, "weights_remaining": int(density * 1000), "val_loss": 1.0 - val,
            "val_accuracy": val, "early_stop_iteration": es, "test_accuracy": val - 0.02 if test_end is None
            else test_end, "test_accuracy_at_early_stop": test, "train_loss": 0.1, "iterations": iters,
            "wall_seconds": 0.1, "reused": False, "computed_iterations": iters}


def curve(densities: Sequence[float], vals: Sequence[float], **kw: Any) -> list[dict[str, Any]]:
    return [rnd(i, d, v, **kw) for i, (d, v) in enumerate(zip(densities, vals, strict=True))]


def make_trial(number: int, per_seed: Sequence[list[dict]], seeds: Sequence[int] | None = None,
               state: TrialState = TrialState.COMPLETE, values: Sequence[float] | None = None,
               per_seed_attr: bool = True, kind: str | None = None,
               controls: dict[str, Sequence[list[dict]]] | None = None, **settings: Any) -> optuna.trial.FrozenTrial:
    """A finished trial with one round list per seed (seeds 0, 1, ... unless given); its kind as the runner
    records it (given, for a test that must not import torch). `controls`: each control's levels per seed, as
    a trial of a study with [study] controls keeps them beside its ticket."""
    params_all = {**DEFAULTS, **settings}
    seeds = list(range(len(per_seed))) if seeds is None else list(seeds)
    attrs: dict[str, Any] = {"params_all": params_all, "seeds": seeds, "rounds": mean_rounds(per_seed),
                             "kind": kind if kind is not None else kind_for(params_all)}
    if controls:
        attrs["controls_per_seed"] = {name: [list(r) for r in levels] for name, levels in controls.items()}
        attrs["controls"] = {name: CONTROL_KINDS[name] for name in controls}
    if per_seed_attr:
        attrs["rounds_per_seed"] = [list(r) for r in per_seed]
    if values is None and state == TrialState.COMPLETE:
        values = [0.0, 1.0]
    trial = optuna.trial.create_trial(
        state=state, values=list(values) if values is not None else None,
        params={"prune_rate": params_all["prune_rate"]},
        distributions={"prune_rate": FloatDistribution(0.0, 1.0)}, user_attrs=attrs)
    trial.number = number  # create_trial leaves it for the storage to assign
    return trial
