"""Extending ltstudy: a re-init strategy, a pruning-at-initialisation method (used as a control), an objective and a
per-round metric, each one class in one file of the user's, registered by one decorator, used from a study file.

The study runs in a fresh process, as a user runs it; the test then finds each class at work: the re-init's
rounds, the control's levels, the objective's value in Optuna, and the metric in MLflow, in `rounds.csv` and in
`ltstudy compare --metric`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from ltstudy.study.storage import open_storage
from tests.study_helpers import seed_mlflow_db
from tests.test_plugins import ltstudy

# The four files docs/extending.md shows, each one class (what a user writes).
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "extending"
PLUGINS = {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.py"))}


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    """The four plugin files and the study file that uses them, as docs/extending.md shows them, run once (2 trials:
    rewind and the plugin's re-init), with the stores in a fresh folder."""
    root = tmp_path_factory.mktemp("extending")
    assert sorted(PLUGINS) == ["halving.py", "meanacc.py", "scaledinit.py", "weightnorm.py"]
    for name, text in PLUGINS.items():
        (root / name).write_text(text)
    journal, store, cache = root / "optuna.journal", root / "mlflow.db", root / "cache"
    stores = f'[study]\nstorage = "journal:{journal}"\ntracking_uri = "sqlite:///{store}"\ncache_dir = "{cache}"\n'
    (root / "study.toml").write_text((EXAMPLES / "study.toml").read_text().replace("[study]\n", stores, 1))
    seed_mlflow_db(tmp_path_factory, root / "mlflow.db")
    proc = ltstudy("run", "study.toml", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "ran 2 trials (2 COMPLETE)" in proc.stdout
    return root


def trials(root: Path) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="mine", storage=open_storage(f"journal:{root / 'optuna.journal'}"))
    return {t.params["reinit"]: t for t in study.trials}


def test_the_users_reinit_strategy_resets_its_trials_rounds(extended):
    by = trials(extended)
    own, rewind = by["halved-rewind"].user_attrs["rounds"], by["rewind"].user_attrs["rounds"]
    assert own[0]["val_loss"] == rewind[0]["val_loss"]  # the same dense round
    assert [r["start_test_accuracy"] for r in own[1:]] != [r["start_test_accuracy"] for r in rewind[1:]]
    assert by["halved-rewind"].user_attrs["params_all"]["reinit"] == "halved-rewind"


def test_the_users_pruning_at_init_method_trains_as_a_control_at_every_level_of_every_ticket(extended):
    for t in trials(extended).values():
        assert t.user_attrs["controls"] == {"scaled-magnitude": "control: scaled magnitude"}
        (levels,) = t.user_attrs["controls_per_seed"]["scaled-magnitude"]
        ticket = t.user_attrs["rounds"]
        assert [lv["round"] for lv in levels] == [0, 1, 2]  # the ticket's dense round, then its own levels
        assert [lv["density"] for lv in levels] == [r["density"] for r in ticket]  # at the ticket's densities
        assert [lv["val_accuracy"] for lv in levels[1:]] != [r["val_accuracy"] for r in ticket[1:]]


def test_the_users_objective_is_the_trials_second_value_in_optuna(extended):
    for t in trials(extended).values():
        rounds = t.user_attrs["rounds"]
        assert t.values[1] == pytest.approx(sum(r["val_accuracy"] for r in rounds) / len(rounds))


def test_the_users_metric_is_in_every_round_in_mlflow_and_in_rounds_csv(extended):
    client = MlflowClient(tracking_uri=f"sqlite:///{extended / 'mlflow.db'}")
    for t in trials(extended).values():
        rounds, (levels,) = t.user_attrs["rounds"], t.user_attrs["controls_per_seed"]["scaled-magnitude"]
        norms = [r["weight_norm"] for r in rounds]
        assert all(n > 0 for n in norms) and len(set(norms)) == 3 and levels[1]["weight_norm"] != norms[1]
        run_id = t.user_attrs["mlflow_run_id"]
        history = client.get_metric_history(run_id, "weight_norm")
        assert sorted((m.step, m.value) for m in history) == [(i, pytest.approx(n)) for i, n in enumerate(norms)]
        control = client.get_metric_history(run_id, "control/scaled-magnitude/weight_norm")
        assert sorted((m.step, m.value) for m in control) == [(i, pytest.approx(lv["weight_norm"]))
                                                               for i, lv in enumerate(levels) if i > 0]
        path = client.download_artifacts(run_id, "rounds.csv", str(extended / f"artifacts-{t.number}"))
        rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
        assert [float(r["weight_norm"]) for r in rows] == pytest.approx(norms)


def test_compare_shows_the_users_metric_at_each_ticket_and_lists_the_metrics_for_an_unknown_name(extended):
    proc = ltstudy("compare", "study.toml", "--by", "reinit", "--metric", "weight_norm", "--json", "c.json",
                   cwd=extended)
    assert proc.returncode == 0, proc.stderr
    assert "ticket weight_norm" in proc.stdout
    doc = json.loads((extended / "c.json").read_text())
    by = trials(extended)
    for row in (r for r in doc["rows"] if r["kind"] == "ticket"):
        (curve,) = row["curves"]
        ticket = by[row["reinit"]].user_attrs["rounds"][curve["ticket_round"]]
        assert row["ticket_weight_norm"] == pytest.approx(ticket["weight_norm"]) and row["ticket_weight_norm_n"] == 1
    wrong = ltstudy("compare", "study.toml", "--metric", "weight_nrom", cwd=extended)
    assert wrong.returncode == 2
    (line,) = wrong.stderr.strip().splitlines()
    assert "--metric weight_nrom" in line and "weight_norm" in line and "compression_ratio" in line


def test_the_report_shows_the_users_metric_at_each_ticket(extended):
    proc = ltstudy("report", "study.toml", "--out", "report.html", cwd=extended)
    assert proc.returncode == 0, proc.stderr
    html = (extended / "report.html").read_text()
    section = html.split("<h2>Round metrics at the ticket</h2>")[1].split("<h2>")[0]
    headers = section.split("<thead>")[1].split("</thead>")[0]
    assert "<th>weight norm</th>" in headers and "<th>compression ratio</th>" in headers
    own = trials(extended)["halved-rewind"].user_attrs["rounds"]
    assert any(f"{r['weight_norm']:.4g}" in section for r in own)  # (the ticket's round: one of the curve's)
