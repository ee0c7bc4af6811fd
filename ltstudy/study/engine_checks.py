"""The checks of a study that need the engine (and so torch): its data, and one search built from its settings."""

from __future__ import annotations

from ..engine.data import load_dataset
from ..engine.device import resolve_device
from ..engine.errors import ConfigError
from ..engine.registry import CONTROLS, MASKS, REINITS
from ..engine.searches import ticket_search
from .config import StudyConfig, validate_with_data


def check_with_engine(cfg: StudyConfig) -> None:
    """Load the data, check the schedule's lengths against it, and build one search (model × dataset pairs, layer
    names), before anything is created."""
    check_no_control_searched(cfg)
    data = load_dataset(cfg.base.data, resolve_device(cfg.base.device))
    validate_with_data(cfg, len(data.train))
    ticket_search(cfg.base, data, controls=cfg.study.controls)


def check_no_control_searched(cfg: StudyConfig) -> None:
    """A study searches how tickets are found; the paper's controls go beside every ticket ([study] controls)."""
    for key, registry in (("reinit", REINITS), ("mask", MASKS)):
        param = cfg.search.get(key)
        values = param.extremes() if param is not None else [getattr(cfg.base.prune, key)]
        for value in values:
            if registry.load(value).control:
                where = f"search.{key}" if param is not None else f"prune.{key}"
                named = [n for n, e in CONTROLS.items() if e.load() == {f"prune.{key}": value}]
                hint = f'controls = ["{named[0]}"]' if named else "controls"
                raise ConfigError(f"{where} = {value!r} is a control, not a way to find tickets; list it in [study] "
                                  f"{hint} so that every ticket is trained beside it, level by level on its own masks")
