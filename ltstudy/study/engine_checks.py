"""The checks of a study that need the engine (and so torch): its data, and the searches its settings make.

Building a search is the check of its plan (the model for the data, layer names, rounds that prune nothing or
empty a layer), at every combination of the extremes of the settings that decide it, each built at about a
tenth of a second for LeNet and more for larger models. At most MAX_COMBINATIONS are built before the run: a
[search] with more says so in one warning, and a trial whose combination was not built is checked when it
starts (a plan that cannot be made fails that trial alone, with the reason).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator

from ..engine.config import PruneConfig
from ..engine.data import Dataset, load_dataset
from ..engine.device import resolve_device
from ..engine.errors import ConfigError, SettingWarning
from ..engine.searches import ticket_search
from .callbacks import StudyPlan
from .config import StudyConfig, validate_with_data
from .user_code import load_entries

# Settings whose extremes decide whether a search can be planned (the rounding rule, the rounds it runs).
PLANNING = ("prune_rate", "rounds", "target_density", "one_shot", "output_rate", "conv_rate", "scope", "batch_size")
MAX_COMBINATIONS = 64  # the searches built before a run (see the module docstring)


def check_with_engine(cfg: StudyConfig, processes: int = 1) -> None:
    """Load the data, check the schedule's lengths against it, and build the searches at every combination of the
    extremes of the settings that decide a plan (model × dataset pairs, layer names, rounds that prune nothing
    or empty a layer), before anything is created."""
    check_no_control_searched(cfg)
    load_entries(cfg)  # (one that cannot load is named alone, not under a [search] combination)
    data = _data(cfg)
    validate_with_data(cfg, len(data.train))
    for _ in _searches(cfg, data, warn=True):
        pass  # (building each one is the check)
    search = ticket_search(cfg.base, data, controls=cfg.study.controls)
    if cfg.study.pack > 1:
        check_pack(cfg.study.pack, search.model, cfg.base.model.name, data.train.x.device, processes)


# Copies of a member's parameters a pack holds: weights, gradients, masks, two optimiser moments, the round's
# start (θ_k) and its best state; the activations of a batch are small beside them for every registered model.
PACK_COPIES = 8


def check_pack(pack: int, model, name: str, device, processes: int = 1) -> None:
    """Refuse packs whose members' stacked state cannot fit in the memory of the device they train on, one pack
    per --jobs process (a pack allocates every slot at once: pack = 10,000,000 asked for 768 GB)."""
    per_member = PACK_COPIES * 4 * sum(p.numel() for p in model.parameters())
    free = available_memory(device)
    copies = pack * processes
    if free is not None and copies * per_member > free:
        most = max(1, free // (per_member * processes))
        each = f" in each of --jobs {processes} processes" if processes > 1 else ""
        raise ConfigError(f"study.pack = {pack:,}{each} would train {copies:,} copies of {name} side by side, about "
                          f"{_gb(copies * per_member)} of weights, gradients, masks and optimiser state; the "
                          f"{device.type.upper()} has {_gb(free)} available: use pack <= {most:,} (1 = no packing)")


def available_memory(device) -> int | None:
    """Bytes free for new tensors on `device` (None if it cannot say)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import os

        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


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


def _searches(cfg: StudyConfig, data: Dataset, warn: bool = False) -> Iterator[tuple[dict, object]]:
    keys = [k for k in PLANNING if k in cfg.searched]
    combos = list(itertools.product(*(cfg.search[k].extremes() for k in keys)))
    if warn and len(combos) > MAX_COMBINATIONS:
        warnings.warn(f"[search] has {len(combos)} combinations of the extremes of {', '.join(keys)}; the first "
                      f"{MAX_COMBINATIONS} are checked before the run, each other one when a trial draws it (one "
                      "that cannot be planned fails that trial)", SettingWarning, stacklevel=2)
    for combo in combos[:MAX_COMBINATIONS]:
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
