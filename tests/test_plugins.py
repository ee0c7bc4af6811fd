"""User plugins: a model, a dataset, a re-init strategy and an objective of the user's own, each found by name,
and covered by the cache keys like the engine's own code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import optuna
import pytest
import torch

from ltstudy.engine import registry
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.registry import MODELS, REINITS, check_pair
from ltstudy.engine.reinit.base import Reinit
from ltstudy.study.objectives import OBJECTIVES
from ltstudy.study.objectives.base import Objective
from ltstudy.study.storage import open_storage
from tests.study_helpers import Stores, isolate, seed_mlflow_db, write_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def ltstudy(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command line in a fresh process, as a user runs it (plugins are imported anew each time)."""
    return subprocess.run([sys.executable, "-m", "ltstudy.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                            "CUDA_VISIBLE_DEVICES": "", "HOME": str(cwd)})


MYNETS = """
from torch import nn

def build_mlp(input_shape, num_classes, dropout):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, WIDTH), nn.ACTIVATION(), nn.Linear(WIDTH, num_classes))
"""
REGISTER = """
from ltstudy.engine.registry import MODELS
MODELS.add("my-mlp", "mynets:build_mlp", "a 1-hidden-layer MLP")
"""


def write_mynets(folder: Path, activation: str = "ReLU", width: int = 32) -> None:
    """The README's example: the builder in mynets.py, registered with one call as the README shows."""
    (folder / "mynets.py").write_text(MYNETS.replace("ACTIVATION", activation).replace("WIDTH", str(width))
                                      + REGISTER)


def ticket_run(folder: Path, name: str) -> list[dict]:
    proc = ltstudy("ticket", "--plugin", "mynets", "--model", "my-mlp", "--dataset", "digits", "--iterations", "40",
                   "--eval-every", "20", "--rounds", "1", "--device", "cpu", "--cache-dir", "cache", "--json",
                   f"{name}.json", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads((folder / f"{name}.json").read_text())["rounds"]


def test_a_model_registered_as_the_readme_shows_runs_and_an_edit_never_returns_the_old_numbers(tmp_path):
    write_mynets(tmp_path)
    first = ticket_run(tmp_path, "relu")
    again = ticket_run(tmp_path, "relu-again")
    assert all(r["reused"] for r in again)  # the same code: the cache answers
    assert [r["val_loss"] for r in again] == [r["val_loss"] for r in first]

    write_mynets(tmp_path, activation="Tanh")  # ReLU -> Tanh: another network, another key
    tanh = ticket_run(tmp_path, "tanh")
    assert not any(r["reused"] for r in tanh)
    assert [r["val_loss"] for r in tanh] != [r["val_loss"] for r in first]

    write_mynets(tmp_path, activation="Tanh", width=48)  # another width: no crash, no stale weights loaded
    wider = ticket_run(tmp_path, "wider")
    assert not any(r["reused"] for r in wider)
    assert wider[0]["weights_remaining"] == 64 * 48 + 48 * 10 != tanh[0]["weights_remaining"]


def test_a_registration_without_metadata_gets_defaults_and_pairs_are_still_checked_in_one_line(monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    MODELS.add("plain", lambda shape, classes, dropout: torch.nn.Sequential(torch.nn.Flatten(),
                                                                             torch.nn.Linear(64, classes)))
    assert MODELS.get("plain").min_size == 1 and MODELS.get("plain").summary
    check_pair("plain", "digits")  # a user's model without min_size: any input size
    with pytest.raises(ConfigError, match=r"needs inputs of at least 16x16.*use .*plain"):
        check_pair("vgg-19", "digits")


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_it(tmp_path):
    proc = ltstudy("ticket", "--plugin", "no_such_module", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "cannot load plugin 'no_such_module'" in line


# --------------------------------------------------------------------------- a re-init and an objective of a test's own


class HalvedRewind(Reinit):
    """Rewind to θ_k with every weight halved."""

    rewinds = True
    resets: ClassVar[list[int]] = []

    def reset(self, model, start):
        HalvedRewind.resets.append(start.round)
        model.load_state_dict({k: v * 0.5 if k.endswith("weight") else v for k, v in start.theta_k().items()})


class MeanAccuracy(Objective):
    direction = "maximize"
    meaning = "mean validation accuracy over the rounds"
    prunable = False

    def value(self, rounds, epsilon, key="val_accuracy"):
        return sum(r[key] for r in rounds) / len(rounds)


@pytest.fixture
def registered(monkeypatch):
    """This file's strategy and objective, registered for the test only."""
    for reg in (REINITS, OBJECTIVES):
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    REINITS.add("halved-rewind", HalvedRewind)
    OBJECTIVES.add("mean_accuracy", MeanAccuracy)
    HalvedRewind.resets.clear()


def test_a_study_runs_a_reinit_strategy_and_an_objective_defined_outside_the_package(registered, tmp_path,
                                                                                    tmp_path_factory, monkeypatch):
    from ltstudy import cli

    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(tmp_path, stores, study={"sampler": "grid", "n_trials": 2,
                                                "objectives": ["ticket_sparsity", "mean_accuracy"]},
                       search={"prune_rate": 0.5, "rewind_iter": 20, "scope": "layerwise",
                               "reinit": ["rewind", "halved-rewind"], "rounds": 2})
    assert cli.main(["run", str(path), "--quiet"]) == 0
    trials = {t.params["reinit"]: t for t in stores.study().trials}
    assert {t.state.name for t in trials.values()} == {"COMPLETE"}
    assert HalvedRewind.resets == [1, 2]  # it reset rounds 1 and 2 of its trial, and nothing else
    for t in trials.values():
        rounds = t.user_attrs["rounds"]
        assert t.values[1] == pytest.approx(sum(r["val_accuracy"] for r in rounds) / len(rounds))
    own, rewind = trials["halved-rewind"].user_attrs["rounds"], trials["rewind"].user_attrs["rounds"]
    numbers = ("density", "val_loss", "val_accuracy", "test_accuracy", "early_stop_iteration")
    assert [own[0][k] for k in numbers] == [rewind[0][k] for k in numbers]  # the same dense round
    assert own[0]["reused"] != rewind[0]["reused"]  # (trained once, by whichever trial came first)
    assert own[1]["start_test_accuracy"] != rewind[1]["start_test_accuracy"]  # a start of its own
    with pytest.raises(ConfigError, match="unknown re-init strategy 'halved-rewnd'; did you mean 'halved-rewind'"):
        from ltstudy.study.config import load_study

        load_study(write_study(tmp_path, stores, filename="typo.toml", search={"reinit": "halved-rewnd"}))


# --------------------------------------------------------------------------- the README's example, end to end


def test_the_readmes_plugin_file_adds_a_model_a_dataset_a_strategy_and_an_objective_to_a_study_file(tmp_path):
    for name in ("myplugins.py", "my_study.toml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    proc = ltstudy("run", "my_study.toml", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ran 4 trials (4 COMPLETE)" in proc.stdout
    study = optuna.load_study(study_name="mine", storage=open_storage(f"journal:{tmp_path}/.ltstudy/optuna.journal"))
    settings = {(t.params["prune_rate"], t.params["reinit"]) for t in study.trials}
    assert settings == {(p, r) for p in (0.2, 0.5) for r in ("rewind", "scaled-rewind")}
    for t in study.trials:
        rounds = t.user_attrs["rounds"]
        assert rounds[0]["weights_remaining"] == 16 * 64 + 64 * 4  # my-mlp on blobs' 1x4x4 images, 4 classes
        assert t.values[1] == pytest.approx(sum(r["val_accuracy"] for r in rounds) / len(rounds))
        assert rounds[0]["val_accuracy"] > 0.5  # the blobs are learnable: far above chance (0.25)
    report = ltstudy("compare", "my_study.toml", "--by", "reinit", cwd=tmp_path)
    assert report.returncode == 0 and "mean_accuracy" in report.stdout


def test_an_installed_package_registers_through_the_ltstudy_plugins_entry_point(tmp_path, monkeypatch):
    (tmp_path / "pkg_plugin.py").write_text(textwrap.dedent("""
        from ltstudy.engine.registry import MODELS
        MODELS.add("from-an-entry-point", "pkg_plugin:build")
        def build(shape, classes, dropout):
            raise NotImplementedError
    """))
    dist = tmp_path / "pkg_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ltstudy.plugins]\nmine = pkg_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_INSTALLED", None)
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    assert "from-an-entry-point" in MODELS  # found on the first miss
