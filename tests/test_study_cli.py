"""The report commands on a finished study: pareto, compare, studies, ui."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ltstudy import cli
from ltstudy.cli import servers
from ltstudy.study.frontier import pareto_trials, round_frontier
from tests.study_helpers import Stores, free_port, isolate, quiet_run, seed_mlflow_db, write_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Stores, Path]:
    """A finished tiny study (3 trials), shared read-only by the tests below."""
    root = tmp_path_factory.mktemp("reports")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(root, stores)
    with quiet_run(root):
        assert cli.main(["run", str(path), "--quiet"]) == 0
    return stores, path


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(monkeypatch, tmp_path)
    return tmp_path


def main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, command: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ltstudy {command}: error: ")
    return lines[0]


# --------------------------------------------------------------------------- pareto


def test_pareto_prints_the_best_trials_and_the_round_frontier(done, here, capsys):
    stores, path = done
    code, out, _ = main(capsys, "pareto", str(path))
    assert code == 0
    study = stores.study()
    best = pareto_trials(study)
    assert f"Pareto-optimal trials of 'tiny' ({len(best)} of 3):" in out
    frontier = round_frontier(study.trials)
    assert f"Round-level frontier ({len(frontier)} non-dominated (density, val accuracy) points; " in out
    for header in ("ticket_sparsity", "train_iterations", "prune_rate", "density", "val_acc", "test_acc@es",
                   "test_acc_end", "scope", "reinit"):
        assert header in out


def test_pareto_writes_json_and_a_png(done, here, capsys):
    stores, path = done
    code, out, _ = main(capsys, "pareto", str(path), "--json", "front.json", "--plot", "front.png")
    assert code == 0
    assert "wrote front.json" in out.splitlines() and "wrote front.png" in out.splitlines()
    doc = json.loads((here / "front.json").read_text())
    assert {"pareto_trials", "round_frontier"} <= set(doc)
    study = stores.study()
    assert [t["trial"] for t in doc["pareto_trials"]] == [t.number for t in pareto_trials(study)]
    for entry in doc["pareto_trials"]:
        assert set(entry["values"]) == {"ticket_sparsity", "train_iterations"}
        assert "prune_rate" in entry["settings"]
    assert doc["round_frontier"] == json.loads(json.dumps(round_frontier(study.trials)))
    png = (here / "front.png").read_bytes()
    assert len(png) > 1000 and png[:8] == PNG_MAGIC


def test_pareto_on_a_study_that_does_not_exist_is_one_line(done, here, capsys):
    _, path = done
    code, _, err = main(capsys, "pareto", str(path), "--study-name", "nope")
    assert code == 2
    assert "no study named 'nope'" in one_error_line(err, "pareto")


def test_reports_on_a_storage_that_does_not_exist_create_nothing(done, here, capsys):
    _, path = done
    for command in ("pareto", "compare"):
        code, _, err = main(capsys, command, str(path), "--storage", f"journal:{here}/absent/optuna.journal")
        assert code == 2
        assert "no study named 'tiny'" in one_error_line(err, command)
    assert not (here / "absent").exists()


def test_pareto_refuses_an_output_in_a_missing_folder_before_reading_the_study(done, here, capsys):
    _, path = done
    code, _, err = main(capsys, "pareto", str(path), "--json", str(here / "no" / "such" / "out.json"))
    assert code == 2
    assert "does not exist" in one_error_line(err, "pareto")


# --------------------------------------------------------------------------- compare


def test_compare_prints_a_table_that_says_what_its_numbers_are(done, here, capsys):
    _, path = done
    code, out, _ = main(capsys, "compare", str(path), "--by", "prune_rate")
    assert code == 0
    assert "'tiny': one row per combination of the searched settings (compared: prune_rate; context: " in out
    assert "validation accuracy at the early-stop iteration" in out and "interpolated" in out
    for header in ("ticket sparsity %", "ticket acc %", "acc@100%", "train iterations", " n "):
        assert header in out
    # one seed per trial: said once, and each cell a value, never "± 0.0" nor "± — (1)"
    assert "Every row rests on one curve (one trial, one seed: n = 1)" in out
    assert "± 0.0" not in out and "± —" not in out


def test_compare_writes_json_rows_and_a_png(done, here, capsys):
    stores, path = done
    code, out, _ = main(capsys, "compare", str(path), "--by", "prune_rate,scope", "--density", "0.5",
                        "--json", "cmp.json", "--plot", "cmp.png")
    assert code == 0
    assert "wrote cmp.json" in out.splitlines() and "wrote cmp.png" in out.splitlines()
    doc = json.loads((here / "cmp.json").read_text())
    assert doc["by"] == ["prune_rate", "scope"] and set(doc["context"]) == {"rewind_iter", "reinit"}
    rows = doc["rows"]
    assert rows and all({"prune_rate", "scope", "rewind_iter", "reinit", "kind", "n", "trials", "ticket_sparsity",
                         "ticket_sparsity_std", "ticket_sparsity_n", "accuracy_at_0.5"} <= set(r) for r in rows)
    # Every finished trial is in exactly one row, or counted once as a repeat of an identical earlier one.
    numbers = sorted([n for r in rows for n in r["trials"]] + [a for a, _ in doc["repeats_counted_once"]])
    assert numbers == [t.number for t in stores.study().trials]
    assert all(r["n"] == len(r["curves"]) == r["ticket_sparsity_n"] for r in rows)
    png = (here / "cmp.png").read_bytes()
    assert len(png) > 1000 and png[:8] == PNG_MAGIC


@pytest.mark.parametrize(("flags", "needle"), [
    (["--by", "prune_rat"], "did you mean 'prune_rate'?"),
    (["--by", "nonsense"], "unknown key 'nonsense'"),
    (["--by", " , "], "--by needs at least one setting"),
    (["--density", "0"], "--density must be in (0, 1]"),
])
def test_compare_rejects_bad_options_with_one_line(done, here, capsys, flags, needle):
    _, path = done
    code, out, err = main(capsys, "compare", str(path), *flags)
    assert code == 2 and out == ""
    assert needle in one_error_line(err, "compare")


def test_compare_on_a_study_that_does_not_exist_is_one_line(done, here, capsys):
    _, path = done
    code, _, err = main(capsys, "compare", str(path), "--study-name", "nope")
    assert code == 2
    assert "no study named 'nope'" in one_error_line(err, "compare")


# --------------------------------------------------------------------------- studies


def test_studies_lists_each_study_with_its_trial_counts(done, here, capsys):
    stores, _ = done
    code, out, _ = main(capsys, "studies", "--storage", stores.storage)
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny ")]
    # name, trials, complete, pruned, failed, running, directions
    assert rows == [["tiny", "3", "3", "0", "0", "0", "max,min"]]


def test_studies_reads_the_storage_from_a_study_file(done, here, capsys):
    _, path = done
    code, out, _ = main(capsys, "studies", str(path))
    assert code == 0
    assert any(line.split()[:2] == ["tiny", "3"] for line in out.splitlines() if line.strip())


def test_studies_in_a_storage_that_does_not_exist_is_one_line_and_creates_nothing(here, capsys):
    code, _, err = main(capsys, "studies", "--storage", f"journal:{here}/absent/optuna.journal")
    assert code == 2
    assert "no Optuna storage" in one_error_line(err, "studies")
    assert not (here / "absent").exists()


# --------------------------------------------------------------------------- ui


def test_ui_starts_mlflow_on_the_study_store_bound_to_localhost_and_prints_the_runs_page(done, here, capsys,
                                                                                     monkeypatch):
    stores, path = done
    started = []
    monkeypatch.setattr(servers, "serve", lambda cmd, banner, env=None: started.append((cmd, banner)) or 0)
    code, _, _ = main(capsys, "ui", str(path), "--port", "5123")
    assert code == 0
    ((cmd, banner),) = started
    assert cmd[cmd.index("--app-name") + 1] == "ltstudy"  # MLflow's app, opening in model training (mlflow_ui.py)
    assert cmd[cmd.index("--backend-store-uri") + 1] == stores.tracking_uri
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5123"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (stores.root / "artifacts").as_uri()
    exp = stores.client().get_experiment_by_name("tiny").experiment_id
    # MLflow 3.17's UI opens an experiment on its GenAI overview unless the URL asks for the model-training view.
    assert banner.endswith(f"http://127.0.0.1:5123/#/experiments/{exp}/runs?workflowType=machine_learning")


def test_ui_on_a_tracking_server_prints_the_study_runs_page_there(done, here, capsys, monkeypatch):
    _, path = done
    monkeypatch.setattr(servers, "check_tracking_uri", lambda uri, timeout=5.0: None)
    monkeypatch.setattr(servers, "_runs_page", lambda uri, name: "#/experiments/7/runs?workflowType=machine_learning")
    code, out, _ = main(capsys, "ui", str(path), "--tracking-uri", "http://mlflow.example:5000")
    assert code == 0
    assert out.strip() == "http://mlflow.example:5000/#/experiments/7/runs?workflowType=machine_learning"


def _processes_mentioning(needle: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _port_is_free(port: int) -> bool:
    """A server could listen on it again (SO_REUSEADDR, as servers bind: our own requests leave TIME_WAITs)."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _first_line_starting(proc, prefix: str, seconds: float) -> str:
    """The first line of `proc`'s stdout that starts with `prefix` (a bound against a hang, not a deadline)."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=seconds)
        except queue.Empty:
            raise AssertionError(f"nothing printed {prefix!r} within {seconds} s") from None
        if line.startswith(prefix):
            return line.strip()


@pytest.fixture(scope="module")
def ui(done, tmp_path_factory):
    """`ltstudy ui` on the finished study, once it has printed its URL; (process, the URL, whether the server
    answered at that moment). Stopped (if a test has not) at the end of the module."""
    import sys
    import urllib.request

    _, path = done
    port = free_port()
    folder = tmp_path_factory.mktemp("ui")
    with open(folder / "ui.err", "w") as err:  # (a file: a pipe nobody reads would fill up and stall the server)
        proc = subprocess.Popen([sys.executable, "-m", "ltstudy.cli", "ui", str(path), "--port", str(port)],
                                cwd=folder, stdout=subprocess.PIPE, stderr=err, text=True)
    proc.err = folder / "ui.err"
    try:
        line = _first_line_starting(proc, "MLflow UI for", 600)
        url = line.split(": ", 1)[1].split()[0]
        try:  # right now, once: the URL was printed because the server answers
            with urllib.request.urlopen(url.split("#")[0], timeout=30) as r:
                answered = r.status == 200
        except OSError:
            answered = False
        yield proc, url, answered, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_ui_prints_its_url_once_the_server_answers(ui, done):
    """(`ltstudy ui` printed the URL 20-38 s before the server accepted connections.)"""
    _, url, answered, port = ui
    stores, _ = done
    exp = stores.client().get_experiment_by_name("tiny").experiment_id
    assert url == f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?workflowType=machine_learning"
    assert answered


def test_every_run_of_the_study_opens_in_the_mlflow_ui_as_model_training(ui, done):
    """(A run's page, opened from the runs table, switched MLflow 3.17's UI to its GenAI workflow: "Evaluations",
    Judges and Prompts. Its link carries no workflowType, and the UI then reads a browser setting, GenAI by
    default.) A fresh browser opens a trial's run page as model training."""
    import time

    from tests.test_report import chrome

    port = ui[3]
    stores, _ = done
    (trial,) = [t for t in stores.study().trials if t.number == 0]
    exp = stores.client().get_experiment_by_name("tiny").experiment_id
    driver = chrome()
    try:
        driver.set_window_size(1300, 900)
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{exp}/runs/{trial.user_attrs['mlflow_run_id']}")
        text = ""
        for _ in range(600):  # (until the page has rendered the run: a bound against a hang)
            text = driver.execute_script("return document.body.innerText")
            if "trial-0" in text and "Overview" in text:
                break
            time.sleep(0.5)
        assert "trial-0" in text
        workflow = driver.execute_script("return localStorage.getItem('mlflow.workflowType_v1')")
    finally:
        driver.quit()
    assert workflow == '"machine_learning"'
    assert "Evaluations" not in text and "Judges" not in text and "Prompts" not in text
    assert "Runs" in text.split("trial-0")[0]  # the breadcrumb: experiment > Runs > trial-0


