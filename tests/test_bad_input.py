"""Each hostile input the fuzz of 2026-12-05 met with a traceback, a crash or a run: now one line, exit 2, nothing made.

The read-only commands refuse their output paths before they read the study, so a study file is
enough here: no study has to exist.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ltstudy import cli
from tests.study_helpers import isolate, to_toml, write_study


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(monkeypatch, tmp_path)
    return tmp_path


def refused(capsys, argv: list[str]) -> str:
    """The CLI's answer to `argv`: exit 2 and one line on stderr (returned), nothing on stdout."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    (line,) = err.splitlines()
    assert line.startswith(f"ltstudy {argv[0]}: error: ") and out == ""
    return line


def study(here: Path, **study: object) -> str:
    """A tiny study file whose stores would be made in `here` (the defaults), with [study] updated."""
    return str(write_study(here, None, "s.toml", study={"n_trials": 1, **study}))


@pytest.mark.parametrize(("settings", "needle"), [
    ({"pack": 10_000_000}, "study.pack = 10,000,000 would train 10,000,000 copies of lenet-300-100"),
    ({"name": "a" * 5000}, "study.name is 5,000 characters long; MLflow names an experiment with at most 500"),
    ({"storage": "journal:/dev/null"}, "storage journal /dev/null is not a regular file (a device)"),
    ({"storage": "journal:" + "a" * 5000}, "is 5,000 bytes long; a file or folder name holds at most 255"),
    ({"replicates": 1_000_000_000}, "study.replicates must be >= 1 and at most 1000"),
    ({"threads": 1_000_000}, "study.threads must be between 0 (one per process) and 1024"),
], ids=["pack past memory", "a 5,000-character name", "a journal on a device", "a journal name too long",
        "a billion replicates", "a million threads"])
def test_a_study_the_fuzz_crashed_on_is_refused_in_one_line_and_creates_nothing(here, capsys, settings, needle):
    path = study(here, **settings)
    assert needle in refused(capsys, ["run", path, "--quiet"])
    assert os.listdir(here) == ["s.toml"]


def test_a_pack_within_memory_is_accepted_and_the_refusal_says_the_largest_that_fits(here, capsys):
    line = refused(capsys, ["run", study(here, pack=10_000_000), "--quiet"])
    most = int(line.rpartition("use pack <= ")[2].partition(" ")[0].replace(",", ""))
    assert 2 <= most < 10_000_000
    from ltstudy.study.config import load_study
    from ltstudy.study.engine_checks import check_with_engine

    half = most // 2  # (the memory free now is not what was free a moment ago; half of the bound fits still)
    check_with_engine(load_study(study(here, pack=half)))
    line = refused(capsys, ["run", study(here, pack=half), "--quiet", "--jobs", "4"])  # (a pack in each process)
    assert f"study.pack = {half:,} in each of --jobs 4 processes would train {4 * half:,} copies" in line


def test_a_round_longer_than_ten_million_iterations_is_refused(here, capsys):
    (here / "s.toml").write_text(to_toml({"study": {"name": "x"}, "train": {"iterations": 10**15}}))
    assert "train.iterations = 1000000000000000 is longer than 10,000,000 iterations" in \
        refused(capsys, ["run", "s.toml", "--quiet"])
    assert "= '10000000000ep' is 200,000,000,000 iterations, more than the 10,000,000" in \
        refused(capsys, ["ticket", "--dataset", "digits", "--iterations", "10000000000ep", "--quiet"])
    assert os.listdir(here) == ["s.toml"]


def test_a_study_name_flag_of_100000_characters_is_refused_before_anything_is_created(here, capsys):
    path = study(here)
    for command in ("run", "pareto", "worker"):
        assert "--study-name is 100,000 characters long" in refused(capsys, [command, path, "--study-name",
                                                                              "b" * 100_000])
    assert os.listdir(here) == ["s.toml"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["compare", "{s}", "--json", "."], "--json . is a folder; give a file name"),
    (["report", "{s}", "--out", "."], "--out . is a folder; give a file name"),
    (["pareto", "{s}", "--json", "new/"], "--json new/ is a folder; give a file name"),
    (["compare", "{s}", "--plot", "out.xyz"], "--plot out.xyz: matplotlib cannot write .xyz files; end it with .png"),
    (["pareto", "{s}", "--plot", "x.xyz"], "--plot x.xyz: matplotlib cannot write .xyz files"),
    (["pareto", "{s}", "--plot", "x"], "--plot x: the name has no format suffix"),
    (["export", "{s}", "--out", "/proc/nope"], "--out /proc/nope cannot be created: /proc is not a writable folder"),
    (["stability", "{s}", "--plot", "s.pdf"], "--plot s.pdf: this figure is drawn as PNG only; end it with .png"),
    (["ticket", "--json", "a" * 300 + ".json"], "is 305 bytes long; a file or folder name holds at most 255"),
    (["ticket", "--save", "/proc/nope"], "--save /proc/nope cannot be created"),
    (["cache", "info", "--cache-dir", "c" * 5000], "cache folder"),
], ids=["compare --json .", "report --out .", "a name ending in a slash", "compare --plot out.xyz",
        "pareto --plot x.xyz", "a plot without a suffix", "export --out /proc/nope",
        "a study's stability plot as PDF", "a JSON name too long", "--save in /proc", "a cache folder name too long"])
def test_an_output_path_no_file_can_take_is_refused_before_the_study_is_read(here, capsys, argv, needle):
    path = study(here)
    assert needle in refused(capsys, [path if a == "{s}" else a for a in argv])
    assert os.listdir(here) == ["s.toml"]


def test_the_report_named_after_a_long_study_name_is_refused_before_it_is_built(here, capsys):
    path = study(here, name="r" * 250)  # (a name MLflow takes, but "<name>_report.html" is 262 bytes)
    assert "is 262 bytes long" in refused(capsys, ["report", path])


def test_a_plot_in_any_format_matplotlib_writes_passes_the_check(here):
    from ltstudy.cli.common import check_output

    for name in ("p.png", "p.PDF", "p.svg", "p.jpeg"):
        check_output(name, "--plot", plot=True)
    assert os.listdir(here) == []  # (checked by trying, and nothing left behind)


@pytest.mark.parametrize(("argv", "needle"), [
    (["ticket", "--config", "c" * 5000], "config file cccc"),
    (["stability", "--dataset", "digits", "--k", "0", "--points", "99999999999999999999"], "--points must be 2"),
    (["ticket", "--dataset", "digits", "--stability-points", "100000"], "stability.points must be 0 (off) or 2"),
], ids=["a config name too long", "a path of 10^20 points", "10^5 points per round"])
def test_what_the_second_fuzz_found_is_one_line(here, capsys, argv, needle):
    assert needle in refused(capsys, argv)
    assert os.listdir(here) == []


def test_the_largest_seed_trains(here, capsys):
    """seed = 2^63 - 1 is valid; the data order's stream once overflowed torch mid-round (the third fuzz)."""
    code = cli.main(["ticket", "--dataset", "digits", "--iterations", "40", "--eval-every", "20", "--rounds", "1",
                     "--quiet", "--seed", str(2**63 - 1), "--json", "t.json"])
    assert code == 0, capsys.readouterr().err
    from ltstudy.engine.seeds import stream_seed

    assert stream_seed(2**63 - 1, 3, 1_000_003) < 2**63 - 1 and stream_seed(5, 3, 1_000_003) == 5 * 1_000_003 + 3
