"""Numbers pinned before the engine was reshaped: the same configs must keep giving the same bits.

`tests/pins/pinned_rounds.json` holds, for a set of ticket searches that together take every
path of the engine (each re-init strategy, both masks, global and layer-wise scope, one-shot,
dropout, SGD with Nesterov and weight decay, patience, a conv net on the autograd step, and a
pack of four trained side by side), every number of every round as a float's hex. It was
written by the code as it stood on 2026-12-01 before the redesign of issue 12
(`python -m tests.test_pinned_numbers --write`); a change that moves any bit fails here.
The redesigned code matched those pins bit for bit up to commit 54db274. They were
re-written from that code on 2026-12-02 with MKL's reproducibility mode on, after a
move to another AVX-512 CPU showed that MKL's GEMMs choose their kernels by CPU model.

Bits depend on the CPU's vector kernels too: the pins were written with torch's
AVX2 kernels, oneDNN capped at AVX2 and MKL in its AVX2 reproducibility mode
(MKL_CBWR=AVX2,STRICT), which tox.ini asks for on any x86 CPU. Elsewhere they
are skipped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ltstudy.engine.config import DataConfig, TicketConfig
from ltstudy.engine.data import load_dataset

PINNED = Path(__file__).parent / "pins" / "pinned_rounds.json"

pytestmark = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX2" or os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2"
    or os.environ.get("MKL_CBWR") != "AVX2,STRICT",
    reason="the pins were written with AVX2 kernels: run under tox, which sets ATEN_CPU_CAPABILITY=avx2, "
           "ONEDNN_MAX_CPU_ISA=AVX2 and MKL_CBWR=AVX2,STRICT (an x86 CPU with AVX2 is needed)")

BASE = {"seed": 3, "device": "cpu", "data": {"name": "digits"}, "model": {"name": "lenet-300-100"},
        "train": {"iterations": 120, "eval_every": 20, "batch_size": 60}, "prune": {"rounds": 3, "prune_rate": 0.3}}

CASES: dict[str, dict[str, Any]] = {
    "rewind-k0-layerwise": {},
    "rewind-k20-global-output": {"prune.rewind_iter": 20, "prune.scope": "global", "prune.output_rate": 0.5},
    "finetune-k20": {"prune.reinit": "finetune", "prune.rewind_iter": 20},
    "lr-rewind-k20-schedule": {"prune.reinit": "lr-rewind", "prune.rewind_iter": 20, "train.warmup": 10,
                               "train.milestones": [60, 100], "train.gamma": 0.3},
    "random-reinit": {"prune.reinit": "random"},
    "random-mask-k20": {"prune.mask": "random", "prune.rewind_iter": 20},
    "random-both": {"prune.reinit": "random", "prune.mask": "random"},
    "one-shot": {"prune.one_shot": True, "prune.target_density": 0.3},
    "dropout-sgd-nesterov-wd": {"model.dropout": 0.2, "train.optimizer": "sgd", "train.lr": 0.05,
                                "train.momentum": 0.9, "train.nesterov": True, "train.weight_decay": 1e-4},
    "patience": {"train.patience": 2, "train.iterations": 200},
    "conv2-k20": {"model.name": "conv-2", "prune.rewind_iter": 20, "train.iterations": 60, "prune.rounds": 2},
}
PACKED = ["rewind-k0-layerwise", "finetune-k20", "random-mask-k20", "dropout-sgd-nesterov-wd"]
FIELDS = ("round", "density", "weights_remaining", "val_loss", "val_accuracy", "early_stop_iteration",
          "test_accuracy", "test_accuracy_at_early_stop", "train_loss", "iterations", "start_test_accuracy",
          "layer_density", "stopped_early")


def config(name: str) -> TicketConfig:
    return TicketConfig.from_dict(BASE).replace(CASES[name])


def encode(value: Any) -> Any:
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def rounds_of(records) -> list[dict[str, Any]]:
    return [{k: encode(getattr(r, k)) for k in FIELDS} for r in records]


def solo(name: str, data) -> list[dict[str, Any]]:
    from ltstudy.engine.drivers import drive
    from ltstudy.engine.searches import ticket_search

    return rounds_of(drive(ticket_search(config(name), data)).rounds)


def packed(data) -> dict[str, list[dict[str, Any]]]:
    from ltstudy.engine.drivers import run_packed
    from ltstudy.engine.searches import ticket_search

    results = run_packed([ticket_search(config(n), data) for n in PACKED], capacity=4)
    return {n: rounds_of(r.rounds) for n, r in zip(PACKED, results, strict=True)}


STUDY = {"study": {"name": "pin", "sampler": "grid", "seed": 0, "n_trials": 4, "replicates": 2, "device": "cpu",
                   "objectives": ["ticket_sparsity", "ticket_accuracy", "train_iterations"]},
         "data": {"name": "digits"}, "model": {"name": "lenet-300-100"},
         "train": {"iterations": 60, "eval_every": 20, "batch_size": 60},
         "search": {"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "rounds": 2}}
# The pins were written when the control was a searched setting (reinit = ["rewind", "random"]); it now runs
# beside every ticket ([study] controls), and its curve must give the values its own trial gave then.
STUDY["study"]["controls"] = ["random-reinit"]


def study_values(root: Path) -> dict[str, Any]:
    """Run STUDY in `root` through the command line; {settings: objective values} of its tickets and controls."""
    import optuna

    from ltstudy import cli
    from ltstudy.study.config import load_study
    from ltstudy.study.objectives.base import trial_value
    from ltstudy.study.storage import open_storage
    from tests.study_helpers import to_toml

    path = root / "pin.toml"
    doc = json.loads(json.dumps(STUDY))
    doc["study"].update(storage=f"journal:{root / 'optuna.journal'}", tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                        cache_dir=str(root / "cache"))
    path.write_text(to_toml(doc))
    assert cli.main(["run", str(path), "--quiet"]) == 0
    study = optuna.load_study(study_name="pin", storage=open_storage(f"journal:{root / 'optuna.journal'}"))
    cfg = load_study(path)
    eps = cfg.study.epsilon

    def key(params: dict, reinit: str) -> str:  # (keyed as the pins were written: the settings, sorted by name)
        return json.dumps(dict(sorted({**params, "reinit": reinit}.items())))

    out = {}
    for t in study.get_trials():
        if t.values:
            out[key(t.params, "rewind")] = [encode(v) for v in t.values]
            control = t.user_attrs["controls_per_seed"]["random-reinit"]
            out[key(t.params, "random")] = [encode(trial_value(o, control, eps)) for o in cfg.objectives]
    return out


@pytest.fixture(scope="module")
def pinned() -> dict[str, Any]:
    return json.loads(PINNED.read_text())


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(name="digits"), "cpu")


@pytest.mark.parametrize("name", list(CASES))
def test_a_ticket_search_gives_the_numbers_pinned_before_the_redesign(name: str, pinned, data):
    assert solo(name, data) == pinned["solo"][name]


def test_a_pack_of_four_gives_the_numbers_pinned_before_the_redesign(pinned, data):
    got = packed(data)
    for name in PACKED:
        assert got[name] == pinned["packed"][name], name
        assert got[name] == pinned["solo"][name], name  # and packing changes no bit


def test_a_small_study_gives_the_objective_values_pinned_before_the_redesign(pinned, tmp_path: Path, monkeypatch):
    from tests.study_helpers import isolate

    isolate(monkeypatch, tmp_path)
    assert study_values(tmp_path) == pinned["study"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    torch.set_num_threads(1)
    d = load_dataset(DataConfig(name="digits"), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        values = study_values(Path(tmp))
    doc = {"solo": {n: solo(n, d) for n in CASES}, "packed": packed(d), "study": values}
    PINNED.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {PINNED}")
