"""Contracts checked before anything runs (engine/contracts.py): a plugin whose class is incomplete, or whose builder
or declarations cannot work, is one line naming the class and what it lacks (exit 2), from a study file and from
`ltstudy ticket --plugin`, before any journal, MLflow store or cache exists; the defaults are safe."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from optuna.trial import TrialState

from ltstudy import cli
from tests.study_helpers import Stores, seeded_stores, write_study

INCOMPLETE = {
    "reinit": ("""
        from ltstudy.engine.registry import REINITS
        from ltstudy.engine.reinit.base import Reinit

        class NoReset(Reinit):
            rewinds = True

        REINITS.add("no-reset", NoReset)
        """, {"search": {"reinit": "no-reset"}}, "re-init strategy 'no-reset': class NoReset (@MOD@) is incomplete: it "
                                                 "must implement reset"),
    "mask": ("""
        from ltstudy.engine.masks.base import MaskRule
        from ltstudy.engine.registry import MASKS

        class NoPrune(MaskRule):
            pass

        MASKS.add("no-prune", NoPrune)
        """, {"prune": {"mask": "no-prune"}}, "mask rule 'no-prune': class NoPrune (@MOD@) is incomplete: it must "
                                              "implement prune"),
    "at-init": ("""
        from ltstudy.engine.masks.at_init import AtInit
        from ltstudy.engine.registry import AT_INIT

        class NoScores(AtInit):
            method = "no scores"

        AT_INIT.add("no-scores", NoScores)
        """, {"study": {"controls": ["no-scores"]}}, "pruning-at-initialisation method 'no-scores': class NoScores "
                                                      "(@MOD@) is incomplete: it must implement raw_scores (or scores"),
    "at-init-as-a-mask-rule": ("""
        from ltstudy.engine.masks.at_init import AtInit
        from ltstudy.engine.registry import MASKS

        class OldWay(AtInit):
            method = "registered the old way"

            def raw_scores(self, model, names, data, seed):
                return {n: model.get_parameter(f"{n}.weight").abs() for n in names}

        MASKS.add("old-way", OldWay)
        """, {"study": {"controls": ["old-way"]}}, "mask rule 'old-way' is OldWay (@MOD@), a AtInit: register it in "
                                                   "AT_INIT"),
    "branch": ("""
        from ltstudy.engine.branches.base import Branch
        from ltstudy.engine.registry import CONTROLS

        @CONTROLS.register("nameless")
        class Nameless(Branch):
            fresh_init = True
        """, {"study": {"controls": ["nameless"]}}, "control 'nameless': class Nameless (@MOD@) is incomplete: it "
                                                     "must set label"),
    "metric": ("""
        from ltstudy.engine.metrics import RoundMetric
        from ltstudy.engine.registry import METRICS

        @METRICS.register("nothing")
        class Nothing(RoundMetric):
            needs_state = True
        """, {}, "round metric 'nothing': class Nothing (@MOD@) is incomplete: it must implement compute"),
    "scope": ("""
        from ltstudy.engine.registry import SCOPES
        from ltstudy.engine.scopes.base import Scope

        class NoShare(Scope):
            pass

        SCOPES.add("no-share", NoShare)
        """, {"search": {"scope": "no-share"}}, "pruning scope 'no-share': class NoShare (@MOD@) is incomplete: it "
                                                 "must implement shared"),
    "objective": ("""
        from ltstudy.study.objectives import OBJECTIVES
        from ltstudy.study.objectives.base import Objective

        class NoValue(Objective):
            meaning = "nothing"

        OBJECTIVES.add("no_value", NoValue)
        """, {"study": {"objectives": ["no_value"]}}, "objective 'no_value': class NoValue (@MOD@) is incomplete: it "
                                                      "must implement value"),
    "prunable": ("""
        from ltstudy.study.objectives import OBJECTIVES
        from ltstudy.study.objectives.base import Objective

        class SaysPrunable(Objective):
            prunable = True

            def value(self, rounds, epsilon, key="val_accuracy"):
                return rounds[-1][key]

        OBJECTIVES.add("says_prunable", SaysPrunable)
        """, {"study": {"objectives": ["says_prunable"]}}, "it must drop prunable = True (an objective is prunable "
                                                           "exactly when it implements at_grid_density"),
    "not-a-subclass": ("""
        from ltstudy.engine.registry import REINITS

        class LooksLikeOne:
            rewinds = True

            def reset(self, model, start):
                model.load_state_dict(start.theta_k())

        REINITS.add("duck", LooksLikeOne)
        """, {"search": {"reinit": "duck"}}, "re-init strategy 'duck' is LooksLikeOne (@MOD@), not a subclass of "
                                             "Reinit"),
    "model": ("""
        from torch import nn
        from ltstudy.engine.registry import MODELS

        def build(input_shape, num_classes):
            return nn.Linear(64, num_classes)

        MODELS.add("two-args", build)
        """, {"model": {"name": "two-args"}}, "model 'two-args': build (@MOD@) cannot be called with (input_shape, "
                                              "num_classes, dropout)"),
    "dataset": ("""
        from ltstudy.engine.registry import DATASETS

        def load(cfg):
            raise AssertionError("never loaded")

        DATASETS.add("flat", load, input_shape=(8, 8))
        """, {"data": {"name": "flat"}}, "dataset 'flat' is registered with input_shape=(8, 8); it must be "
                                         "(channels, height, width)"),
    "lazy": ("""
        from ltstudy.engine.registry import REINITS
        from ltstudy.engine.reinit.base import Reinit

        class NoReset(Reinit):
            pass

        REINITS.add("lazy-no-reset", "@MOD@:NoReset")
        """, {"search": {"reinit": "lazy-no-reset"}}, "re-init strategy 'lazy-no-reset': class NoReset (@MOD@) is "
                                                     "incomplete: it must implement reset"),
}


@pytest.fixture(autouse=True)
def own_registries(monkeypatch):
    """What a test's plugin registers stays in the test."""
    from ltstudy.engine.registry import AT_INIT, CONTROLS, DATASETS, MASKS, METRICS, MODELS, REINITS, SCOPES
    from ltstudy.study.objectives import OBJECTIVES

    for registry in (DATASETS, MODELS, REINITS, MASKS, SCOPES, AT_INIT, CONTROLS, METRICS, OBJECTIVES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def write_plugin(folder: Path, case: str, command: str) -> str:
    """The case's plugin file in `folder`, under a module name of its own (per command: a module is imported once
    per process); the module's name."""
    module = f"incomplete_{case.replace('-', '_')}_{command}"
    (folder / f"{module}.py").write_text(textwrap.dedent(INCOMPLETE[case][0]).replace("@MOD@", module))
    return module


def one_line(capsys, command: str) -> str:
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ltstudy {command}: error: ")
    return lines[0]


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_an_incomplete_plugin_in_a_study_file_is_one_line_naming_its_class_and_creates_nothing(
        case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stores = Stores(tmp_path)
    module = write_plugin(tmp_path, case, "run")
    _, sections, message = INCOMPLETE[case]
    study = {"plugins": [module], **sections.get("study", {})}
    path = write_study(tmp_path, stores, **{**sections, "study": study})
    assert cli.main(["run", str(path), "--quiet"]) == 2
    assert message.replace("@MOD@", module) in one_line(capsys, "run")
    assert stores.created() == [] and not (tmp_path / ".ltstudy").exists()


@pytest.mark.parametrize("case", ["reinit", "mask", "not-a-subclass", "model", "lazy"])
def test_an_incomplete_plugin_given_to_ltstudy_ticket_is_one_line_and_creates_no_cache(case, tmp_path, monkeypatch,
                                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    module = write_plugin(tmp_path, case, "ticket")
    _, sections, message = INCOMPLETE[case]
    flags = [f"--{k.replace('name', 'model' if section == 'model' else 'dataset')}" if k == "name" else f"--{k}"
             for section, values in sections.items() for k in values]
    values = [str(v) for values in sections.values() for v in values.values()]
    argv = ["ticket", "--plugin", module, *[x for pair in zip(flags, values, strict=True) for x in pair],
            "--cache-dir", "cache", "--iterations", "20", "--eval-every", "10", "--rounds", "1", "--quiet"]
    assert cli.main(argv) == 2
    assert message.replace("@MOD@", module) in one_line(capsys, "ticket")
    assert not (tmp_path / "cache").exists()


def test_every_built_in_method_class_and_builder_keeps_its_contract():
    from ltstudy.engine.registry import AT_INIT, CONTROLS, DATASETS, MASKS, METRICS, MODELS, REINITS, SCOPES
    from ltstudy.study.objectives import OBJECTIVES

    for registry in (DATASETS, MODELS, REINITS, MASKS, SCOPES, AT_INIT, CONTROLS, METRICS, OBJECTIVES):
        for name in registry.names():
            registry.load(name)  # (each load is checked against the registry's contract)


def test_an_objective_is_prunable_exactly_when_it_says_how_to_read_a_partial_trial():
    from ltstudy.study.objectives import parse_objective
    from ltstudy.study.objectives.base import Objective

    class Plain(Objective):
        def value(self, rounds, epsilon, key="val_accuracy"):
            return rounds[-1][key]

    class Readable(Plain):
        def at_grid_density(self, rounds, density, accuracy, epsilon):
            return accuracy

    assert not Plain.prunable and Readable.prunable
    assert Plain("plain", "plain").intermediate_values([{"round": 0, "density": 1.0, "val_accuracy": 0.9}], 0.01) == {}
    assert {n: parse_objective(n if n != "accuracy_at_density" else f"{n}:0.1").prunable for n in (
        "ticket_sparsity", "ticket_accuracy", "accuracy_at_density", "theoretical_speedup", "instability",
        "train_iterations")} == {"ticket_sparsity": True, "ticket_accuracy": True, "accuracy_at_density": True,
                                 "theoretical_speedup": False, "instability": False, "train_iterations": False}


PLAIN_OBJECTIVE = """
from ltstudy.study.objectives import OBJECTIVES
from ltstudy.study.objectives.base import Objective


class LastAccuracy(Objective):
    meaning = "validation accuracy of the last round"

    def value(self, rounds, epsilon, key="val_accuracy"):
        return rounds[-1][key]


OBJECTIVES.add("last_accuracy", LastAccuracy)
"""


def test_a_users_objective_without_a_reading_of_partial_trials_runs_under_the_default_pruner(
        tmp_path, tmp_path_factory, monkeypatch):
    """(It was prunable by default: every trial of a single-objective study failed at its first round.)"""
    stores = seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    (tmp_path / "last_objective.py").write_text(PLAIN_OBJECTIVE)
    path = write_study(tmp_path, stores, study={"plugins": ["last_objective"], "objectives": ["last_accuracy"],
                                                "pruner": "median", "n_trials": 2})
    assert cli.main(["run", str(path), "--quiet"]) == 0
    assert [t.state for t in stores.study().trials] == [TrialState.COMPLETE] * 2
