"""`ltstudy report`: one self-contained HTML page from a real tiny study, checked in headless Chromium.

The browser tests need Debian's chromium and chromium-driver and the selenium package; without
them they skip with the reason.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from ltstudy import cli
from ltstudy.study import plots
from ltstudy.study.compare import compare
from ltstudy.study.config import load_study
from ltstudy.study.frontier import pareto_trials, round_frontier
from ltstudy.study.report import build_report
from ltstudy.study.storage import open_storage
from tests.report_helpers import curve, make_trial
from tests.study_helpers import Stores, free_port, isolate, quiet_run, seed_mlflow_db, write_study

# A 2 x 2 grid of p and k, every ticket beside its random re-init control.
SEARCH = {"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "scope": "layerwise", "rounds": 2}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Stores, Path, str]:
    """A finished 4-trial tiny study with controls and its report (default path), shared read-only below."""
    root = tmp_path_factory.mktemp("report")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(root, stores, study={"sampler": "grid", "n_trials": 4, "controls": ["random-reinit"]},
                       search=SEARCH)
    with quiet_run(root) as out:
        assert cli.main(["run", str(path), "--quiet"]) == 0
        assert cli.main(["report", str(path)]) == 0
    return stores, path, out.getvalue()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(monkeypatch, tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- the file


def test_report_is_written_to_study_name_report_html_and_says_where(done):
    stores, _, out = done
    assert "wrote tiny_report.html" in out.splitlines()
    assert (stores.root / "tiny_report.html").is_file()


def test_report_is_one_self_contained_file(done):
    stores, _, _ = done
    text = (stores.root / "tiny_report.html").read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', text)
    assert len(srcs) >= 6  # frontier, 4 settings... at least one figure per section with data
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<(script|link|iframe)\b", text)
    assert "http://" not in text and "https://" not in text


def test_report_is_logged_on_the_parent_mlflow_run(done):
    stores, _, out = done
    study = stores.study()
    run_id = study.user_attrs["mlflow_parent_run_id"]
    client = MlflowClient(tracking_uri=stores.tracking_uri)
    assert "report.html" in [a.path for a in client.list_artifacts(run_id)]
    local = client.download_artifacts(run_id, "report.html", tempfile.mkdtemp())
    assert Path(local).read_text() == (stores.root / "tiny_report.html").read_text()
    assert f"logged report.html to MLflow run {run_id}" in out


def test_report_without_mlflow_still_writes_the_file_and_warns_in_one_line(done, here, capsys):
    _, path, _ = done
    code = cli.main(["report", str(path), "--out", "r.html", "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "wrote r.html" in out.splitlines() and (here / "r.html").stat().st_size > 10_000
    (line,) = err.splitlines()
    assert line.startswith("ltstudy report: warning: not logged to MLflow (cannot reach the MLflow server")


@pytest.mark.parametrize(("flags", "needle"), [
    (["--by", "prune_rat"], "did you mean 'prune_rate'?"),
    (["--density", "1.5"], "--density must be in (0, 1]"),
    (["--out", "no/such/dir/r.html"], "does not exist"),
])
def test_report_rejects_bad_options_with_one_line(done, here, capsys, flags, needle):
    _, path, _ = done
    code = cli.main(["report", str(path), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("ltstudy report: error: ") and needle in line


# --------------------------------------------------------------------------- in a real browser


def chrome():
    """A headless Chromium WebDriver, or skip with the reason."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(prefix='ltstudy-chrome-')}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def page(done):
    """The report loaded in headless Chromium: what the browser rendered."""
    stores, _, _ = done
    driver = chrome()
    try:
        driver.set_window_size(1300, 1000)
        driver.get((stores.root / "tiny_report.html").as_uri())

        def rows(table_id: str, attr: str = "") -> list:
            cells = driver.execute_script(
                "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))"
                ".map(r => arguments[1] ? r.getAttribute(arguments[1]) : r.cells[0].textContent)",
                table_id, attr)
            return cells

        yield {
            "images": driver.execute_script(
                "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])"),
            "front": rows("pareto-trials", "data-trial"),
            "frontier": driver.execute_script(
                "return Array.from(document.querySelectorAll('#round-frontier tbody tr'))"
                ".map(r => [r.getAttribute('data-trial'), r.getAttribute('data-round')])"),
            "combinations": rows("combinations"),
            "counts": driver.execute_script(
                "return Array.from(document.querySelectorAll('#trial-counts tbody tr'))"
                ".map(r => [r.cells[0].textContent, r.cells[1].textContent])"),
            "headings": driver.execute_script(
                "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"),
        }
    finally:
        driver.quit()