def test_a_signalled_ui_stops_the_mlflow_server_and_every_process_it_started(ui, done):
    """SIGTERM (SIGINT goes through the same handler, signals.interrupt_on_signals, tested with `run`). (Last of
    the `ui` tests: it stops the server they share.)"""
    import signal
    import time

    proc, _, _, port = ui
    stores, _ = done
    assert _processes_mentioning(str(stores.db)), "the server's processes name the store on their command line"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_processes_mentioning(str(stores.db)) or not _port_is_free(port)):
        time.sleep(0.2)
    assert _processes_mentioning(str(stores.db)) == []
    assert _port_is_free(port)
    assert "Traceback" not in proc.err.read_text()


def test_dashboard_serves_the_study_with_its_objective_names_and_stops_on_sigterm(done, tmp_path):
    import signal
    import sys
    import urllib.request

    pytest.importorskip("optuna_dashboard")
    stores, path = done
    journal = str(stores.journal)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ltstudy.cli", "dashboard", str(path), "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = _first_line_starting(proc, "optuna-dashboard for", 600)  # (printed once it answers)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
            studies = json.loads(r.read())["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "tiny"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0",
                                    timeout=10) as r:
            detail = json.loads(r.read())
        assert detail["objective_names"] == ["ticket_sparsity", "train_iterations"]  # not "0" and "1"
        url = f"http://127.0.0.1:{port}/dashboard/studies/{study['study_id']}"  # the study's own page
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
        assert _processes_mentioning(journal)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert url in printed  # it opens on the study, not on the list of studies
    assert _processes_mentioning(journal) == []
    assert _port_is_free(port)


