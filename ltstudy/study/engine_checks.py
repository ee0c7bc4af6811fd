"""The checks of a study that need the engine (and so torch): its data, and the searches its settings make."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from ..engine.config import PruneConfig
from ..engine.data import Dataset, load_dataset
from ..engine.device import resolve_device
from ..engine.errors import ConfigError
from ..engine.searches import ticket_search
from .callbacks import StudyPlan
from .config import StudyConfig, validate_with_data
from .user_code import load_entries

# Settings whose extremes decide whether a search can be planned (the rounding rule, the rounds it runs).
PLANNING = ("prune_rate", "rounds", "target_density", "one_shot", "output_rate", "conv_rate", "scope", "batch_size")
MAX_COMBINATIONS = 64


def check_with_engine(cfg: StudyConfig) -> None:
    """Load the data, check the schedule's lengths against it, and build the searches at every combination of the
    extremes of the settings that decide a plan (model × dataset pairs, layer names, rounds that prune nothing
    or empty a layer), before anything is created."""
    check_no_control_searched(cfg)
    load_entries(cfg)  # (one that cannot load is named alone, not under a [search] combination)
    data = _data(cfg)
    validate_with_data(cfg, len(data.train))
    for _ in _searches(cfg, data):
        pass  # (building each one is the check)
    ticket_search(cfg.base, data, controls=cfg.study.controls)


def plan(cfg: StudyConfig, trials: int) -> StudyPlan:
    """At most how much a run of `trials` trials trains (every searched extreme of rounds and lengths)."""
    rounds = iterations = 0
    for _, search in _searches(cfg, _data(cfg)):
        rounds, iterations = max(rounds, search.n_rounds), max(iterations, search.sched.iterations)
    s = cfg.base.stability  # (copy B of each measured round; both copies of a dense k > 0, and its θ_k replay)
    copies = ((len(s.rounds) or rounds) * iterations + sum(iterations if k == 0 else 2 * iterations - k
                                                            for k in s.dense_ks)) if s.points else 0
    return StudyPlan(trials, cfg.study.replicates, rounds, iterations, len(cfg.study.controls), copies)


def _data(cfg: StudyConfig) -> Dataset:
    return load_dataset(cfg.base.data, resolve_device(cfg.base.device))


def _searches(cfg: StudyConfig, data: Dataset) -> Iterator[tuple[dict, object]]:
    keys = [k for k in PLANNING if k in cfg.searched]
    combos = list(itertools.product(*(cfg.search[k].extremes() for k in keys)))[:MAX_COMBINATIONS]
    for combo in combos:
        values = dict(zip(keys, combo, strict=True))
        try:
            yield values, ticket_search(cfg.trial_config(values, cfg.study.seed), data)
        except ConfigError as exc:
            where = ", ".join(f"{k} = {v!r}" for k, v in values.items())
            raise ConfigError(f"[search] {where}: {exc}" if where else str(exc)) from None


def check_no_control_searched(cfg: StudyConfig) -> None:
    """A study searches how tickets are found; the paper's controls go beside every ticket ([study] controls)."""
    ticket = PruneConfig()  # (each value alone: the other setting at its ticket-finding default)
    for key in ("reinit", "mask"):
        param = cfg.search.get(key)
        values = param.extremes() if param is not None else [getattr(cfg.base.prune, key)]
        for value in values:
            named, _ = cfg.base.replace({"prune.reinit": ticket.reinit, "prune.mask": ticket.mask,
                                         f"prune.{key}": value}).split_control()
            if named is not None:
                where = f"search.{key}" if param is not None else f"prune.{key}"
                raise ConfigError(f"{where} = {value!r} is a control, not a way to find tickets; list it in [study] "
                                  f'controls = ["{named}"] so that every ticket is trained beside it, level by level '
                                  "on its own masks")
