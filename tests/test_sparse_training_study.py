"""Sparse-training baselines in a study: `[study] controls = ["static", "set", "rigl"]` trains them beside every
ticket, and `compare`, `pareto`, the report and MLflow show each one beside the ticket at the ticket's densities,
with its spread over seeds; `ltstudy ticket --control rigl` runs one alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltstudy import cli
from ltstudy.study.compare import compare, compare_text
from ltstudy.study.config import load_study
from ltstudy.study.report import build_report
from tests.study_helpers import parent_and_children, run_quiet, seeded_stores, write_study

KINDS = {"static": "control: static sparse", "set": "control: SET", "rigl": "control: RigL"}


@pytest.fixture
def dst_study(tmp_path: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch):
    stores = seeded_stores(monkeypatch, tmp_path, tmp_path_factory)
    path = write_study(tmp_path, stores, study={"n_trials": 1, "replicates": 2, "sampler": "grid",
                                                "controls": list(KINDS)},
                       train={"iterations": 40, "eval_every": 20}, sparse_training={"update_every": 10},
                       search={"prune_rate": [0.5], "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                               "rounds": 2})
    assert run_quiet(path) == 0
    return stores, path


def test_compare_pareto_the_report_and_mlflow_show_each_baseline_beside_the_ticket_with_its_spread(dst_study,
                                                                                                   capsys):
    stores, path = dst_study
    cfg = load_study(path)
    study = stores.study()
    cmp = compare(study.get_trials(), [], cfg.study.epsilon, searched=["prune_rate"], split="test")
    gaps = {g["control"]: g for g in cmp.gaps}
    assert set(gaps) == set(KINDS.values())
    for gap in gaps.values():  # at the ticket's own round, so the same density, over both seeds
        assert gap["gap_at_ticket_n"] == 2 and gap["ticket_density"] in (0.5, 0.25)
    text = compare_text(cmp, "s")
    for kind in KINDS.values():
        assert kind in text
    capsys.readouterr()
    assert cli.main(["pareto", str(path)]) == 0
    front = capsys.readouterr().out
    assert all(f"vs {name}" in front for name in KINDS) and " ± " in front
    report = build_report(study, cfg)
    assert all(kind.removeprefix("control: ") in report for kind in KINDS.values())
    _, (child,) = parent_and_children(stores.client(), "tiny")
    for name in KINDS:
        history = stores.client().get_metric_history(child.info.run_id, f"seed_1/control/{name}/val_accuracy")
        assert [m.step for m in history] == [1, 2]


def test_ticket_control_rigl_runs_alone_at_the_tickets_densities(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--dataset", "digits", "--device", "cpu", "--iterations", "40", "--eval-every", "20", "--rounds", "2",
             "--update-every", "10", "--quiet"]
    assert cli.main(["ticket", *flags, "--control", "rigl", "--json", "rigl.json"]) == 0
    assert cli.main(["ticket", *flags, "--json", "ticket.json"]) == 0
    rigl, ticket = (json.loads(Path(f).read_text()) for f in ("rigl.json", "ticket.json"))
    assert rigl["kind"] == "control"
    assert [r["weights_remaining"] for r in rigl["rounds"]] == [r["weights_remaining"] for r in ticket["rounds"]]
    # (a loss, not an accuracy: on 359 test digits two different networks can get the same count right)
    assert rigl["rounds"][1]["val_loss"] != ticket["rounds"][1]["val_loss"]
    capsys.readouterr()
    assert cli.main(["ticket", *flags, "--control", "rigl", "--drop-fraction", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "sparse_training.drop_fraction must be in (0, 1)" in err and "\n" not in err