def test_dashboard_without_optuna_dashboard_says_how_to_install_it(done, here, capsys, monkeypatch):
    import importlib.util

    _, path = done
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna_dashboard" else
                        real(name, *a))
    code, _, err = main(capsys, "dashboard", str(path))
    line = one_error_line(err, "dashboard")
    assert code == 2 and "`pip install optuna-dashboard`" in line and "`pip install -e '.[dashboard]'`" in line


def test_ui_refuses_an_unreachable_server(done, here, capsys, monkeypatch):
    _, path = done
    monkeypatch.setattr(servers, "serve", lambda cmd, banner: pytest.fail("must not start anything"))
    code, _, err = main(capsys, "ui", str(path), "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "cannot reach the MLflow server" in one_error_line(err, "ui")


def test_ui_refuses_a_port_out_of_range_or_in_use(done, here, capsys, monkeypatch):
    import socket

    _, path = done
    monkeypatch.setattr(servers, "serve", lambda cmd, banner: pytest.fail("must not start anything"))
    code, _, err = main(capsys, "ui", str(path), "--port", "99999")
    assert code == 2 and "between 1 and 65535" in one_error_line(err, "ui")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = main(capsys, "ui", str(path), "--port", str(busy.getsockname()[1]))
    assert code == 2 and "pass another --port" in one_error_line(err, "ui")


# --------------------------------------------------------------------------- run's own summary


def test_run_prints_the_pareto_table_and_where_to_browse(tmp_path, tmp_path_factory, monkeypatch, capsys):
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(tmp_path, stores, study={"n_trials": 1})
    code, out, _ = main(capsys, "run", str(path), "--quiet")
    assert code == 0
    assert re.search(r"study 'tiny': ran 1 trial \(1 COMPLETE\) in \d+ s; 1 of n_trials = 1 finished", out)
    assert "Pareto-optimal trials (ticket = sparsest round within ε of dense validation accuracy" in out
    assert "dense network (round 0): validation accuracy" in out and "cost of this run:" in out
    assert f"MLflow: {stores.tracking_uri} (experiment 'tiny')" in out


def test_a_trial_whose_dense_network_did_not_learn_well_is_flagged_and_off_the_front(tmp_path, tmp_path_factory,
                                                                                     monkeypatch, capsys):
    """Adam at lr = 0.2 reaches about 56% on digits (96% at 1.2e-3), and its pruned round "matches" that."""
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(tmp_path, stores, study={"n_trials": 2, "sampler": "grid", "min_dense_accuracy": 0.3},
                       search={"lr": [0.0012, 0.2], "prune_rate": 0.5, "rewind_iter": 0, "scope": "layerwise",
                               "reinit": "rewind", "rounds": 1})
    code, out, _ = main(capsys, "run", str(path), "--quiet")
    assert code == 0
    study = stores.study()
    poor = next(t for t in study.trials if t.params["lr"] == 0.2)
    good = next(t for t in study.trials if t.params["lr"] == 0.0012)
    dense = {t.number: t.user_attrs["rounds"][0]["val_accuracy"] for t in (poor, good)}
    assert dense[good.number] - dense[poor.number] > 0.3
    assert poor.values[0] >= good.values[0]  # its ticket is as sparse: Optuna alone puts it on the front
    assert poor.number in {t.number for t in study.best_trials}
    assert [t.number for t in pareto_trials(study)] == [good.number]
    assert (f"undertrained, left off the Pareto front: trial {poor.number} ({100 * dense[poor.number]:.1f}%), whose "
            "dense network is more than max_dense_gap = 0.05 below the study's best dense network "
            f"({100 * dense[good.number]:.1f}% validation accuracy): its tickets only match a network that did not "
            "learn") in out
    runs = {r.data.tags["optuna.trial"]: r.data.tags.get("pareto") for r in stores.client().search_runs(
        [stores.client().get_experiment_by_name("tiny").experiment_id]) if "optuna.trial" in r.data.tags}
    assert runs == {str(good.number): "true", str(poor.number): "false"}
    code, out, _ = main(capsys, "pareto", str(path))
    assert code == 0 and "Pareto-optimal trials of 'tiny' (1 of 2)" in out


def test_when_every_trial_diverged_the_summary_says_why_there_is_no_front(tmp_path, tmp_path_factory, monkeypatch,
                                                                          capsys):
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(tmp_path, stores, study={"n_trials": 1}, train={"lr": 1e6},
                       search={"prune_rate": 0.5, "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                               "rounds": 2})
    code, out, _ = main(capsys, "run", str(path), "--quiet")
    assert code == 0
    assert ("no Pareto-optimal trial: every complete trial is left off the front: trial 0 diverged (its training "
            "broke down; the reason is in its MLflow run)") in out


# --------------------------------------------------------------------------- a CLI that starts fast

HEAVY = ("torch", "optuna", "mlflow")


def _imported_after(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    import sys

    code = (f"import sys\nfrom ltstudy import cli\ntry:\n    rc = cli.main({argv!r})\nexcept SystemExit as e:\n"
            f"    rc = e.code\nprint('MODULES', [m for m in {HEAVY!r} if m in sys.modules])\nsys.exit(rc or 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES")][-1]
    return proc.returncode, eval(line.removeprefix("MODULES "))


@pytest.mark.parametrize("command", ["", "ticket", "run", "worker", "pareto", "compare", "report", "studies", "ui",
                                     "dashboard", "export", "cache", "repair"])
def test_help_of_every_command_imports_neither_torch_nor_optuna_nor_mlflow(command, tmp_path):
    code, heavy = _imported_after([*([command] if command else []), "--help"], tmp_path)
    assert code == 0 and heavy == []


@pytest.mark.parametrize("command", [["pareto"], ["compare", "--by", "prune_rate"], ["studies"],
                                     ["report", "--out", "read_only_report.html"]])
def test_commands_that_only_read_a_study_do_not_import_torch(done, command):
    stores, path = done
    code, heavy = _imported_after([command[0], str(path), *command[1:]], stores.root)
    assert code == 0 and "torch" not in heavy


# --------------------------------------------------------------------------- a run whose output is a log file


def test_a_run_in_a_log_prints_its_cost_a_line_per_round_and_the_answer_first(tmp_path, tmp_path_factory,
                                                                            monkeypatch, capsys):
    """Slurm, nohup, CI: stderr is not a terminal, so no bars; lines a researcher can tail instead."""
    isolate(monkeypatch, tmp_path)
    stores = Stores(tmp_path)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(tmp_path, stores, study={"n_trials": 2, "controls": ["random-reinit"]},
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": 0, "scope": "layerwise", "reinit": "rewind",
                               "rounds": 2})
    capsys.readouterr()  # (MLflow's own lines while the test made its template store)
    code, out, err = main(capsys, "run", str(path))  # (no --quiet; capsys is not a tty)
    assert code == 0
    lines = err.splitlines()
    # 2 trials x (3 ticket rounds + 2 control levels) x 60 iterations, said before anything trains
    assert lines[0] == ("2 trials to run: each 1 search of up to 3 rounds × 60 iterations and 1 control beside "
                        "each ticket: at most 600 training iterations (fewer where the cache holds shared rounds)")
    rounds = [re.fullmatch(r"trial (\d) seed 0 round (\d) \((ticket|control random-reinit)\): density ([\d.]+), "
                           r"val acc ([\d.]+), [\d.]+ s( \(from the cache\))?", line) for line in lines]
    seen = sorted((int(m[1]), m[3], int(m[2])) for m in rounds if m)
    assert seen == sorted((t, kind, r) for t in (0, 1) for kind, rs in (("ticket", (0, 1, 2)),
                                                                      ("control random-reinit", (1, 2))) for r in rs)
    assert lines.index(next(line for line in lines if line.startswith("the dense round took"))) == 2  # after round 0
    study = stores.study()
    for t in study.trials:  # each line's numbers are the trial's own
        for r in t.user_attrs["rounds"]:
            assert f"trial {t.number} seed 0 round {r['round']} (ticket): density {r['density']:.4f}, val acc " \
                   f"{r['val_accuracy']:.4f}" in err
        assert f"trial {t.number} COMPLETE: {t.values[0]:.4g}, {t.values[1]:.4g}" in lines
    dense = study.trials[0].user_attrs["rounds"][0]
    assert out.splitlines()[1] == (
        f"dense network (round 0): validation accuracy {100 * dense['val_accuracy']:.1f} % (n = 1), test accuracy "
        f"at early stop {100 * dense['test_accuracy_at_early_stop']:.1f} % (n = 1) (over the study's 1 distinct "
        "dense network)")  # both trials share seed 0's dense network: one, not two
    assert "vs random-reinit" in out and "cost of this run: 600 training iterations" in out
    client = stores.client()
    for t in study.trials:  # the control's levels beside the ticket's rounds, in the trial's own run
        run_id = t.user_attrs["mlflow_run_id"]
        (levels,) = t.user_attrs["controls_per_seed"]["random-reinit"]
        history = {m.step: m.value for m in client.get_metric_history(run_id, "control/random-reinit/val_accuracy")}
        assert history == {r["round"]: pytest.approx(r["val_accuracy"]) for r in levels[1:]}
        densities = {m.step: m.value for m in client.get_metric_history(run_id, "control/random-reinit/density")}
        assert densities == {r["round"]: pytest.approx(r["density"]) for r in t.user_attrs["rounds"][1:]}


# --------------------------------------------------------------------------- a reader that goes away


@pytest.mark.parametrize("closed", ["at once", "after three lines"])
def test_a_closed_output_stops_the_printing_and_the_study_runs_to_its_end(tmp_path, tmp_path_factory, closed):
    """`ltstudy run … 2>&1 | head -3`: every trial used to FAIL with BrokenPipeError, and the run exited 0."""
    import os
    import sys

    from tests.ft_helpers import cli_env

    stores = Stores(tmp_path)
    seed_mlflow_db(tmp_path_factory, stores.db)
    path = write_study(tmp_path, stores, study={"n_trials": 2, "cache": False})
    cmd = [sys.executable, "-m", "ltstudy.cli", "run", str(path)]  # (not --quiet: a line per round)
    if closed == "at once":  # the reader is gone before the first line: every write meets a broken pipe
        read, write = os.pipe()
        os.close(read)
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=write, stderr=write)
        os.close(write)
    else:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()
        assert head[0].startswith(b"2 trials to run")
    try:
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    trials = stores.study().trials
    assert [(t.state.name, t.user_attrs.get("fail_reason")) for t in trials] == [("COMPLETE", None)] * 2
