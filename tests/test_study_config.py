"""Study files: what they may say, and how every mistake is reported before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltstudy import cli
from ltstudy.engine.errors import ConfigError
from ltstudy.study.config import DEFAULT_TRACKING_URI, load_study, parse_study
from ltstudy.study.storage import check_storage, check_tracking_uri, redact, storage_kind
from tests.study_helpers import Stores, free_port, isolate, study_doc, to_toml, write_study


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stores:
    isolate(monkeypatch, tmp_path)
    return Stores(tmp_path)


def refused(capsys: pytest.CaptureFixture, stores: Stores, argv: list[str]) -> str:
    """Run the CLI, expect a usage error, and return its single stderr line."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ltstudy run: error: ")
    assert "Traceback" not in err
    assert stores.created() == [], "a rejected study must create no store, run or file"
    return lines[0]


# --------------------------------------------------------------------------- what a study file says


def test_search_entries_are_fixed_choices_or_ranges(stores: Stores):
    path = write_study(stores.root, stores, study={"min_dense_accuracy": 0.5}, search={
        "prune_rate": {"low": 0.1, "high": 0.5},
        "rewind_iter": {"low": 0, "high": 40, "step": 20},
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "scope": ["layerwise", "global"],
        "reinit": None,
        "rounds": 2,
    })
    cfg = load_study(path)
    s = cfg.search
    assert (s["prune_rate"].low, s["prune_rate"].high, s["prune_rate"].step) == (0.1, 0.5, None)
    assert s["rewind_iter"].is_int and s["rewind_iter"].grid_values() == [0, 20, 40]
    assert s["lr"].log
    assert s["scope"].choices == ("layerwise", "global")
    assert not s["rounds"].searched and s["rounds"].fixed == 2
    assert set(cfg.searched) == {"prune_rate", "rewind_iter", "lr", "scope"}
    # Fixed values are applied to the base config; searched ones start at their first extreme.
    assert cfg.base.prune.rounds == 2
    assert cfg.base.prune.prune_rate == 0.1
    assert cfg.base.device == "cpu"


def test_a_trial_config_is_the_base_with_the_sampled_values_and_the_replicate_seed(stores: Stores):
    cfg = load_study(write_study(stores.root, stores))
    tcfg = cfg.trial_config({"prune_rate": 0.5, "scope": "global", "lr": 3e-3}, seed=7)
    assert (tcfg.prune.prune_rate, tcfg.prune.scope, tcfg.train.lr, tcfg.seed) == (0.5, "global", 3e-3, 7)
    assert tcfg.train.iterations == 60  # from [train]
    assert cfg.directions == ["maximize", "minimize"]


def test_command_line_style_overrides_win_over_the_file(stores: Stores):
    cfg = load_study(write_study(stores.root, stores), {"study.n_trials": 9, "study.name": "other"})
    assert (cfg.study.n_trials, cfg.study.name) == (9, "other")


def test_tracking_uri_precedence_is_flag_then_file_then_environment_then_default(
        stores: Stores, monkeypatch: pytest.MonkeyPatch):
    in_file = load_study(write_study(stores.root, stores))
    assert in_file.tracking_uri("http://flag:5000") == "http://flag:5000"
    assert in_file.tracking_uri() == stores.tracking_uri
    not_in_file = load_study(write_study(stores.root, None))
    assert not_in_file.tracking_uri() == DEFAULT_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert not_in_file.tracking_uri() == "http://env:5000"


def test_the_cache_folder_is_the_flag_then_the_file_then_the_environment_then_the_default(
        monkeypatch: pytest.MonkeyPatch):
    from ltstudy.engine.cache import DEFAULT_CACHE_DIR

    monkeypatch.delenv("LTSTUDY_CACHE_DIR", raising=False)
    in_file, not_in_file = parse_study(study_doc(study={"cache_dir": "from-file"})), parse_study(study_doc())
    assert in_file.cache_dir("from-flag") == "from-flag"
    assert in_file.cache_dir() == "from-file"
    assert not_in_file.cache_dir() == DEFAULT_CACHE_DIR
    monkeypatch.setenv("LTSTUDY_CACHE_DIR", "from-env")
    assert (in_file.cache_dir(), not_in_file.cache_dir()) == ("from-file", "from-env")


