"""`ltstudy ticket`: a real run with --json, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ltstudy import cli
from ltstudy.engine.config import TicketConfig, load_config

TINY_FLAGS = ["--dataset", "digits", "--device", "cpu", "--iterations", "60", "--eval-every", "20",
              "--batch-size", "60"]


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run `ltstudy ...` in-process; argparse errors arrive as SystemExit."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run every command from an empty folder (the default --data-dir is ./data)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_two_round_run_writes_config_and_falling_densities_as_json(capsys, tmp_path):
    code, out, err = run_cli(capsys, "ticket", *TINY_FLAGS, "--rounds", "2", "--json", "out.json")
    assert code == 0, err
    assert "Traceback" not in err
    data = json.loads((tmp_path / "out.json").read_text())
    assert {"config", "rounds"} <= set(data)
    rounds = data["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    densities = [r["density"] for r in rounds]
    assert densities[0] == 1.0 and densities[0] > densities[1] > densities[2]
    assert densities[2] == pytest.approx(0.64, abs=1e-3)
    for r in rounds:
        for key in ("val_accuracy", "test_accuracy", "test_accuracy_at_early_stop"):
            assert 0.0 <= r[key] <= 1.0, key
    cfg = TicketConfig.from_dict(data["config"])
    assert (cfg.train.iterations, cfg.prune.rounds, cfg.data.name) == (60, 2, "digits")
    assert cfg.hash() in out


def test_a_control_on_the_command_line_says_where_its_tickets_path_came_from_and_its_masks_are_the_tickets(
        capsys, tmp_path):
    ticket = ["ticket", *TINY_FLAGS, "--rounds", "2", "--cache-dir", "cache"]
    code, out, err = run_cli(capsys, *ticket, "--reinit", "random", "--json", "control.json")
    assert code == 0, err
    assert "control: random re-init on the masks of the ticket with the same settings; the ticket's rounds 0..1: " \
           "2 trained here" in out
    code, out, err = run_cli(capsys, *ticket, "--reinit", "random", "--json", "again.json")
    assert code == 0 and "the ticket's rounds 0..1: loaded from the cache" in out
    how = ("wall_seconds", "reused", "computed_iterations")  # how a round was obtained, not what it measured

    def measured(name: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in how} for r in json.loads((tmp_path / name).read_text())[
            "rounds"]]

    assert measured("again.json") == measured("control.json")  # the same control, bit for bit
    code, _, err = run_cli(capsys, *ticket, "--json", "ticket.json")
    assert code == 0, err
    control = json.loads((tmp_path / "control.json").read_text())["rounds"]
    found = json.loads((tmp_path / "ticket.json").read_text())["rounds"]
    assert [r["density"] for r in control] == [r["density"] for r in found]  # on the ticket's own masks
    assert control[0]["val_accuracy"] == found[0]["val_accuracy"]  # level 0 is the ticket's dense round itself
    assert [r["val_loss"] for r in control[1:]] != [r["val_loss"] for r in found[1:]]  # a fresh θ'0 trained


def test_any_registered_control_runs_alone_with_control_name_as_its_config_form_runs_it(capsys, tmp_path):
    ticket = ["ticket", *TINY_FLAGS, "--rounds", "2", "--cache-dir", "cache"]
    code, out, err = run_cli(capsys, *ticket, "--control", "random-both", "--json", "named.json")
    assert code == 0, err
    assert "control: random re-init + random mask on the masks of the ticket with the same settings" in out
    code, out, err = run_cli(capsys, *ticket, "--reinit", "random", "--mask", "random", "--json", "form.json")
    assert code == 0, err
    named, form = (json.loads((tmp_path / name).read_text()) for name in ("named.json", "form.json"))
    assert named["kind"] == form["kind"] == "control"
    assert all(r["reused"] for r in form["rounds"])  # the same control: its levels came from the cache
    assert [r["val_loss"] for r in named["rounds"]] == [r["val_loss"] for r in form["rounds"]]


@pytest.mark.parametrize("flags, says", [
    (["--control", "random-rienit"], "unknown control 'random-rienit'; did you mean 'random-reinit'?"),
    (["--control", "random-mask", "--reinit", "random"], "--control random-mask: the settings name control "
                                                          "'random-reinit' already"),
    (["--control", "snip", "--reinit", "finetune"], "control 'snip' prunes at initialisation: it needs a ticket "
                                                    "that rewinds"),
])
def test_a_control_that_cannot_run_is_one_line_and_exit_2(capsys, flags, says):
    code, _, err = run_cli(capsys, "ticket", *TINY_FLAGS, *flags)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_flags_and_an_equivalent_toml_file_give_the_same_config(capsys, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('device = "cpu"\n[train]\niterations = 60\neval_every = 20\nbatch_size = 60\n'
                    "[prune]\nrounds = 0\nprune_rate = 0.3\n")
    code, _, err = run_cli(capsys, "ticket", *TINY_FLAGS, "--rounds", "0", "--prune-rate", "0.3", "--quiet",
                           "--json", "flags.json")
    assert code == 0, err
    from_flags = TicketConfig.from_dict(json.loads((tmp_path / "flags.json").read_text())["config"])
    assert from_flags.hash() == load_config(toml).hash()


def test_flags_override_the_config_file(capsys, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('device = "cpu"\n[train]\niterations = 500\n[prune]\nrounds = 3\n')
    code, out, err = run_cli(capsys, "ticket", "--config", str(toml), "--iterations", "40", "--eval-every", "20",
                             "--rounds", "1", "--quiet", "--json", "out.json")
    assert code == 0, err
    assert out.splitlines() == ["wrote out.json"]  # --quiet: no table, only what was written
    data = json.loads((tmp_path / "out.json").read_text())
    assert (data["config"]["train"]["iterations"], data["config"]["prune"]["rounds"]) == (40, 1)
    assert [r["iterations"] for r in data["rounds"]] == [40, 40]


def write_bad_configs(folder: Path) -> None:
    (folder / "malformed.toml").write_text("seed = [\n")
    (folder / "typo.toml").write_text("[train]\nitertions = 5\n")
    (folder / "empty-data").mkdir()


BAD_INPUTS = {
    "unknown model": (["--model", "lenet300"], "did you mean 'lenet-300-100'"),
    "unknown dataset": (["--dataset", "digit"], "unknown dataset 'digit'"),
    "model too big for the input": (["--model", "lenet-5"], "28x28"),
    "prune rate above 1": (["--prune-rate", "1.5"], "prune_rate must be in (0, 1)"),
    "negative rewind iteration": (["--rewind-iter", "-1"], "rewind_iter must be >= 0"),
    "rewind iteration at the end": (["--rewind-iter", "60"], "rewind_iter k=60"),
    "rewind iteration past the end": (["--rewind-iter", "500"], "rewind_iter"),
    "negative rounds": (["--rounds", "-1"], "rounds must be >= 0"),
    "target density above 1": (["--target-density", "1.5"], "target_density must be in (0, 1)"),
    "every layer ignored": (["--target-density", "0.5", "--ignore", "fc1,fc2,fc3"], "nothing can be pruned"),
    "target below the ignored layers": (["--target-density", "0.5", "--ignore", "fc1,fc2"], "unreachable"),
    "one shot below the ignored layers": (["--target-density", "0.5", "--one-shot", "--ignore", "fc1,fc2"],
                                          "unreachable in one shot"),
    "unknown layer": (["--ignore", "conv1"], "no prunable layer named 'conv1'"),
    "malformed length": (["--iterations", "2epochs"], "'Nit' / 'Nep'"),
    "unknown optimiser": (["--optimizer", "adm"], "invalid choice"),
    "malformed TOML": (["--config", "malformed.toml"], "is not valid TOML"),
    "unknown key in TOML": (["--config", "typo.toml"], "did you mean 'iterations'"),
    "missing TOML": (["--config", "absent.toml"], "does not exist"),
    "missing fashion-mnist": (["--dataset", "fashion-mnist", "--data-dir", "empty-data"], "no IDX files in"),
    "missing mnist": (["--dataset", "mnist", "--data-dir", "empty-data"], "mnist: no IDX files"),
    "unwritable json": (["--json", "no/such/dir/out.json"], "does not exist"),
}


@pytest.mark.usefixtures("fresh_data_cache", "no_system_fashion")
@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_exits_2_with_one_line_on_stderr(capsys, tmp_path, argv, fragment):
    write_bad_configs(tmp_path)
    code, out, err = run_cli(capsys, "ticket", *TINY_FLAGS, *argv)
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("ltstudy ticket: error:")
    assert fragment in err
    assert out == ""
    assert not (tmp_path / "out.json").exists()


def test_the_module_entry_point_reports_missing_data_in_one_line_without_a_traceback(tmp_path):
    """A real process: nothing but the one-line message may reach stderr."""
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "ltstudy.cli", "ticket", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
         "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert str(tmp_path / "empty" / "MNIST" / "raw") in proc.stderr
    assert proc.stdout == ""


def test_a_diverging_run_ends_with_one_line_and_exit_code_1(capsys, tmp_path):
    code, _, err = run_cli(capsys, "ticket", "--optimizer", "sgd", "--lr", "1e6", "--iterations", "40",
                             "--eval-every", "20", "--rounds", "1", "--quiet")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "loss became" in err and "Traceback" not in err


def test_the_lists_in_ticket_help_put_every_summary_in_one_column(capsys):
    code, out, _ = run_cli(capsys, "ticket", "--help")
    assert code == 0
    entries = [line for line in out[out.index("\ndatasets:"):].splitlines() if line.startswith("  ")]
    assert len(entries) > 30 and any(line.startswith("  magnitude-init-inverted ") for line in entries)
    columns = {len(line) - len(line[2:].split(" ", 1)[1].lstrip()) for line in entries}
    assert len(columns) == 1, columns  # (a name longer than the column pushed its summary right)


def test_a_control_named_as_a_mask_rule_says_how_to_run_it(capsys):
    code, out, err = run_cli(capsys, "ticket", *TINY_FLAGS, "--mask", "snip-reinit")
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("ltstudy ticket: error: prune.mask: 'snip-reinit' is a control (snip's mask")
    assert "run it alone with --control snip-reinit" in line and "[study] controls" in line
    code, out, _ = run_cli(capsys, "ticket", "--help")
    assert re.search(r"\n  snip-reinit +snip's mask", out)
    load_config(None, {"prune.mask": "snip", "prune.reinit": "random"})  # (its config form is accepted)


def test_a_misspelt_flag_is_one_line_that_names_the_flag_meant(capsys):
    code, out, err = run_cli(capsys, "ticket", *TINY_FLAGS, "--prunerate", "0.3")
    assert code == 2 and out == ""
    assert err.splitlines() == ["ltstudy ticket: error: unknown flag --prunerate; did you mean --prune-rate? (see "
                                "ltstudy ticket --help)"]
    code, _, err = run_cli(capsys, "ticket", "--dataset=digits", "--seeed=3")
    assert code == 2 and "unknown flag --seeed; did you mean --seed?" in err
