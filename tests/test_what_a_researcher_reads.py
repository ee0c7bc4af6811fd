"""What a researcher reads after a run: the run's summary, the report and `compare` say the same numbers the same
way, in the units the page names, and the cost line is true whatever the cache and stability added.

Synthetic trials (tests/report_helpers.py) with exactly known numbers; nothing is trained.
"""

from __future__ import annotations

import re

import optuna
import pytest

from ltstudy.cli.summary import cost_text, run_summary
from ltstudy.study.compare import compare, compare_text
from ltstudy.study.config import load_study
from ltstudy.study.report import build_report
from ltstudy.study.storage import open_storage
from tests.report_helpers import curve, make_trial
from tests.study_helpers import Stores, isolate, write_study

D = [1.0, 0.5, 0.25, 0.125]
EPS = 0.01


@pytest.fixture
def study_with_controls(tmp_path, monkeypatch):
    """(cfg, study): a study file whose tickets train beside random re-init, and an empty study for its trials."""
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    path = write_study(tmp_path, stores, study={"controls": ["random-reinit"]})
    study = optuna.create_study(study_name="tiny", storage=open_storage(stores.storage),
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["ticket_sparsity", "train_iterations"])
    return load_study(path), study


def one_seed_trial():
    """Seed 0's ticket matches dense down to 25% (round 2); its control is 3 points worse there, and only
    0.5 points worse at 50%: the number at the ticket's round is not the number at a grid density."""
    ticket = curve(D, [0.90, 0.90, 0.895, 0.80], test=None)
    control = curve(D, [0.90, 0.895, 0.86, 0.70])
    control[1]["test_accuracy_at_early_stop"] = ticket[1]["test_accuracy_at_early_stop"] - 0.005
    control[2]["test_accuracy_at_early_stop"] = ticket[2]["test_accuracy_at_early_stop"] - 0.03
    return make_trial(0, [ticket], values=[0.75, 400.0], controls={"random-reinit": [control]})


def test_ticket_minus_control_is_given_at_the_tickets_round_with_its_density_in_compare():
    cmp = compare([one_seed_trial()], [], EPS, searched=["prune_rate"], split="test")
    (gap,) = cmp.gaps
    assert gap["gap_at_ticket"] == pytest.approx(0.03) and gap["ticket_density"] == 0.25
    assert gap["gap_at_ticket_n"] == 1
    assert "random re-init  3.0 at 25%" in compare_text(cmp, "s")


def test_the_run_summary_and_the_report_give_the_same_gap_at_the_same_density(study_with_controls):
    """(The summary said 1.7 points at the ticket's round, the report 0.8 at 20% density, neither which density.)"""
    cfg, study = study_with_controls
    study.add_trial(one_seed_trial())
    summary = run_summary(study, cfg, [])
    report = build_report(study, cfg)
    recommendation = report[report.index("<h2>Recommendation</h2>"):report.index("<h2>Trial-level Pareto front")]
    row = next(line for line in summary.splitlines() if re.match(r"\s*0\s", line))  # trial 0 on the front
    assert re.search(r"\s3\.0 at 25%$", row)
    assert "random re-init 3.0 at 25%" in recommendation
    assert "at the ticket&#x27;s round" in recommendation and "0.5" not in recommendation


def test_the_pareto_tables_show_a_fraction_in_percent_as_the_page_says(study_with_controls):
    """(The report's trial-level front showed 0.8786 on a page that says accuracies are in %.)"""
    cfg, study = study_with_controls
    study.add_trial(one_seed_trial())
    report = build_report(study, cfg)
    front = report[report.index('<table id="pareto-trials">'):]
    front = front[:front.index("</table>")]
    assert "<th>ticket_sparsity %</th>" in front and '<td class="num">75.00</td>' in front
    assert '<td class="num">400</td>' in front  # (iterations are not a fraction)
    assert "0.75" not in front
    table = run_summary(study, cfg, []).splitlines()
    header = next(line for line in table if line.startswith("trial "))
    assert "ticket_sparsity %" in header and re.match(r"\s*0\s+75\.00\s+400\s", table[table.index(header) + 2])


