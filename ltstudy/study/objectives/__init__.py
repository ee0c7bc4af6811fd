"""Study objectives: numbers computed from a ticket search's rounds, one registered class per file.

`OBJECTIVES` holds them by name; `parse_objective("accuracy_at_density:0.1")`
makes one. Every objective reads validation numbers only (test accuracy is
reported alongside, never optimised); `base.Objective` says what a class
declares. A user adds one in a file of their own:

    from ltstudy.study.objectives import OBJECTIVES
    OBJECTIVES.add("my_objective", MyObjective)
"""

from __future__ import annotations

from ...engine.contracts import method_class
from ...engine.errors import ConfigError
from ...engine.registry import Registry
from .base import Objective

OBJECTIVES = Registry("objective", contract=method_class("objective", "ltstudy.study.objectives.base:Objective"))
OBJECTIVES.add("ticket_sparsity", "ltstudy.study.objectives.ticket_sparsity:TicketSparsity",
               "sparsity of the sparsest round within ε of dense (max)")
OBJECTIVES.add("ticket_accuracy", "ltstudy.study.objectives.ticket_accuracy:TicketAccuracy",
               "validation accuracy of that round (max)")
OBJECTIVES.add("accuracy_at_density", "ltstudy.study.objectives.accuracy_at_density:AccuracyAtDensity",
               "validation accuracy of the first round at or below density X (max)")
OBJECTIVES.add("theoretical_speedup", "ltstudy.study.objectives.theoretical_speedup:TheoreticalSpeedup",
               "dense over non-zero FLOPs of that round (max)")
OBJECTIVES.add("instability", "ltstudy.study.objectives.instability:Instability",
               "stability to SGD noise of that round, with [stability] points (min)")
OBJECTIVES.add("connected_sparsity", "ltstudy.study.objectives.connected_sparsity:ConnectedSparsity",
               "sparsity reached with every level barrier below 2 points, with [stability] level_points (max)")
OBJECTIVES.add("train_iterations", "ltstudy.study.objectives.train_iterations:TrainIterations",
               "training iterations over all rounds (min)")


def parse_objective(spec: str) -> Objective:
    """An objective from its name as written in a study file, e.g. "accuracy_at_density:0.1"."""
    name, _, arg = spec.partition(":")
    if name not in OBJECTIVES:
        import difflib

        close = difflib.get_close_matches(name, OBJECTIVES.names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"study.objectives: unknown objective '{spec}'; {hint}choose from "
                          f"{', '.join(OBJECTIVES.names())} (accuracy_at_density takes ':X', e.g. "
                          "accuracy_at_density:0.1)")
    cls = OBJECTIVES.load(name)
    return cls(spec, name, arg)


__all__ = ["OBJECTIVES", "Objective", "parse_objective"]