def test_every_image_of_the_report_decodes_in_chromium(page):
    images = page["images"]
    assert len(images) >= 6
    for complete, width, height, alt in images:
        assert complete and width > 0 and height > 0, alt


def test_the_trial_level_front_has_exactly_the_trials_of_study_best_trials(done, page):
    stores, _, _ = done
    study = stores.study()
    assert sorted(int(n) for n in page["front"]) == sorted(t.number for t in study.best_trials)


def test_the_round_frontier_table_has_every_non_dominated_round(done, page):
    stores, _, _ = done
    expected = [(str(p["trial"]), str(p["round"])) for p in round_frontier(stores.study().trials)]
    assert [tuple(r) for r in page["frontier"]] == expected


def test_the_combinations_table_has_one_row_per_setting_combination(done, page):
    stores, path, _ = done
    cfg = load_study(path)
    cmp = compare(stores.study().trials, [], cfg.study.epsilon, 0.2, list(cfg.searched))
    assert len(page["combinations"]) == len(cmp.rows) == 8  # 4 tickets and their 4 controls, each a row
    assert ["finished (complete)", "4"] in page["counts"]


def test_the_report_has_every_section(page):
    assert page["headings"] == [
        "What was searched", "Recommendation", "Trial-level Pareto front", "Round-level frontier",
        "Every setting combination", "Every ticket beside its controls", "Accuracy vs density, one setting at a time",
        "p × k: ticket sparsity and accuracy (tickets only)", "Early stopping: the winning ticket against its controls",
        "Density per layer", "Round metrics at the ticket"]


# --------------------------------------------------------------------------- sections on synthetic trials


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """(cfg, study) holding synthetic trials, nothing trained; the figures are recorded, not drawn."""
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    path = write_study(tmp_path, stores)
    study = optuna.create_study(study_name="tiny", storage=open_storage(stores.storage),
                                directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["ticket_sparsity", "train_iterations"])
    return load_study(path), study


def add(study, trials):
    for t in trials:
        study.add_trial(t)


D = [1.0, 0.5, 0.25]
GOOD = curve(D, [0.90, 0.90, 0.90], es=50)
BAD = curve(D, [0.90, 0.85, 0.70], es=90)


def test_sections_without_their_data_say_so_in_one_sentence(synthetic):
    cfg, study = synthetic
    add(study, [make_trial(0, [GOOD], prune_rate=0.2), make_trial(1, [BAD], prune_rate=0.5)])  # one k, no control
    text = build_report(study, cfg)
    assert "The study has no ticket with a control at the same settings; list the paper" in text
    assert "The tickets have only one k (0), so there is no p × k map" in text
    assert "No two finished ticket curves differ only in scope" in text
    assert "Stability to SGD noise" not in text  # (not measured: no section at all)


def test_heatmaps_hold_tickets_only_and_say_what_they_pool(synthetic, monkeypatch):
    cfg, study = synthetic
    drawn = []
    monkeypatch.setattr(plots, "heatmap", lambda col, *a, **k: drawn.append(col) or b"png")
    add(study, [make_trial(0, [GOOD], prune_rate=0.2), make_trial(1, [BAD], prune_rate=0.5, rewind_iter=20),
                make_trial(2, [BAD], prune_rate=0.2, rewind_iter=20, scope="global"),
                make_trial(3, [BAD], prune_rate=0.2, reinit="random")])
    text = build_report(study, cfg, density=0.25)
    assert len(drawn) == 2  # ticket sparsity, and accuracy at 25% density
    assert all(c.kind == "ticket" for col in drawn for c in col.curves)
    assert sorted(c.trial for c in drawn[0].curves) == [0, 1, 2]
    assert "Each cell pools every ticket curve with that p and k across scope ∈ {global, layerwise}." in text