def test_a_report_of_single_curves_says_n_is_1_once_and_prints_values(study_with_controls):
    """(Every cell read '98.6 ± —' or 'n/a (0)' when every trial had one seed.)"""
    cfg, study = study_with_controls
    study.add_trial(one_seed_trial())
    study.add_trial(make_trial(1, [curve(D[:2], [0.9, 0.85])], prune_rate=0.5, values=[0.0, 200.0],
                               controls={"random-reinit": [curve(D[:2], [0.9, 0.8])]}))
    report = build_report(study, cfg)
    body = report[report.index("<h2>Recommendation</h2>"):]
    assert "± —" not in body and "n/a (0)" not in body and "(n = 1)" not in body
    assert report.count("one trial, one seed") == 1


def test_a_report_with_several_seeds_keeps_its_spreads():
    trial = make_trial(0, [curve(D, [0.9, 0.9, 0.9, 0.8]), curve(D, [0.9, 0.9, 0.85, 0.8])])
    cmp = compare([trial], [], EPS, searched=["prune_rate"])
    assert not cmp.single and "± " in compare_text(cmp, "s")


# --------------------------------------------------------------------------- the cost line


def rnd(iterations, reused=False, copies=0, replay=0, measured=False):
    paths = [{"label": "ticket", "trained_iterations": copies}] if measured or copies else []
    return {"iterations": iterations, "reused": reused, "stability_paths": paths,
            "computed_iterations": (0 if reused else iterations) + copies + replay}


def test_the_cost_line_never_says_more_was_trained_here_than_the_total():
    """(A stability study said '7,040 trained here' of a 2,320 total: the copies were counted as rounds.)"""
    line = cost_text([("ticket", rnd(400, copies=800)), ("ticket", rnd(400, reused=True, copies=800)),
                      ("control: random re-init", rnd(400))])
    assert line == ("cost of this run: 1,200 training iterations of tickets and controls (800 trained here, 400 "
                    "from the cache); 1,600 more trained here for the stability copies")


def test_the_cost_line_names_only_what_ran_and_where_it_came_from():
    assert cost_text([("ticket", rnd(100)), ("ticket", rnd(100))]) == (
        "cost of this run: 200 training iterations of tickets (all trained here)")
    assert cost_text([("ticket", rnd(100, reused=True)), ("control: random mask", rnd(100, reused=True))]) == (
        "cost of this run: 200 training iterations of tickets and controls (all from the cache)")
    assert cost_text([("ticket", rnd(100, reused=True, measured=True)), ("ticket", rnd(100, replay=20))]) == (
        "cost of this run: 200 training iterations of tickets (100 trained here, 100 from the cache); the stability "
        "copies came from the cache; 20 more trained here to replay training up to the rewind point θ_k")
    assert cost_text([]) == ""


# --------------------------------------------------------------------------- `ticket`, the bars, the k axis, git


def test_a_ticket_table_marks_the_rounds_that_came_from_the_cache():
    """(A cached round showed the seconds of the run that trained it, as if trained again.)"""
    from ltstudy.engine.rounds import RoundResult
    from ltstudy.study.tables import round_table

    def rec(i, reused):
        return RoundResult(round=i, density=0.5 ** i, weights_remaining=100, val_loss=0.1, val_accuracy=0.9,
                           early_stop_iteration=10, test_accuracy=0.9, test_accuracy_at_early_stop=0.9,
                           train_loss=0.1, iterations=60, wall_seconds=1.25, reused=reused)

    lines = round_table([rec(0, True), rec(1, False)]).splitlines()
    assert lines[2].endswith("1.2500 (cached)") and lines[3].endswith("1.2500")
    assert lines[4].startswith("(cached): loaded from the cache, not trained here")
    assert "cached" not in round_table([rec(0, False)])


def test_the_trials_round_bar_counts_every_seeds_ticket_rounds_and_control_levels():
    """(It showed '2round': no total.)"""
    from ltstudy.cli.progress import StudyProgress
    from ltstudy.study.callbacks import StudyPlan

    with StudyProgress(None, True, per_round=True) as progress:
        progress.on_study_start(2, StudyPlan(trials=2, seeds=2, rounds=3, iterations=10, controls=2))
        progress.on_trial_start(0)
        assert progress.ticket.rounds.total == 2 * ((3 + 1) + 2 * 3)
        assert "0/20" in str(progress.ticket.rounds)


