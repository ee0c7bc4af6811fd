"""Optuna samplers, pruners and the mapping of [search] entries onto trial suggestions."""

from __future__ import annotations

from typing import Any

import optuna

from .config import Param, StudyConfig

# --------------------------------------------------------------------------- samplers and pruners


def make_sampler(cfg: StudyConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    seed, name = (cfg.study.seed + offset) % 2**32, cfg.study.sampler  # numpy seeds are 32-bit
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(cfg.grid(), seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    name = cfg.study.pruner
    if name == "none" or len(cfg.directions) > 1:
        return optuna.pruners.NopPruner()  # multi-objective trials stop through stop_on_drop instead
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    }[name]()


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.is_int:
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


