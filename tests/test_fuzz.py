"""Hostile input never gives a traceback: a property-based fuzz of study files and flags, in-process.

Hypothesis draws mutated study files and flag sets over the commands (tests/hostile.py). Every input
ends in a result, or in one line on stderr with exit 2 that creates nothing. Nothing here trains:
an accepted `run` or `worker` stops once it has created its Optuna study (before its MLflow store,
seconds to make), an accepted `ticket` or `stability` where training would start; so 400 examples
take about 20 s, and a `run` that passed its checks must have created nothing until then,
as they promise. The read-only commands read one small finished study. (tests/fuzz_cli.py runs
500+ such inputs as real subprocesses, accepted ones to the end.)
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltstudy import cli
from tests import hostile
from tests.study_helpers import Stores, quiet_run, seed_mlflow_db, study_doc, to_toml

EXAMPLES = 200  # per test (two tests): 400 hostile inputs in every CI run, in about 20 s


class Accepted(BaseException):  # (BaseException: no `except Exception` of the code under test swallows it)
    """Raised where an accepted input would first create a study or start training."""


def _accept(*args, **kwargs):
    raise Accepted


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, dict]:
    """A finished one-trial study (stores and cache beside it) for the read-only commands: its file and content."""
    root = tmp_path_factory.mktemp("fuzz-study")
    stores = Stores(root)
    seed_mlflow_db(tmp_path_factory, stores.db)
    doc = study_doc(stores, study={"n_trials": 1, "cache_dir": str(root / "cache")},
                    search={"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "scope": "layerwise",
                            "reinit": "rewind", "rounds": 1})
    path = root / "study.toml"
    path.write_text(to_toml(doc))
    with quiet_run(root):
        assert cli.main(["run", str(path), "--quiet"]) == 0
    return str(path), doc


@pytest.fixture
def cut_before_creation(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Accepted inputs stop before anything is trained (or an MLflow store made: seconds each). A `run` or
    `worker` goes as far as creating its Optuna study, where a bad storage shows; what its working folder held
    when its checks had passed is kept in the list returned (the checks promise to create nothing)."""
    after_checks: list[list[str]] = []
    monkeypatch.setattr("ltstudy.study.runner.set_threads", lambda *a, **k: after_checks.append(tree(os.getcwd())))
    monkeypatch.setattr("ltstudy.study.workers.set_threads", lambda *a, **k: after_checks.append(tree(os.getcwd())))
    monkeypatch.setattr("ltstudy.study.runner.attach_tracking", _accept)
    monkeypatch.setattr("ltstudy.study.workers.attach_tracking", _accept)
    monkeypatch.setattr("ltstudy.engine.search.Search.run", _accept)
    monkeypatch.setattr("ltstudy.engine.stability.StabilityAnalysis.measure", _accept)
    for var in ("MLFLOW_TRACKING_URI", "LTSTUDY_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    return after_checks


def tree(root: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


@contextlib.contextmanager
def workdir():
    """A fresh, empty working folder that is also $HOME (so `~/x` lands in it); restores both."""
    cwd, home = os.getcwd(), os.environ.get("HOME")
    with tempfile.TemporaryDirectory(prefix="ltstudy-fuzz-") as tmp:
        os.chdir(tmp)
        os.environ["HOME"] = tmp
        try:
            yield tmp
        finally:
            os.chdir(cwd)
            if home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = home


def check(case: hostile.Case, study: str, after_checks: list[list[str]]) -> None:
    """Run one case in-process and assert the answer: a result, or one line with exit 2 that created nothing."""
    after_checks.clear()
    with workdir() as tmp:
        if case.study is not None:
            Path(tmp, "study.toml").write_text(case.study, encoding="utf-8")
        before = tree(tmp)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(hostile.resolve(case, study))
            except Accepted:
                code = 0
            except SystemExit as exc:  # argparse: --help, a usage error
                code = exc.code
        what = f"{case.describe()}\nstderr: {err.getvalue()[-2000:]}"
        assert "Traceback" not in err.getvalue(), what
        assert code in (0, 2), what
        lines = [line for line in err.getvalue().splitlines() if ": warning: " not in line]
        if code == 2:
            assert len(lines) == 1 and ": error: " in lines[0], what
            assert tree(tmp) == before, f"a refusal created {sorted(set(tree(tmp)) - set(before))}: {what}"
        for seen in after_checks:  # (a run's checks passed: they create nothing)
            assert seen == before, f"the checks created {sorted(set(seen) - set(before))}: {what}"


# A case is drawn from a seeded generator (tests/hostile.py, shared with tests/fuzz_cli.py): hypothesis picks the
# seed and the command, so a failing example is reproduced by them.
SEEDS = st.integers(0, 2**32 - 1)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@FUZZ
@given(seed=SEEDS, command=st.sampled_from(hostile.STUDY_COMMANDS))
def test_a_mutated_study_file_is_a_result_or_one_line_that_creates_nothing(finished, cut_before_creation, seed,
                                                                             command):
    check(hostile.study_case(random.Random(seed), command, finished[1]), finished[0], cut_before_creation)


@FUZZ
@given(seed=SEEDS, command=st.sampled_from(sorted(hostile.COMMANDS)))
def test_hostile_flags_are_a_result_or_one_line_that_creates_nothing(finished, cut_before_creation, seed, command):
    check(hostile.flag_case(random.Random(seed), command), finished[0], cut_before_creation)
