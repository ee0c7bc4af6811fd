"""The checks of a study that need the engine (and so torch): its data, and one search built from its settings."""

from __future__ import annotations

from ..engine.data import load_dataset
from ..engine.device import resolve_device
from ..engine.searches import ticket_search
from .config import StudyConfig, validate_with_data


def check_with_engine(cfg: StudyConfig) -> None:
    """Load the data, check the schedule's lengths against it, and build one search (model × dataset pairs, layer
    names), before anything is created."""
    data = load_dataset(cfg.base.data, resolve_device(cfg.base.device))
    validate_with_data(cfg, len(data.train))
    ticket_search(cfg.base, data)