def stability(k, val, label="dense", density=1.0):
    from ltstudy.engine.connectivity import Stability

    return Stability(label, k, 0 if label == "dense" else 2, density, [0.0, 0.5, 1.0], [0.1, 0.1 + val, 0.1],
                     [0.1, 0.1 + val, 0.1], (0, 1))


@pytest.fixture
def stability_figures(monkeypatch):
    from ltstudy.study import stability_plots

    made = []
    monkeypatch.setattr(stability_plots, "save", lambda fig, path=None: made.append(fig))
    return made


@pytest.mark.parametrize("ks, scale", [((0, 20, 100), "linear"), ((0, 100, 2000), "symlog"),
                                       ((50, 500, 5000), "log")])
def test_instability_is_drawn_at_k_itself_so_distances_mean_iterations(stability_figures, ks, scale):
    """(k = 0, 20, 100 were spaced evenly: 20 iterations looked as far as 80.)"""
    from ltstudy.study.stability_plots import figure_dense_k, stability_figure
    from ltstudy.study.stability_summary import summarise
    from tests.report_helpers import rnd as record

    stability_figure([stability(k, 0.01 * i) for i, k in enumerate(ks)])
    curves = [type("C", (), {"rounds": [{**record(0, 1.0, 0.9), "stability_paths": [
        stability(k, 0.01 * i).to_dict() for i, k in enumerate(ks)]}]})()]
    figure_dense_k([("all", [s for s in summarise(curves) if s.label == "dense"])])
    for ax in (stability_figures[0].axes[0], stability_figures[1].axes[0]):
        assert ax.get_xscale() == scale
        assert next(tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) == 3) == ks
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in ks]
        assert ("log scale" in ax.get_xlabel()) == (scale != "linear")


def test_git_ignores_every_file_the_default_mlflow_store_leaves(tmp_path):
    """(`mlflow/mlflow.db.lock` showed in `git status` after the quickstart.)"""
    import shutil
    import subprocess
    from pathlib import Path

    from ltstudy.study.tracking import store_lock

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").write_bytes(b"")
    with store_lock(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"):
        pass
    made = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "mlflow").iterdir())
    assert "mlflow/mlflow.db.lock" in made
    for name in made:
        assert subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=root).returncode == 0, name


def test_with_two_seeds_the_dense_instability_is_also_logged_as_their_mean_by_repair_too():
    """(Only `seed_S/dense_val_instability` was in MLflow: every other metric has its mean unprefixed.)"""
    from ltstudy.study.mlflow_logging import StudyLog, dense_instability_means
    from ltstudy.study.mlflow_sync import _sync_rounds

    def seed(val0, val20):
        paths = [{"label": "dense", "k": k, "val_instability": v, "test_instability": v / 2}
                 for k, v in ((0, val0), (20, val20))]
        return [{**curve(D[:2], [0.9, 0.9])[0], "stability_paths": paths}, curve(D[:2], [0.9, 0.9])[1]]

    per_seed = [seed(0.08, 0.02), seed(0.04, 0.00)]
    means = dense_instability_means(per_seed)
    assert means == {0: {"dense_val_instability": pytest.approx(0.06), "dense_test_instability": pytest.approx(0.03)},
                     20: {"dense_val_instability": pytest.approx(0.01), "dense_test_instability": pytest.approx(0.005)}}

    class Tracker:  # what repair sees of MLflow: nothing logged yet
        uri = "memory"

        def __init__(self):
            self.logged: dict[str, dict[int, float]] = {}

        def logged_steps(self, run_id, key):
            return set(self.logged.get(key, {}))

        def log_metrics(self, run_id, values, step=0):
            for k, v in values.items():
                self.logged.setdefault(k, {})[step] = v

    tracker = Tracker()
    trial = make_trial(0, per_seed, seeds=[0, 1])
    _sync_rounds(StudyLog(tracker), "run", trial, [0, 1])
    assert tracker.logged["dense_val_instability"] == {0: pytest.approx(0.06), 20: pytest.approx(0.01)}
    assert tracker.logged["seed_1/dense_val_instability"] == {0: 0.04, 20: 0.0}
    live = Tracker()
    StudyLog(live).dense_means("run", per_seed)  # (what a trial logs when it ends)
    assert live.logged == {k: {step: means[step][k] for step in means} for k in means[0]}