def test_the_study_hash_follows_the_search_space_not_the_study_name():
    a = parse_study(study_doc())
    renamed = parse_study(study_doc(study={"name": "renamed"}))
    wider = parse_study(study_doc(search={"prune_rate": [0.2, 0.5, 0.8]}))
    assert a.hash() == renamed.hash()
    assert a.hash() != wider.hash()


@pytest.mark.parametrize(("sections", "needle"), [
    ({"study": {"sampler": "grid"}, "search": {"prune_rate": 0.2, "rewind_iter": 0, "scope": "global",
                                                "reinit": "rewind"}}, "needs at least one searched setting"),
    ({"search": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "log range needs low > 0"),
    ({"search": {"rewind_iter": {"low": 0, "high": 40, "step": 0}}}, "step must be > 0"),
    ({"search": {"prune_rate": {"low": 0.1}}}, "needs both low and high"),
    ({"study": {"epsilon": 1.0}}, "study.epsilon must be in [0, 1)"),
    ({"study": {"name": "a/b"}}, "without slashes"),
    ({"search": {"rounds": 0}}, "rounds = 0 prunes nothing, so p, k, scope and re-init cannot matter"),
    ({"search": {"rounds": [0, 2]}}, "rounds = 0 prunes nothing"),
    ({"search": {"lr": [1e-3, 1e-2]}}, "[search] varies lr, so a badly trained dense network would make every round"),
    ({"search": {"dropout": [0.0, 0.5], "momentum": [0.0, 0.9]}}, "varies momentum, dropout"),
    ({"study": {"stop_on_drop": "sometimes"}}, 'stop_on_drop must be true, false or "unmatched"'),
    ({"study": {"pack": 0}}, "study.pack must be >= 1"),
    ({"study": {"max_dense_gap": 1.5}}, "study.max_dense_gap must be in [0, 1] (1 turns it off)"),
    ({"study": {"max_dense_gap": -0.1}}, "study.max_dense_gap must be in [0, 1]"),
])
def test_parse_study_rejects(sections, needle):
    with pytest.raises(ConfigError) as err:
        parse_study(study_doc(**sections))
    assert needle in str(err.value)


def test_a_grid_over_integer_ranges_and_lists_enumerates_every_value():
    cfg = parse_study(study_doc(study={"sampler": "grid"},
                                search={"rewind_iter": {"low": 0, "high": 20, "step": 10},
                                        "prune_rate": {"low": 0.2, "high": 0.4, "step": 0.1}}))
    grid = cfg.grid()
    assert grid["rewind_iter"] == [0, 10, 20]
    assert grid["prune_rate"] == pytest.approx([0.2, 0.3, 0.4])
    assert grid["scope"] == ["layerwise", "global"]


@pytest.mark.parametrize(("low", "high", "step", "values"), [
    (0.1, 0.3, 0.1, [0.1, 0.2, 0.3]),
    (0.2, 0.5, 0.1, [0.2, 0.3, 0.4, 0.5]),
    (0.1, 0.7, 0.2, [0.1, 0.3, 0.5, 0.7]),
    (0.1, 0.35, 0.1, [0.1, 0.2, 0.3]),  # high off the step grid: the last step below it
])
def test_a_float_grid_keeps_both_ends_exactly(low, high, step, values):
    cfg = parse_study(study_doc(study={"sampler": "grid"},
                                search={"prune_rate": {"low": low, "high": high, "step": step}}))
    assert cfg.grid()["prune_rate"] == values  # exact: no 0.30000000000000004 in a trial's config


def test_the_quickstart_study_is_valid():
    cfg = load_study(Path(__file__).parent.parent / "studies" / "quickstart.toml")
    assert cfg.study.name == "quickstart"
    assert set(cfg.searched) == {"prune_rate", "rewind_iter", "scope"}
    assert cfg.study.controls == ["random-reinit", "random-mask"]  # the paper's controls beside every ticket
    assert cfg.base.prune.output_rate == 0.5


# --------------------------------------------------------------------------- storage URLs


def test_passwords_are_redacted_from_urls():
    assert redact("postgresql://user:secret@db.example:5432/lt") == "postgresql://user:***@db.example:5432/lt"
    assert redact("journal:/tmp/x.journal") == "journal:/tmp/x.journal"


@pytest.mark.parametrize(("url", "kind"), [("journal:/tmp/o.journal", "journal"), ("sqlite:////tmp/o.db", "sqlite"),
                                           ("postgresql+psycopg://u:p@h/db", "rdb"), ("mysql://u@h/db", "rdb")])
def test_storage_kinds(url, kind):
    assert storage_kind(url) == kind


def test_an_unsupported_storage_message_hides_the_password():
    with pytest.raises(ConfigError) as err:
        storage_kind("redis://user:secret@host/0")
    assert "secret" not in str(err.value) and "journal:PATH" in str(err.value)


def test_the_storage_database_check_gives_up_after_a_bounded_wait(monkeypatch):
    """A firewalled host must not hang the check: the driver gets a connect timeout."""
    import sqlalchemy

    seen = {}

    def create_engine(url, connect_args=None, **kwargs):
        seen.update(connect_args or {})
        raise RuntimeError("timeout expired")

    monkeypatch.setattr(sqlalchemy, "create_engine", create_engine)
    with pytest.raises(ConfigError) as err:
        check_storage("postgresql://user:secret@10.255.255.1:5432/db")
    assert seen == {"connect_timeout": 5}
    assert "10.255.255.1:5432" in str(err.value) and "timeout expired" in str(err.value)
    assert "secret" not in str(err.value)


def test_the_tracking_server_check_gives_up_after_a_bounded_wait(monkeypatch):
    import urllib.request

    seen = {}

    def urlopen(url, timeout=None):
        seen.update(url=url, timeout=timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(ConfigError) as err:
        check_tracking_uri("http://user:secret@mlflow.example:5000/")
    assert seen == {"url": "http://user:secret@mlflow.example:5000/health", "timeout": 5.0}
    assert "cannot reach the MLflow server" in str(err.value) and "secret" not in str(err.value)


# --------------------------------------------------------------------------- mistakes, through the CLI

def _case(**sections):
    return sections


CONFIG_MISTAKES = {
    "unknown key in [study]": (_case(study={"n_trial": 3}), ["unknown key 'n_trial' in [study]",
                                                             "did you mean 'n_trials'?"]),
    "unknown key in [search]": (_case(search={"prune_rat": [0.2, 0.5]}), ["unknown key 'prune_rat' in [search]",
                                                                          "did you mean 'prune_rate'?"]),
    "unknown key in a range": (_case(search={"prune_rate": {"low": 0.1, "hihg": 0.5}}),
                               ["unknown key 'hihg'", "did you mean 'high'?"]),
    "unknown section": (_case(serach={"prune_rate": 0.2}), ["unknown section 'serach'", "did you mean 'search'?"]),
    "empty choices": (_case(search={"scope": []}), ["search.scope has no choices"]),
    "repeated choice": (_case(search={"prune_rate": [0.2, 0.2]}), ["search.prune_rate lists a choice twice"]),
    "inverted range": (_case(search={"prune_rate": {"low": 0.5, "high": 0.1}}),
                       ["search.prune_rate range is inverted", "swap"]),
    "range out of domain": (_case(search={"prune_rate": {"low": 0.1, "high": 1.5}}),
                            ["search.prune_rate = 1.5 is out of range", "prune_rate must be in (0, 1)"]),
    "choice out of domain": (_case(search={"scope": ["layerwise", "globl"]}),
                             ["search.scope = 'globl' is out of range", "did you mean 'global'?"]),
    "rewind choice at the training length": (_case(search={"rewind_iter": [0, 60]}),
                                             ["rewind_iter = 60", "below the training length 60"]),
    "negative rounds": (_case(search={"rounds": -1}), ["search.rounds = -1 is out of range",
                                                       "prune.rounds must be >= 0"]),
    "range over text": (_case(search={"scope": {"low": 0, "high": 1}}), ["search.scope is not numeric"]),
    "fractional integer range": (_case(search={"rewind_iter": {"low": 0, "high": 10.5}}),
                                 ["search.rewind_iter is an integer setting"]),
    "log range with a step": (_case(search={"lr": {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}),
                              ["cannot combine log = true with a step"]),
    "set twice": (_case(prune={"scope": "global"}), ["scope is set in both [prune] and [search]"]),
    "grid over a continuous range": (_case(study={"sampler": "grid"}, search={"prune_rate": {"low": 0.1,
                                                                                             "high": 0.5}}),
                                     ["grid sampler cannot enumerate a continuous range"]),
    "unknown sampler": (_case(study={"sampler": "tpee"}), ["study.sampler must be one of", "did you mean 'tpe'?"]),
    "unknown objective": (_case(study={"objectives": ["ticket_sparsty", "train_iterations"]}),
                          ["unknown objective 'ticket_sparsty'", "did you mean 'ticket_sparsity'?"]),
    "accuracy_at_density without a value": (_case(study={"objectives": ["accuracy_at_density"]}),
                                            ["'accuracy_at_density' needs a density in (0, 1]"]),
    "an objective twice": (_case(study={"objectives": ["ticket_sparsity", "ticket_sparsity"]}),
                           ["lists an objective twice"]),
    "stop_on_drop without a bound": (_case(study={"stop_on_drop": True}), ["stop_on_drop needs"]),
    "zero replicates": (_case(study={"replicates": 0}), ["study.replicates must be >= 1"]),
    "unknown dataset": (_case(data={"name": "digitz"}), ["digitz"]),
}


@pytest.mark.parametrize(("sections", "needles"), list(CONFIG_MISTAKES.values()), ids=list(CONFIG_MISTAKES))
def test_every_config_mistake_is_one_line_exit_2_and_creates_nothing(stores, capsys, sections, needles):
    path = write_study(stores.root, stores, **sections)
    line = refused(capsys, stores, ["run", str(path), "--quiet"])
    for needle in needles:
        assert needle in line


def test_malformed_toml_is_one_line(stores, capsys):
    path = stores.root / "broken.toml"
    path.write_text(to_toml(study_doc(stores)) + "\n[search\nprune_rate = [0.2\n")
    line = refused(capsys, stores, ["run", str(path)])
    assert "is not valid TOML" in line


def test_a_missing_study_file_is_one_line(stores, capsys):
    line = refused(capsys, stores, ["run", str(stores.root / "nope.toml")])
    assert "does not exist" in line


def test_a_journal_under_a_regular_file_is_refused(stores, capsys):
    (stores.root / "afile").write_text("not a folder")
    path = write_study(stores.root, stores, study={"storage": f"journal:{stores.root}/afile/x.journal"})
    line = refused(capsys, stores, ["run", str(path)])
    assert "afile" in line and "not a writable folder" in line
    assert not (stores.root / "afile").is_dir()


def test_an_unknown_storage_scheme_is_refused(stores, capsys):
    path = write_study(stores.root, stores)
    line = refused(capsys, stores, ["run", str(path), "--storage", "redis://localhost/0"])
    assert "is not supported" in line and "journal:PATH" in line


def test_an_unreachable_storage_database_names_host_and_port_and_hides_the_password(stores, capsys):
    path = write_study(stores.root, stores)
    port = free_port()
    line = refused(capsys, stores, ["run", str(path), "--storage", f"postgresql://user:secret@127.0.0.1:{port}/db"])
    assert f"127.0.0.1:{port}" in line
    assert "secret" not in line


@pytest.mark.parametrize("uri", ["mlruns", "./mlruns", "file:///tmp/mlruns"])
def test_a_file_store_tracking_uri_is_refused(stores, capsys, uri):
    path = write_study(stores.root, stores)
    line = refused(capsys, stores, ["run", str(path), "--tracking-uri", uri])
    assert "is not supported" in line and "sqlite:///" in line


def test_an_unreachable_tracking_server_is_refused(stores, capsys):
    path = write_study(stores.root, stores)
    port = free_port()
    line = refused(capsys, stores, ["run", str(path), "--tracking-uri", f"http://127.0.0.1:{port}"])
    assert f"cannot reach the MLflow server at http://127.0.0.1:{port}" in line


@pytest.mark.parametrize(("flag", "value", "needle"), [("--jobs", "0", "--jobs must be >= 1"),
                                                      ("--n-trials", "-1", "--n-trials must be >= 0")])
def test_bad_run_options_are_refused(stores, capsys, flag, value, needle):
    path = write_study(stores.root, stores)
    assert needle in refused(capsys, stores, ["run", str(path), flag, value])


def test_the_installed_command_prints_one_line_and_no_traceback(tmp_path: Path):
    """A real process: a driver-level failure (unreachable database) must not escape as a traceback."""
    stores = Stores(tmp_path)
    path = write_study(tmp_path, stores)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("LTSTUDY_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "ltstudy.cli", "run", str(path), "--storage",
                           f"postgresql://user:secret@127.0.0.1:{port}/db"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ltstudy run: error: cannot reach"), proc.stderr
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    assert stores.created() == []


def test_searching_a_training_setting_is_allowed_with_min_dense_accuracy_or_without_a_matching_objective():
    assert parse_study(study_doc(study={"min_dense_accuracy": 0.9}, search={"lr": [1e-3, 1e-2]})).searched["lr"]
    only_density = study_doc(study={"objectives": ["accuracy_at_density:0.1"]}, search={"lr": [1e-3, 1e-2]})
    assert parse_study(only_density).searched["lr"]


# --------------------------------------------------------------------------- the ready studies


def _stated_rounds(path: Path) -> list[int]:
    """Round counts the header comment of a study file states ("15 rounds", "11, 6 or 4 rounds")."""
    import re

    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    found = []
    for m in re.finditer(r"((?:\d+(?:, | or | and ))*\d+) (?:pruning )?rounds?\b", header):
        found += [int(n) for n in re.findall(r"\d+", m.group(1))]
    return found


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.glob("studies/*.toml")),
                         ids=lambda p: p.name)
def test_every_ready_study_runs_the_round_counts_its_comment_states(path: Path):
    from ltstudy.engine import pruning
    from ltstudy.engine.models import build_model
    from ltstudy.engine.registry import DATASETS

    cfg = load_study(path)
    stated = _stated_rounds(path)
    assert stated, f"{path.name} should say in its header how many pruning rounds it runs"
    shape = DATASETS.get(cfg.base.data.name).input_shape
    layers = pruning.prunable_layers(build_model(cfg.base.model.name, shape, 10))
    import itertools

    from ltstudy.engine.registry import SCOPES

    keys = [k for k in ("prune_rate", "one_shot", "target_density", "rounds") if k in cfg.searched]
    runs = set()
    for values in itertools.product(*(cfg.search[k].extremes() for k in keys)):
        trial = cfg.trial_config(dict(zip(keys, values, strict=True)), 0).prune
        shared = SCOPES.load(trial.scope)().shared(layers, trial)
        runs.add(pruning.plan_rounds(layers, pruning.layer_rates(layers, trial), shared, trial))
    assert runs <= set(stated), f"{path.name} states {stated} rounds but runs {sorted(runs)}"


def test_the_paper_presets_use_the_papers_per_layer_rates():
    root = Path(__file__).resolve().parent.parent / "studies"
    mnist = load_study(root / "mnist_lenet300_paper.toml")
    assert mnist.base.prune.prune_rate == 0.2 and mnist.base.prune.output_rate == 0.5  # output layer at 10%
    conv6 = load_study(root / "cifar10_conv6.toml")
    assert (conv6.base.prune.conv_rate, conv6.base.prune.output_rate) == (0.15, 0.5)
    resnet = load_study(root / "cifar10_resnet20_rewind.toml")
    assert resnet.base.prune.ignore == ["fc"]  # Frankle et al. leave the fully connected output layer unpruned


def test_the_searches_built_before_a_run_are_at_most_max_combinations_and_a_larger_search_says_so(monkeypatch):
    """Each combination of extremes is a search built (about 0.1 s for LeNet): past the limit, one warning says how
    many were checked; the rest are checked as trials draw them."""
    import warnings

    from ltstudy.engine.errors import SettingWarning
    from ltstudy.study import engine_checks

    monkeypatch.setattr(engine_checks, "MAX_COMBINATIONS", 3)
    built: list[dict] = []
    real = engine_checks.ticket_search
    monkeypatch.setattr(engine_checks, "ticket_search", lambda cfg, data, *a, **kw: (
        built.append({"p": cfg.prune.prune_rate, "r": cfg.prune.rounds}), real(cfg, data, *a, **kw))[1])
    cfg = parse_study(study_doc(search={"prune_rate": [0.2, 0.5], "rounds": [1, 2], "scope": "layerwise"}))
    with pytest.warns(SettingWarning, match=r"\[search\] has 4 combinations of the extremes of prune_rate, rounds; "
                                            r"the first 3 are checked before the run"):
        engine_checks.check_with_engine(cfg)
    assert len(built) == 3 + 1  # (and the base search)
    small = parse_study(study_doc(search={"prune_rate": [0.2, 0.5], "rounds": 2, "scope": "layerwise"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        engine_checks.check_with_engine(small)
