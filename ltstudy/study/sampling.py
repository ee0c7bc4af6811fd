"""Optuna samplers, pruners and the mapping of [search] entries onto trial suggestions.

Repeats: on a small categorical space TPE proposes settings it has already
evaluated (44 repeats for 12 new settings in the quickstart), and a repeat
teaches a study nothing. Every sampler is therefore wrapped in
`NoRepeatSampler`, which asks the sampler again when it proposes a setting a
finished or running trial already has, then draws at random, and finally, on a
finite space, picks one of the settings never evaluated. So every trial in the
storage is a real trial of a new setting, until the space is exhausted and the
runner stops. (Two workers that sample at the same instant can still pick one
setting; that trial is then run for real, from the cache.)
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ..engine.hashing import canonical
from .config import Param, StudyConfig

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


def make_sampler(cfg: StudyConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, never proposing an evaluated setting (see the module docstring).

    `grid` evaluates every setting of a finite space once, in a seeded random order.
    """
    seed, name = (cfg.study.seed + offset) % 2**32, cfg.study.sampler  # numpy seeds are 32-bit
    base: optuna.samplers.BaseSampler | None = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "grid": lambda: None,
    }[name]()
    return NoRepeatSampler(base, distributions(cfg), seed=seed)


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of a searched setting, as `suggest` asks for it."""
    if param.choices is not None:
        return CategoricalDistribution(list(param.choices))
    if param.is_int:
        return IntDistribution(int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return FloatDistribution(param.low, param.high, step=param.step, log=param.log)


def distributions(cfg: StudyConfig) -> dict[str, BaseDistribution]:
    return {key: distribution(p) for key, p in cfg.searched.items()}


def _snap(value: Any, dist: BaseDistribution) -> Any:
    """A stepped float as the grid holds it (0.3, not Optuna's 0.1 + 2 * 0.1 = 0.30000000000000004)."""
    if isinstance(dist, FloatDistribution) and dist.step is not None and isinstance(value, float):
        return round(value, 12)
    return value


class NoRepeatSampler(optuna.samplers.BaseSampler):
    """A sampler that proposes settings no finished or running trial has (see the module docstring).

    It samples the whole declared space at once (relative sampling), from the
    wrapped sampler (`base`; None: only the unseen settings of a finite space,
    the grid), asks it again up to `redraws` times on a repeat, then draws at
    random, and finally picks uniformly among the settings never evaluated. A
    repeat is accepted only once the space has no new setting left.
    """

    def __init__(self, base: optuna.samplers.BaseSampler | None, space: dict[str, BaseDistribution], seed: int,
                 redraws: int = 10):
        self.base, self.space, self.redraws = base, dict(space), redraws
        self.random = optuna.samplers.RandomSampler(seed=seed)
        self.rng = np.random.RandomState(seed)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {k: d for k, d in self.space.items() if not d.single()}  # (a single value is never sampled)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        seen = {setting_key({k: t.params.get(k) for k in search_space})
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.RUNNING))
                if t.number != trial.number and search_space.keys() <= t.params.keys()}
        sources = ([self.base] * (1 + self.redraws) if self.base is not None else []) + [self.random] * self.redraws
        previous = None
        for source in sources:
            params = self._draw(source, study, trial, search_space)
            if setting_key(params) not in seen:
                return params
            if source is self.base and params == previous:  # (TPE and GP often propose their argmax again)
                sources = [s for s in sources if s is not self.base]
            previous = params
        unseen = self._unseen(search_space, seen)
        if unseen:
            return unseen[self.rng.randint(len(unseen))]
        return self._draw(self.base or self.random, study, trial, search_space)  # every setting seen: a repeat

    def _draw(self, sampler, study, trial, space) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if sampler is self.base:  # (the base infers its own space first: TPE's groups, NSGA-II's intersections)
            sampler.infer_relative_search_space(study, trial)
            params = {k: v for k, v in sampler.sample_relative(study, trial, space).items() if k in space}
        for name, dist in space.items():
            if name not in params:
                params[name] = sampler.sample_independent(study, trial, name, dist)
        return {name: _snap(v, space[name]) for name, v in params.items()}

    @staticmethod
    def _values(dist: BaseDistribution) -> list | None:
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return list(range(dist.low, dist.high + 1, dist.step))
        if isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step) + 1
            return [_snap(dist.low + i * dist.step, dist) for i in range(n)]
        return None  # continuous: not enumerable

    def _unseen(self, space: dict[str, BaseDistribution], seen: set[str], limit: int = 100_000) -> list[dict]:
        axes = {name: self._values(d) for name, d in space.items()}
        if any(v is None for v in axes.values()) or math.prod(len(v) for v in axes.values()) > limit:
            return []
        names = sorted(axes)
        combos = (dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names)))
        return [c for c in combos if setting_key(c) not in seen]

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Only for a setting outside the declared space (none in a study), or a value it does not hold.
        return (self.base or self.random).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        if self.base is not None:
            self.base.before_trial(study, trial)
        self.random.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        if self.base is not None:
            self.base.after_trial(study, trial, state, values)
        self.random.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self.base is not None:
            self.base.reseed_rng()
        self.random.reseed_rng()
        self.rng.seed()


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