def test_early_stopping_sets_the_winning_ticket_against_the_controls_that_share_its_settings(synthetic, monkeypatch):
    cfg, study = synthetic
    drawn = []
    monkeypatch.setattr(plots, "figure_early_stop", lambda t, c, label: drawn.append((t, c, label)) or b"png")
    add(study, [make_trial(0, [GOOD], prune_rate=0.5, controls={"random-reinit": [BAD]}),
                make_trial(1, [BAD], prune_rate=0.2, controls={"random-reinit": [BAD]}),  # a less sparse ticket
                make_trial(2, [GOOD], prune_rate=0.35)])  # a sparse ticket without a control
    build_report(study, cfg)
    ((ticket, controls, label),) = drawn
    assert [c.trial for c in ticket] == [0] and label.startswith("p=0.5")
    assert [(name, [(c.trial, c.kind) for c in group]) for name, group in controls] == [
        ("control: random re-init", [(0, "control: random re-init")])]


def test_the_recommendation_names_the_front_its_cost_and_whether_seeds_separate_it(synthetic):
    cfg, study = synthetic
    mid = curve(D, [0.90, 0.90, 0.80])
    add(study, [make_trial(0, [curve(D, [0.9] * 3, iters=200), curve(D, [0.9, 0.9, 0.8], iters=200)],
                           prune_rate=0.5, values=[0.625, 600.0]),
                make_trial(1, [mid, BAD], prune_rate=0.2, values=[0.25, 300.0])])
    text = build_report(study, cfg)
    section = text[text.index("<h2>Recommendation</h2>"):text.index("<h2>Trial-level Pareto front</h2>")]
    assert [t.number for t in pareto_trials(study)] == [0, 1]
    assert "<b>p=0.5, k=0" in section and "<b>p=0.2, k=0" in section
    assert "at 300 ± 0 (n = 2) training iterations" in section
    assert "not distinguishable at n = 2" in section


def test_a_searched_range_of_p_is_binned_in_the_map(synthetic, monkeypatch):
    cfg, study = synthetic
    drawn = []
    monkeypatch.setattr(plots, "heatmap", lambda col, *a, order=None, **k: drawn.append((col, order)) or b"png")
    add(study, [make_trial(i, [GOOD], prune_rate=0.1 + 0.05 * i, rewind_iter=20 * (i % 2)) for i in range(11)])
    text = build_report(study, cfg, density=0.25)
    col, order = drawn[0]
    assert order["prune_rate"] == ["0.1–0.25", "0.25–0.4", "0.4–0.5", "0.5–0.6"]  # quantile bins of the 11 trials
    assert sorted({c.settings["prune_rate"] for c in col.curves}) == order["prune_rate"]
    described = text.split("in 4 quantile bins of the ticket curves: ")[1].split("<")[0]
    counts = [int(n) for n in re.findall(r"\(n=(\d+)\)", described)]
    assert len(counts) == 4 and sum(counts) == 11  # every trial in exactly one bin, each bin with its n
    assert "prune_rate (searched as a range) in 4 quantile bins of the ticket curves: 0.1–0.25 (n=" in text

    drawn.clear()
    build_report(study, cfg, density=0.25, n_bins=2)  # --bins 2
    assert drawn[0][1]["prune_rate"] == ["0.1–0.4", "0.4–0.6"]


def test_a_study_without_finished_trials_says_so(synthetic):
    cfg, study = synthetic
    text = build_report(study, cfg)
    assert "No finished, feasible trial yet" in text and "No finished trials yet." in text
    assert "<img" not in text


def test_a_single_best_setting_is_still_tested_against_the_runners_up(synthetic):
    cfg, study = synthetic
    mid = curve(D, [0.90, 0.90, 0.80])
    add(study, [make_trial(0, [GOOD, mid], prune_rate=0.5, values=[0.625, 300.0]),
                make_trial(1, [mid, BAD], prune_rate=0.2, values=[0.25, 300.0])])  # dominated
    text = build_report(study, cfg)
    section = text[text.index("<h2>Recommendation</h2>"):text.index("<h2>Trial-level Pareto front</h2>")]
    assert [t.number for t in pareto_trials(study)] == [0]
    assert "vs p=0.2, k=0, scope=layerwise, reinit=rewind (not on the front, 25.0 ± 35.4 (2) %): " \
           "not distinguishable at n = 2 (p = 0.35)" in section


