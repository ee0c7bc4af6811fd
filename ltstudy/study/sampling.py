"""Optuna samplers, pruners and the mapping of [search] entries onto trial suggestions.

Small finite spaces: a sampler such as TPE proposes settings it has already
evaluated, and on a space no larger than `n_trials` it cannot help doing so.
There the study uses the grid sampler instead (every setting once). On larger
spaces a repeated proposal is skipped by the runner (see objective.py) and does
not use up a trial.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..engine.hashing import canonical
from .config import Param, StudyConfig
from .optuna_api import GridSampler

# --------------------------------------------------------------------------- samplers and pruners


def space_size(cfg: StudyConfig) -> int | None:
    """Number of distinct settings in the search space, or None when a continuous range makes it infinite."""
    size = 1
    for p in cfg.searched.values():
        if p.choices is not None:
            size *= len(p.choices)
        elif p.step is not None or p.is_int:
            size *= len(p.grid_values())
        else:
            return None
    return size


def make_sampler(cfg: StudyConfig, offset: int = 0, n_trials: int | None = None
                 ) -> tuple[optuna.samplers.BaseSampler, str | None]:
    """The study's sampler, and a note when it was replaced by the grid for a small space."""
    seed, name = (cfg.study.seed + offset) % 2**32, cfg.study.sampler  # numpy seeds are 32-bit
    size = space_size(cfg)
    note = None
    if name != "grid" and cfg.searched and size is not None and n_trials is not None and size <= n_trials:
        note = (f"the search space has {size} settings, no more than n_trials = {n_trials}: the grid sampler "
                f"evaluates each once (instead of {name}, which would repeat some)")
        name = "grid"
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True), note
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed), note
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed), note
    if name == "grid":
        return GridSampler(cfg.grid(), order_seed=cfg.study.seed % 2**32, pick_seed=seed), note
    return optuna.samplers.GPSampler(seed=seed), note


def make_pruner(cfg: StudyConfig) -> tuple[optuna.pruners.BasePruner, str | None]:
    """The pruner, and a note when it is switched off for a reason the user should know."""
    name = cfg.study.pruner
    if name == "none":
        return optuna.pruners.NopPruner(), None
    if len(cfg.directions) > 1:
        return optuna.pruners.NopPruner(), None  # multi-objective trials stop through stop_on_drop instead
    if not cfg.objectives[0].prunable:
        return optuna.pruners.NopPruner(), (f"pruner off: {cfg.objectives[0].name} has no intermediate value that "
                                            "means the same for every trial before the trial ends")
    # Steps are density-grid steps (20 per decade), not rounds: warm-up 4 steps = density 0.63.
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=4),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    }[name](), None


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.is_int:
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


def setting_key(params: dict[str, Any]) -> str:
    """A canonical form of a trial's searched settings, for spotting repeats (floats compared to 12 digits)."""
    def canon(v: Any) -> Any:
        return float(f"{v:.12g}") if isinstance(v, float) and math.isfinite(v) else v

    return canonical({k: canon(v) for k, v in params.items()})
