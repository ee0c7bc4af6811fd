"""`compare` on synthetic trials with known numbers: rows, n, interpolation, the objective, the Welch note."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scipy.stats import ttest_ind

from ltstudy import cli
from ltstudy.study.compare import compare, compare_table, compare_text, metric_key, round_numbers
from ltstudy.study.curves import interpolate, ticket_round
from ltstudy.study.objectives import parse_objective
from ltstudy.study.stats import Stat
from ltstudy.study.trial_results import collect
from tests.report_helpers import curve, make_trial
from tests.study_helpers import Stores, isolate, write_study

EPS = 0.01
D = [1.0, 0.5, 0.25, 0.125]


def ticket_at(index: int, depth: int = len(D)) -> list[dict]:
    """A seed whose ticket (sparsest round within ε of dense) is round `index`: later rounds drop 10 points."""
    return curve(D[:depth], [0.90 if i <= index else 0.80 for i in range(depth)])


def row(cmp, **settings):
    (found,) = [r for r in cmp.rows if all(r[k] == v for k, v in settings.items())]
    return found


# --------------------------------------------------------------------------- interpolation and n


def test_accuracy_at_a_grid_density_is_interpolated_linearly_in_log_density_within_the_curve():
    rounds = curve([1.0, 0.4, 0.16, 0.1], [0.90, 0.80, 0.70, 0.60])
    cmp = compare([make_trial(0, [rounds])], ["prune_rate"], EPS, density=0.3)
    r = cmp.rows[0]
    assert cmp.grid == [1.0, 0.5, 0.3, 0.2, 0.1]  # readable densities the curve reaches, plus --density
    assert r["accuracy_at_1"] == 0.90 and r["accuracy_at_0.1"] == 0.60  # rounds exactly on the grid
    assert r["accuracy_at_0.2"] == pytest.approx(0.70 + 0.10 * math.log(0.2 / 0.16) / math.log(0.4 / 0.16))
    assert r["accuracy_at_0.5"] == pytest.approx(0.90 - 0.10 * math.log(0.5) / math.log(0.4))
    assert r["accuracy_at_0.3"] == pytest.approx(0.80 - 0.10 * math.log(0.3 / 0.4) / math.log(0.16 / 0.4))
    assert interpolate(rounds, 0.05, "val_accuracy") is None  # never extrapolated below the sparsest round
    assert interpolate(rounds, 1.2, "val_accuracy") is None


def test_split_test_reads_test_accuracy_at_the_early_stop_iteration_not_at_the_end():
    rounds = curve([1.0, 0.5], [0.90, 0.88], test=0.85, test_end=0.70)
    cmp = compare([make_trial(0, [rounds])], ["prune_rate"], EPS, split="test")
    assert cmp.rows[0]["accuracy_at_0.5"] == 0.85 and cmp.rows[0]["ticket_accuracy"] == 0.85
    assert "test accuracy at the early-stop iteration" in compare_text(cmp, "s")


def test_columns_that_interpolate_count_only_the_curves_that_reach_that_density():
    deep, shallow = ticket_at(1), ticket_at(1, depth=2)  # the second seed stopped at 50% density
    cmp = compare([make_trial(0, [deep, shallow])], ["prune_rate"], EPS)
    r = cmp.rows[0]
    assert r["n"] == 2
    assert r["accuracy_at_0.5_n"] == 2 and r["accuracy_at_0.2_n"] == 1
    assert r["accuracy_at_0.2_std"] is None
    table = compare_table(cmp)
    assert "80.0 ± — (1)" in table  # the 20% column: one curve got there
    assert "90.0 ± 0.0 (2)" in table  # the 50% column: both did, and agree


def test_n_of_one_shows_a_dash_for_the_spread_never_zero():
    assert Stat.of([0.5]).text() == "50.0 ± — (1)"
    assert Stat.of([0.5, 0.7]).text() == "60.0 ± 14.1 (2)"
    assert Stat.of([None]).text() == "n/a (0)"
    cmp = compare([make_trial(0, [ticket_at(2)]), make_trial(1, [ticket_at(1), ticket_at(3)], prune_rate=0.5)],
                  ["prune_rate"], EPS)
    one = next(line for line in compare_table(cmp).splitlines() if line.startswith("0.2 "))
    assert "75.0 ± — (1)" in one and "± 0.0" not in one


def test_a_table_whose_every_row_is_one_curve_gives_values_and_says_so_once():
    """(The quickstart's tables printed '± — (1)' and 'n/a (0)' in every cell.)"""
    cmp = compare([make_trial(0, [ticket_at(2)]), make_trial(1, [ticket_at(1)], prune_rate=0.5)], ["prune_rate"], EPS)
    text = compare_text(cmp, "s")
    assert cmp.single and "±" not in compare_table(cmp) and "(0)" not in compare_table(cmp)
    assert text.count("Every row rests on one curve (one trial, one seed: n = 1)") == 1
    row = next(line for line in compare_table(cmp).splitlines() if line.startswith("0.2 "))
    assert row.split()[2:4] == ["75.0", "90.0"]  # ticket sparsity and accuracy, as values


# --------------------------------------------------------------------------- what is (never) averaged


def test_tickets_and_controls_are_never_in_one_row_even_when_reinit_is_not_searched():
    trials = [make_trial(0, [ticket_at(2)]), make_trial(1, [ticket_at(1)], reinit="random"),
              make_trial(2, [ticket_at(0)], mask="random")]
    cmp = compare(trials, ["prune_rate"], EPS, searched=["prune_rate"])
    assert [r["kind"] for r in cmp.rows] == ["control: random re-init", "ticket", "control: random mask"]
    assert len(cmp.rows) == 3 and all(r["n"] == 1 for r in cmp.rows)
    assert set(cmp.context) == {"reinit", "mask"}  # settings that vary are context even if not searched


def test_a_continuous_range_is_binned_however_few_trials_drew_from_it_and_a_list_never_is():
    """(Three draws of p used to be three rows headed 0.11010919872016287, ...: more than 6 levels were needed.)"""
    drawn = [make_trial(i, [ticket_at(i)], prune_rate=p) for i, p in enumerate((0.11010919872016287, 0.3118273,
                                                                                 0.5818313802505146))]
    rows = compare(drawn, ["prune_rate"], EPS, searched=["prune_rate"]).rows
    assert [str(r["prune_rate"]) for r in rows] == ["0.11–0.31", "0.31–0.58"]
    assert [r["n"] for r in rows] == [1, 2]  # quantile bins, half-open but the last
    listed = [make_trial(i, [ticket_at(i)], prune_rate=p) for i, p in enumerate((0.2, 0.5, 0.2))]
    assert sorted(r["prune_rate"] for r in compare(listed, ["prune_rate"], EPS, searched=["prune_rate"]).rows) == [
        0.2, 0.5]


def test_trials_that_differ_in_a_searched_setting_outside_by_are_separate_rows():
    trials = [make_trial(0, [ticket_at(2)]), make_trial(1, [ticket_at(1)], scope="global")]
    cmp = compare(trials, ["prune_rate"], EPS, searched=["prune_rate", "scope", "rewind_iter"])
    assert cmp.context == ["rewind_iter", "scope"]
    assert sorted(r["scope"] for r in cmp.rows) == ["global", "layerwise"]
    assert [r["n"] for r in cmp.rows] == [1, 1]


def test_a_trial_with_several_seeds_gives_one_curve_per_seed():
    cmp = compare([make_trial(0, [ticket_at(1), ticket_at(2), ticket_at(3)], seeds=[5, 6, 7])], ["prune_rate"], EPS)
    r = cmp.rows[0]
    assert r["n"] == 3 and r["seeds"] == ["5", "6", "7"] and r["trials"] == [0]
    assert r["ticket_sparsity"] == pytest.approx((0.5 + 0.75 + 0.875) / 3)
    assert r["ticket_sparsity_std"] == pytest.approx(Stat.of([0.5, 0.75, 0.875]).std)


def test_two_trials_with_the_same_settings_and_seed_are_one_curve_not_two():
    trials = [make_trial(0, [ticket_at(2)], seeds=[0]), make_trial(1, [ticket_at(2)], seeds=[0]),
              make_trial(2, [ticket_at(1)], seeds=[1])]
    cmp = compare(trials, ["prune_rate"], EPS)
    assert cmp.rows[0]["n"] == 2 and cmp.rows[0]["trials"] == [0, 2]
    assert cmp.repeats == [(1, 0)]
    assert "trial 1 = trial 0" in compare_text(cmp, "s")


def test_diverged_and_failed_trials_are_counted_but_never_averaged():
    good = make_trial(0, [ticket_at(1)], seeds=[0])
    diverged = make_trial(1, [ticket_at(3)], seeds=[1])
    diverged.user_attrs["diverged"] = True
    failed = make_trial(2, [ticket_at(3)], seeds=[2], state=TrialState.FAIL)
    cmp = compare([good, diverged, failed], ["prune_rate"], EPS)
    assert [r["trials"] for r in cmp.rows] == [[0]] and cmp.rows[0]["ticket_sparsity"] == 0.5
    assert cmp.excluded == {"diverged": [1], "failed": [2]}
    assert "not averaged: diverged trials 1; failed trials 2" in compare_text(cmp, "s")


def test_a_trial_is_classified_once_by_one_ladder_that_the_counts_and_the_exclusions_share():
    """A diverged trial is "diverged" whatever its state; a pruned trial without rounds is counted as pruned and
    left out of the curves as having none; a queued one is running."""
    from ltstudy.study.trial_results import census, exclusion, outcome

    diverged_pruned = make_trial(0, [ticket_at(1)], state=TrialState.PRUNED)
    diverged_pruned.user_attrs["diverged"] = True
    empty = make_trial(1, [ticket_at(1)], state=TrialState.PRUNED)
    empty.user_attrs["rounds"] = []
    queued = make_trial(2, [ticket_at(1)], state=TrialState.WAITING)
    done = make_trial(3, [ticket_at(1)])
    trials = [diverged_pruned, empty, queued, done]
    assert [outcome(t) for t in trials] == ["diverged", "pruned", "running", "complete"]
    assert [exclusion(t) for t in trials] == ["diverged", "no rounds", "running", None]
    assert census(trials) == {"complete": [3], "pruned": [1], "diverged": [0], "failed": [], "running": [2]}


# --------------------------------------------------------------------------- agreement with the objective


def test_ticket_sparsity_is_the_mean_of_per_seed_tickets_as_the_objective_computes_it():
    # Seed 0 holds dense accuracy to 50%, seed 1 to 25%; their mean curve drops below dense - ε at once.
    seed0 = curve(D[:3], [0.90, 0.895, 0.85])
    seed1 = curve(D[:3], [0.90, 0.85, 0.895])
    trial = make_trial(0, [seed0, seed1])
    objective = parse_objective("ticket_sparsity")
    expected = (objective.value(seed0, EPS) + objective.value(seed1, EPS)) / 2  # what the runner stores
    assert expected == pytest.approx(0.625)
    mean_curve_ticket = 1 - ticket_round(trial.user_attrs["rounds"], EPS)["density"]
    assert mean_curve_ticket == 0.0  # the old report's answer
    r = compare([trial], ["prune_rate"], EPS).rows[0]
    assert r["ticket_sparsity"] == pytest.approx(expected)
    assert [c["ticket_round"] for c in r["curves"]] == [1, 2]


def test_an_old_trial_without_per_seed_rounds_is_one_curve_and_says_so():
    trial = make_trial(0, [ticket_at(1), ticket_at(2)], per_seed_attr=False)
    cmp = compare([trial], ["prune_rate"], EPS)
    assert cmp.rows[0]["n"] == 1 and cmp.rows[0]["seeds"] == ["(0, 1)"]
    assert "trials 0 stored only their mean over seeds" in compare_text(cmp, "s")


# --------------------------------------------------------------------------- is the difference real?

A_SEEDS = [1, 2, 2]  # ticket rounds: sparsity 0.5, 0.75, 0.75
B_SEEDS = [2, 1, 3]  # 0.75, 0.5, 0.875


def welch_trials(a=A_SEEDS, b=B_SEEDS):
    return [make_trial(0, [ticket_at(i) for i in a], prune_rate=0.2),
            make_trial(1, [ticket_at(i) for i in b], prune_rate=0.5),
            make_trial(2, [ticket_at(3)], prune_rate=0.2, rewind_iter=20)]  # another context: no partner


def test_rows_that_differ_only_in_the_compared_setting_get_a_welch_note():
    cmp = compare(welch_trials(), ["prune_rate"], EPS, searched=["prune_rate", "rewind_iter"])
    (note,) = cmp.notes
    p = ttest_ind([1 - D[i] for i in A_SEEDS], [1 - D[i] for i in B_SEEDS], equal_var=False).pvalue
    assert note["p"] == pytest.approx(p) and p >= 0.05
    assert note["text"] == f"tickets p=0.2 vs p=0.5 (k=0): ticket sparsity not distinguishable at n = 3 (p = {p:.2g})"
    assert f"  {note['text']}" in compare_text(cmp, "s").splitlines()


def test_each_note_names_its_kind_so_a_control_pair_never_reads_as_a_ticket_pair():
    """(A control's pair has its ticket's settings: the quickstart printed each line two or three times.)"""
    def trial(number, p, seeds):
        return make_trial(number, [ticket_at(i) for i in seeds], prune_rate=p,
                          controls={"random-reinit": [ticket_at(1)] * 3, "random-mask": [ticket_at(2)] * 3})

    cmp = compare([trial(0, 0.2, A_SEEDS), trial(1, 0.5, B_SEEDS)], ["prune_rate"], EPS, searched=["prune_rate"])
    texts = [n["text"] for n in cmp.notes]
    assert len(texts) == 3 and len(set(texts)) == 3
    assert [t.split(" p=")[0] for t in texts] == ["tickets", "random mask controls", "random re-init controls"]
    assert [n["kind"] for n in cmp.notes] == ["ticket", "control: random mask", "control: random re-init"]
    printed = compare_text(cmp, "s").splitlines()
    assert all(f"  {t}" in printed for t in texts)


def test_pairs_without_spread_are_counted_in_one_line_not_listed():
    trials = [make_trial(i, [ticket_at(1 + i % 3)], prune_rate=p, rewind_iter=k,
                         controls={"random-reinit": [ticket_at(1)]})
              for i, (p, k) in enumerate([(0.2, 0), (0.5, 0), (0.2, 20), (0.5, 20)])]
    cmp = compare(trials, ["prune_rate", "rewind_iter"], EPS, searched=["prune_rate", "rewind_iter"])
    assert len(cmp.notes) == 12 and all(n["p"] is None for n in cmp.notes)
    text = compare_text(cmp, "s")
    assert "not distinguishable" not in text
    (line,) = [ln for ln in text.splitlines() if "can be tested" in ln]
    assert line.startswith("No pair of rows can be tested: the 12 pairs (6 of tickets, 6 of random re-init controls)")


def test_a_clear_difference_is_reported_as_one():
    cmp = compare(welch_trials(a=[1, 1, 1], b=[3, 3, 2]), ["prune_rate"], EPS, searched=["prune_rate"])
    (note,) = cmp.notes
    assert note["distinguishable"] and note["p"] < 0.05
    assert "ticket sparsity differ at n = 3 (p = " in note["text"]


def test_one_curve_on_either_side_is_never_distinguishable():
    cmp = compare(welch_trials(a=[1], b=[3, 3, 2]), ["prune_rate"], EPS, searched=["prune_rate"])
    (note,) = cmp.notes
    assert note["p"] is None and not note["distinguishable"]
    assert note["text"].endswith("not distinguishable at n = 1 and 3 (no seed-to-seed spread to test against)")


# --------------------------------------------------------------------------- the command


@pytest.fixture
def synthetic_study(tmp_path, monkeypatch):
    """A study file and a journal holding the Welch trials (nothing trained)."""
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    path = write_study(tmp_path, stores, search={"reinit": None, "scope": None, "rewind_iter": [0, 20]})
    from ltstudy.study.storage import open_storage

    study = optuna.create_study(study_name="tiny", storage=open_storage(stores.storage),
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["ticket_sparsity", "train_iterations"])
    for t in welch_trials():
        study.add_trial(t)
    return path


def test_compare_command_prints_the_note_and_writes_json(synthetic_study, capsys):
    code = cli.main(["compare", str(synthetic_study), "--by", "prune_rate", "--json", "c.json"])
    out = capsys.readouterr().out
    assert code == 0
    assert "p=0.2 vs p=0.5 (k=0): ticket sparsity not distinguishable at n = 3 (p = " in out
    assert "Welch's t-test" in out and "wrote c.json" in out.splitlines()
    import json

    doc = json.loads(Path("c.json").read_text())
    assert doc["split"] == "val" and doc["grid"] == [1.0, 0.5, 0.2]
    assert [r["n"] for r in doc["rows"]] == [3, 1, 3]


def test_tables_statistics_and_plots_work_without_importing_torch(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from tests.report_helpers import curve, make_trial
from ltstudy.study import compare, compare_plots, frontier, plots, report
trials = [make_trial(0, [curve([1.0, 0.5, 0.25], [0.9, 0.9, 0.8])] * 2, seeds=[0, 1], kind="ticket"),
          make_trial(1, [curve([1.0, 0.5, 0.25], [0.9, 0.85, 0.8])], reinit="random", kind="control: random re-init")]
print(compare.compare_text(compare.compare(trials, ["reinit"], 0.01, 0.2), "s"))
compare_plots.plot_compare(trials, ["reinit"], {str(tmp_path / "c.png")!r}, epsilon=0.01)
plots.plot_pareto(trials, frontier.round_frontier(trials), {str(tmp_path / "p.png")!r}, epsilon=0.01)
assert "matplotlib" in sys.modules and "scipy" in sys.modules
print("TORCH", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:3])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH []" in out.splitlines()
    assert (tmp_path / "c.png").stat().st_size > 1000


# --------------------------------------------------------------------------- figures


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions make, instead of files."""
    from ltstudy.study import plots

    made = []
    monkeypatch.setattr(plots, "save", lambda fig, path=None: made.append(fig))
    return made


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_density_axes_are_log_inverted_and_labelled_at_readable_densities(figures):
    from ltstudy.study.compare_plots import plot_compare

    plot_compare(welch_trials(), ["prune_rate"], None, epsilon=EPS)
    (ax,) = figures[0].axes
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 1.0 > right  # dense on the left
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100%", "50%", "20%", "10%"]
    assert "test accuracy at early stop" in ax.get_ylabel() and "95% t-interval" in ax.get_ylabel()


def test_compare_plot_has_one_curve_per_row_with_n_and_a_dense_line_with_its_epsilon_band(figures):
    from ltstudy.study.compare_plots import plot_compare

    plot_compare(welch_trials(), ["prune_rate"], None, epsilon=EPS, searched=["prune_rate", "rewind_iter"])
    (fig,) = figures
    (ax,) = fig.axes
    assert len(curves_of(ax)) == 3  # p=0.2 k=0, p=0.2 k=20, p=0.5 k=0
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["p=0.2", "p=0.5", "k=0", "k=20", "dense (round 0): mean of 3 distinct dense networks",
                     "dense − ε (ε = 0.01; tickets match on validation accuracy)",
                     "n = 1–3 curves per point (fewer where marked)"]
    assert fig.legends[0].get_title().get_text() == "colour: prune_rate; line and marker: rewind_iter"


def curves_of(ax) -> list:
    """The curves of an axes (points joined, with markers), not the dense line."""
    return [line for line in ax.lines if line.get_marker() not in (None, "None", "", "_", "|")]  # (not caps)


def grid_with_controls() -> list:
    """The quickstart's shape: 3 p × 3 k × 2 scopes, one seed, every ticket beside random re-init and random mask;
    all from seed 0, so one dense network."""
    import itertools

    controls = {"random-reinit": [ticket_at(1)], "random-mask": [ticket_at(0)]}
    return [make_trial(i, [ticket_at(2)], prune_rate=p, rewind_iter=k, scope=scope, controls=controls)
            for i, (p, k, scope) in enumerate(itertools.product((0.2, 0.35, 0.5), (0, 20, 100),
                                                                ("layerwise", "global")))]


def test_a_grid_with_controls_is_one_panel_per_kind_each_setting_looking_the_same_in_every_panel(figures):
    """(The quickstart's plot was 36 curves in reused colours under a legend two-thirds of the figure, and said
    'mean of 36 curves' of its one dense network.)"""
    from ltstudy.study.compare_plots import plot_compare

    plot_compare(grid_with_controls(), ["prune_rate", "rewind_iter"], None, epsilon=EPS,
                 searched=["prune_rate", "rewind_iter", "scope"])
    (fig,) = figures
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["tickets", "control: random mask", "control: random re-init"]
    looks = []
    for ax in axes:
        drawn = curves_of(ax)
        assert len(drawn) == 18
        looks.append([(line.get_color(), line.get_linestyle(), line.get_marker()) for line in drawn])
        assert len(set(looks[-1])) == 18  # every setting combination apart
    assert looks[0] == looks[1] == looks[2]  # and drawn alike in each panel
    assert len({colour for colour, _, _ in looks[0]}) == 9  # the colour says p and k, the line the scope
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == 9 + 2 + 3 and texts.count("p=0.2, k=0") == 1
    assert "dense network (round 0)" in texts and not any("mean of" in t for t in texts)
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert legend.width * legend.height < 0.25 * fig.bbox.width * fig.bbox.height
    assert all(legend.y1 <= ax.get_window_extent().y0 for ax in axes)  # below the panels, never over a curve


def test_a_study_of_many_controls_at_one_setting_is_one_panel_of_the_ticket_beside_them(figures):
    """(The pruning-at-initialisation study: one setting, 19 controls.)"""
    from ltstudy.study.compare_plots import plot_compare

    names = ["random-reinit", "random-mask", "random-both"]
    trials = [make_trial(0, [ticket_at(2), ticket_at(3)], controls={n: [ticket_at(i), ticket_at(i)]
                                                                     for i, n in enumerate(names)})]
    plot_compare(trials, ["prune_rate"], None, epsilon=EPS, searched=["prune_rate"])
    (fig,) = figures
    (ax,) = fig.axes
    texts = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"ticket (n=2)", "random re-init (n=2)", "random mask (n=2)", "random re-init + random mask (n=2)",
            "dense (round 0): mean of 2 distinct dense networks"} <= texts


def test_the_frontier_plot_explains_its_point_labels_and_keeps_validation_accuracy(figures):
    from ltstudy.study import plots
    from ltstudy.study.frontier import round_frontier

    trials = welch_trials()
    plots.plot_pareto(trials, round_frontier(trials), None, epsilon=EPS)
    ax = figures[0].axes[0]
    assert "tNrM = trial N, round M" in legend_texts(ax)
    assert ax.get_ylabel().startswith("validation accuracy")
    assert any(t.get_text().startswith("t2r3") for t in ax.texts)


def test_the_frontier_plot_counts_one_dense_network_where_every_trial_shares_it(figures):
    """(The quickstart's 18 trials are all seed 0: its legend said "mean of 18 trials" of one network.)"""
    from ltstudy.study import plots
    from ltstudy.study.frontier import round_frontier

    shared = grid_with_controls()
    plots.plot_pareto(shared, round_frontier(shared), None, epsilon=EPS)
    assert "dense network (round 0)" in legend_texts(figures[0].axes[0])
    two = [make_trial(0, [ticket_at(2)]), make_trial(1, [curve(D, [0.92] * len(D))])]
    plots.plot_pareto(two, round_frontier(two), None, epsilon=EPS)
    assert "dense (round 0): mean of 2 distinct dense networks" in legend_texts(figures[1].axes[0])


def test_no_value_is_interpolated_across_a_gap_nothing_was_measured_in():
    """One-shot pruning measures the dense network and one sparse one: 50% between 100% and 3.6% is unknown."""
    from ltstudy.study.curves import interpolate

    one_shot = [{"density": 1.0, "val_accuracy": 0.9}, {"density": 0.036, "val_accuracy": 0.8}]
    iterative = [{"density": 0.8 ** r, "val_accuracy": 0.9 - 0.01 * r} for r in range(5)]
    assert interpolate(one_shot, 0.5, "val_accuracy") is None
    assert interpolate(one_shot, 0.036, "val_accuracy") == 0.8
    assert interpolate(iterative, 0.5, "val_accuracy") == pytest.approx(0.9 - 0.01 * (math.log(0.5) / math.log(0.8)))


def test_ticket_minus_control_is_paired_by_seed_then_averaged_over_seeds():
    """The gap table: at each grid density, each seed's ticket minus the same seed's control, then mean ± std (n)."""
    d = [1.0, 0.5, 0.2, 0.1]  # (grid densities: no interpolation)
    tickets = [curve(d, [0.90, 0.90, 0.88, 0.85]), curve(d, [0.90, 0.89, 0.87, 0.80])]
    controls = [curve(d, [0.90, 0.85, 0.80, 0.70]), curve(d, [0.90, 0.86, 0.83, 0.78])]
    cmp = compare([make_trial(0, tickets, controls={"random-reinit": controls})], ["prune_rate"], EPS,
                  searched=["prune_rate"])
    (gap,) = cmp.gaps
    assert gap["control"] == "control: random re-init"
    expected = {0.5: [0.05, 0.03], 0.2: [0.08, 0.04], 0.1: [0.15, 0.02]}
    for density, diffs in expected.items():
        name = f"gap_accuracy_at_{density:g}"
        mean = sum(diffs) / 2
        std = math.sqrt(sum((x - mean) ** 2 for x in diffs))  # (n - 1 = 1)
        assert (gap[name], gap[f"{name}_std"], gap[f"{name}_n"]) == (pytest.approx(mean), pytest.approx(std), 2)
    # Pairing matters: unpaired means would give the same mean but never a per-seed spread of 0 here.
    same = compare([make_trial(0, tickets, controls={"random-reinit": [curve(d, [0.9, 0.85, 0.8, 0.7]),
                                                                        curve(d, [0.9, 0.84, 0.79, 0.65])]})],
                   ["prune_rate"], EPS, searched=["prune_rate"]).gaps[0]
    assert same["gap_accuracy_at_0.5_std"] == pytest.approx(0.0)


def test_many_controls_beside_one_ticket_are_means_whose_legend_starts_with_the_ticket(figures):
    """(Pruning at initialisation: 19 controls' error bars at n = 2 hid every curve.)"""
    from ltstudy.study.compare_plots import plot_compare

    trial = make_trial(0, [ticket_at(2), ticket_at(3)], controls={"random-reinit": [ticket_at(1)] * 2})
    for i in range(8):  # (eight more controls, as a study of pruning-at-init methods lists them)
        trial.user_attrs["controls_per_seed"][f"method-{i}"] = [ticket_at(i % 3), ticket_at((i + 1) % 3)]
        trial.user_attrs["controls"][f"method-{i}"] = f"control: method {i}"
    plot_compare([trial], ["prune_rate"], None, epsilon=EPS, searched=["prune_rate"])
    (fig,) = figures
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == "ticket (n=2)" and len([t for t in texts if t.startswith("method ")]) == 8
    assert "controls: means only, their 95% intervals left out (they would hide one another)" in texts
    assert len(ax.containers) == 1  # the ticket's error bars, and no control's
    looks = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in curves_of(ax)]
    assert len(set(looks)) == len(looks) == 10


def test_rounds_stored_before_metrics_were_an_open_mapping_read_as_metrics_in_compare_and_the_report():
    """Trials stored their compression numbers as fields of each round, and `val_instability: None` where nothing
    was measured: the same keys, now the metrics of an open mapping, read alike."""
    from ltstudy.engine.rounds import RoundResult
    from ltstudy.study.report.metrics import open_metrics

    old = [{**r, "compression_ratio": 1 / r["density"], "theoretical_speedup": 1 / r["density"], "params_total": 410,
            "val_instability": None, "test_instability": None} for r in curve([1.0, 0.5, 0.25], [0.9, 0.9, 0.8])]
    trials = [make_trial(0, [old], kind="ticket")]
    curves = collect(trials).curves
    assert "theoretical_speedup" in round_numbers(curves) and "val_instability" not in round_numbers(curves)
    assert open_metrics(curves) == ["compression_ratio", "params_total", "theoretical_speedup"]
    (row,) = compare(trials, ["prune_rate"], 0.01, metrics=["theoretical_speedup"]).rows
    assert row[metric_key("theoretical_speedup")] == 2.0  # at the ticket round, density 0.5
    rec = RoundResult.from_dict(old[1])  # (a cache entry's record of that time loads too)
    assert rec.metrics == {"compression_ratio": 2.0, "theoretical_speedup": 2.0, "params_total": 410}
    stored = rec.to_dict()  # (flat again: the metrics beside the fixed fields)
    assert {k: stored[k] for k in stored.keys() & old[1].keys()} == {k: v for k, v in old[1].items() if v is not None}