# --------------------------------------------------------------------------- a range study, in a real browser

RANGES = {"prune_rate": {"low": 0.1, "high": 0.6}, "rewind_iter": {"low": 0, "high": 40, "step": 10},
          "reinit": "rewind", "scope": "layerwise", "rounds": 2}


@pytest.fixture(scope="module")
def range_page(tmp_path_factory):
    """A 6-trial study over a float range of p and a stepped range of k, each ticket beside its control, and
    what Chromium rendered of its report (1300 px wide)."""
    root = tmp_path_factory.mktemp("ranges")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(root, stores, study={"sampler": "random", "n_trials": 6, "controls": ["random-reinit"]},
                       search=RANGES)
    with quiet_run(root):
        assert cli.main(["run", str(path), "--quiet"]) == 0
        assert cli.main(["report", str(path), "--out", "ranges.html"]) == 0
    driver = chrome()
    try:
        driver.set_window_size(1300, 1000)
        driver.get((root / "ranges.html").as_uri())
        yield stores, (root / "ranges.html").read_text(), driver.execute_script("""
            const cells = t => Array.from(t.querySelectorAll('tbody tr')).map(r =>
                Array.from(r.cells).map(c => c.textContent));
            return {
              images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]),
              tables: Array.from(document.querySelectorAll('table')).map(t => ({
                  id: t.id, headers: Array.from(t.querySelectorAll('th')).map(h => h.textContent),
                  rows: cells(t), overflow: t.parentElement.scrollWidth - t.parentElement.clientWidth})),
              sections: Array.from(document.querySelectorAll('h2')).map(h => {
                  let n = h.nextElementSibling, imgs = 0, missing = [];
                  while (n && n.tagName !== 'H2') {
                      imgs += n.querySelectorAll ? n.querySelectorAll('img').length + (n.tagName === 'IMG') : 0;
                      if (n.classList && n.classList.contains('missing')) missing.push(n.textContent);
                      n = n.nextElementSibling; }
                  return [h.textContent, imgs, missing]; }),
            };""")
    finally:
        driver.quit()


def test_a_range_study_report_bins_every_range_and_every_image_decodes(range_page):
    _, text, page = range_page
    assert page["images"] and all(complete and width > 0 for complete, width, _ in page["images"])
    (combos,) = [t for t in page["tables"] if t["id"] == "combinations"]
    p_col = combos["headers"].index("prune_rate")
    bins = {row[p_col] for row in combos["rows"]}
    assert bins and all(re.fullmatch(r"\d(\.\d{1,3})?–\d(\.\d{1,3})?", b) for b in bins), bins  # "0.1–0.25"
    counts = [int(n) for n in re.findall(r"\(n=(\d+)\)", text.split("prune_rate (searched as a range) in ")[1]
                                                             .split("</")[0])]
    assert sum(counts) == 6  # the six ticket curves, each in one bin


def test_no_cell_of_a_range_study_report_shows_a_raw_float(range_page):
    """(Tick labels and cells used to read 0.15913721293446662.)"""
    _, _, page = range_page
    for t in page["tables"]:
        for row in t["rows"]:
            for cell in row:
                assert not re.search(r"\d\.\d{5,}", cell), (t["id"], cell)


def test_every_table_of_a_range_study_report_fits_the_page(range_page):
    _, _, page = range_page
    assert [(t["id"], t["overflow"]) for t in page["tables"] if t["overflow"] > 0] == []


def test_every_section_of_a_range_study_report_has_its_figure(range_page):
    """(The "one setting at a time" sections of a range study were all empty.)"""
    _, _, page = range_page
    sections = {title: (imgs, missing) for title, imgs, missing in page["sections"]}
    for title in ("Every ticket beside its controls", "Accuracy vs density, one setting at a time",
                  "p × k: ticket sparsity and accuracy (tickets only)", "Density per layer"):
        assert sections[title][0] >= 1, (title, sections[title])
    assert sections["Accuracy vs density, one setting at a time"][1] == []
