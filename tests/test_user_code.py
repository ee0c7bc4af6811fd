"""A user's own code in a study: pinned like its settings, found from any folder, and a pruning-at-initialisation
method of one's own usable as a control. Each command runs in a fresh process, as a user runs it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from ltstudy.engine.errors import ConfigError
from ltstudy.engine.registry import AT_INIT, CONTROLS, REINITS
from ltstudy.study.storage import open_storage
from tests.study_helpers import seed_mlflow_db, to_toml
from tests.test_plugins import ltstudy

BLOCKS = "from torch import nn\nACTIVATION = nn.GELU\n"
MODELS = '''
"""A model of the user's, built from a block in another file of theirs."""
from torch import nn
from ltstudy.engine.registry import MODELS
from myblocks import ACTIVATION

def build_mlp(input_shape, num_classes, dropout):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, WIDTH), ACTIVATION(), nn.Linear(WIDTH, num_classes))

MODELS.add("my-mlp", "mymodels:build_mlp", "a 1-hidden-layer MLP")
'''


def tiny_study(folder: Path, plugins: list[str], model: str = "my-mlp", prune_rate=0.5, **study) -> Path:
    """A one-trial study on the digits, with its stores in `folder`."""
    doc = {"study": {"name": "mine", "plugins": plugins, "n_trials": 1, "sampler": "random", "device": "cpu",
                     "storage": f"journal:{folder / 'optuna.journal'}",
                     "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "cache_dir": str(folder / "cache"),
                     **study},
           "data": {"name": "digits"}, "model": {"name": model}, "train": {"iterations": 40, "eval_every": 20},
           "search": {"prune_rate": prune_rate, "rounds": 1}}
    path = folder / "study.toml"
    path.write_text(to_toml(doc))
    return path


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    return line


# --------------------------------------------------------------------------- 1. a study is pinned to its code


def test_a_study_continued_with_other_code_of_the_users_is_refused_in_one_line_naming_each_module(
        tmp_path, tmp_path_factory):
    (tmp_path / "myblocks.py").write_text(BLOCKS)
    (tmp_path / "mymodels.py").write_text(MODELS.replace("WIDTH", "32"))
    seed_mlflow_db(tmp_path_factory, tmp_path / "mlflow.db")
    tiny_study(tmp_path, ["mymodels"], prune_rate=[0.2, 0.5])
    first = ltstudy("run", "study.toml", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    # GELU -> ReLU in the file the model imports its block from: another network, so the study refuses it,
    # however it is continued.
    (tmp_path / "myblocks.py").write_text(BLOCKS.replace("GELU", "ReLU"))
    for argv in (["run", "study.toml", "--more", "1"], ["run", "study.toml", "--more", "2", "--jobs", "2"],
                 ["worker", "study.toml"]):
        line = one_line(ltstudy(*argv, "--quiet", cwd=tmp_path))
        assert "study 'mine' was created with other code of yours (module myblocks changed)" in line, argv
        assert "--study-name" in line
    (tmp_path / "myblocks.py").write_text(BLOCKS)
    (tmp_path / "mymodels.py").write_text(MODELS.replace("WIDTH", "48"))
    assert "(module mymodels changed)" in one_line(ltstudy("run", "study.toml", "--more", "1", cwd=tmp_path))

    # The code restored (a comment and a docstring reworded): the study continues.
    (tmp_path / "mymodels.py").write_text(MODELS.replace("WIDTH", "32").replace("user's", "user's own")
                                          + "# reworded\n")
    again = ltstudy("run", "study.toml", "--more", "1", "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="mine", storage=open_storage(f"journal:{tmp_path / 'optuna.journal'}"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(study.user_attrs["code"]) == ["myblocks", "mymodels"]  # ltstudy's and torch's own are not


@pytest.fixture
def my_modules(tmp_path, monkeypatch) -> Path:
    """mymodels.py and myblocks.py in `tmp_path`, importable in this process for the test only."""
    import ltstudy.engine.registry as registry

    (tmp_path / "myblocks.py").write_text(BLOCKS)
    (tmp_path / "mymodels.py").write_text(MODELS.replace("WIDTH", "32"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_LOADED", {})
    monkeypatch.setattr(registry.MODELS, "_entries", dict(registry.MODELS._entries))
    for name in ("mymodels", "myblocks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield tmp_path
    for name in ("mymodels", "myblocks"):
        sys.modules.pop(name, None)


def test_the_code_a_study_records_is_every_module_of_the_users_it_uses_and_nothing_else(my_modules):
    from ltstudy.study.config import load_study
    from ltstudy.study.user_code import code_changes, code_digests

    tmp_path = my_modules
    (tmp_path / "unused.py").write_text("X = 1\n")  # beside them, imported by nothing
    cfg = load_study(tiny_study(tmp_path, ["mymodels"]))
    code = code_digests(cfg)
    assert sorted(code) == ["myblocks", "mymodels"]
    assert code_digests(load_study(tiny_study(tmp_path, [], model="lenet-300-100"))) == {}  # the built-ins only
    assert code_changes(code, {**code, "mymodels": "x"}) == ["module mymodels changed"]
    assert code_changes(code, {"mymodels": code["mymodels"]}) == ["module myblocks is no longer used"]


def test_a_study_made_before_code_was_recorded_is_pinned_to_the_code_of_its_next_run(my_modules):
    from ltstudy.study.config import load_study
    from ltstudy.study.session import open_study
    from ltstudy.study.user_code import code_digests

    cfg = load_study(tiny_study(my_modules, ["mymodels"]))
    url = f"journal:{my_modules / 'optuna.journal'}"
    old = optuna.create_study(study_name="mine", storage=open_storage(url), directions=cfg.directions)
    old.enqueue_trial({})  # (it has a trial: an old study, not one another worker is creating right now)
    assert "code" not in old.user_attrs
    assert open_study(cfg, url, "mine").study.user_attrs["code"] == code_digests(cfg) != {}


# --------------------------------------------------------------------------- 2. a plugin given as a path


PLUGIN = '''
from torch import nn
from ltstudy.engine.registry import MODELS

def build_tanh_mlp(input_shape, num_classes, dropout):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.Tanh(), nn.Linear(32, num_classes))

MODELS.add("tanh-mlp", "mymodels:build_tanh_mlp", "a tanh MLP")
'''


@pytest.fixture
def elsewhere(tmp_path) -> tuple[Path, Path]:
    """A plugin file in one folder, and another folder to work in."""
    plugins, work = tmp_path / "plugins", tmp_path / "work"
    plugins.mkdir()
    work.mkdir()
    (plugins / "mymodels.py").write_text(PLUGIN)
    return plugins / "mymodels.py", work


def test_a_plugin_given_as_a_path_from_another_folder_runs_a_ticket(elsewhere):
    plugin, work = elsewhere
    proc = ltstudy("ticket", "--plugin", str(plugin), "--model", "tanh-mlp", "--dataset", "digits", "--iterations",
                   "40", "--eval-every", "20", "--rounds", "1", "--device", "cpu", "--quiet", "--json", "out.json",
                   cwd=work)
    assert proc.returncode == 0, proc.stderr
    relative = ltstudy("ticket", "--plugin", "../plugins/mymodels.py", "--model", "tanh-mlp", "--dataset", "digits",
                       "--iterations", "40", "--eval-every", "20", "--rounds", "1", "--device", "cpu", "--quiet",
                       cwd=work)
    assert relative.returncode == 0, relative.stderr


def test_a_study_with_a_plugin_given_as_an_absolute_path_runs_in_worker_processes_too(elsewhere, tmp_path_factory):
    plugin, work = elsewhere
    seed_mlflow_db(tmp_path_factory, work / "mlflow.db")
    tiny_study(work, [str(plugin)], model="tanh-mlp", prune_rate=[0.2, 0.5], n_trials=2)
    proc = ltstudy("run", "study.toml", "--jobs", "2", "--quiet", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "ran 2 trials (2 COMPLETE)" in proc.stdout
    study = optuna.load_study(study_name="mine", storage=open_storage(f"journal:{work / 'optuna.journal'}"))
    assert all(t.user_attrs["rounds"][0]["weights_remaining"] == 64 * 32 + 32 * 10 for t in study.trials)


def test_an_entry_that_cannot_load_is_named_alone_not_under_a_search_setting(tmp_path):
    (tmp_path / "mymodels.py").write_text(PLUGIN.replace('"mymodels:build_tanh_mlp"', '"mymodels:build_tanh_mpl"'))
    path = tiny_study(tmp_path, ["mymodels"], model="tanh-mlp", prune_rate=[0.2, 0.5])
    line = one_line(ltstudy("run", str(path), cwd=tmp_path))
    assert line.startswith("ltstudy run: error: cannot load 'tanh-mlp' from 'mymodels:build_tanh_mpl'"), line


def test_a_plugin_file_named_like_another_module_is_refused_in_one_line(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "json.py").write_text("X = 1\n")
    line = one_line(ltstudy("ticket", "--plugin", "plugins/json.py", "--quiet", cwd=tmp_path))
    assert "has the name of the module 'json'" in line and "rename the file" in line


# --------------------------------------------------------------------------- 3. a pruning-at-init method of one's own


MY_SNIP = '''
from ltstudy.engine.masks.snip import Snip
from ltstudy.engine.registry import AT_INIT

class MySnip(Snip):
    """SNIP, as a method of the user's own."""
    method = "my SNIP"

AT_INIT.add("my-snip", MySnip)
'''


@pytest.fixture
def my_snip(monkeypatch):
    from ltstudy.engine.masks.snip import Snip

    class MySnip(Snip):
        method = "my SNIP"

    monkeypatch.setattr(AT_INIT, "_entries", dict(AT_INIT._entries))
    AT_INIT.add("my-snip", MySnip)
    return MySnip


def test_a_users_pruning_at_init_method_is_refused_with_a_reinit_that_keeps_trained_weights(my_snip):
    from ltstudy.engine.config import TicketConfig

    assert CONTROLS.load("my-snip").needs_rewinding  # from the branch class it gets: nothing to declare
    for reinit in ("finetune", "lr-rewind"):
        with pytest.raises(ConfigError, match="prunes at initialisation: it needs a ticket that rewinds"):
            TicketConfig.from_dict({"prune": {"mask": "my-snip", "reinit": reinit}})
        with pytest.raises(ConfigError, match="control 'my-snip' prunes at initialisation"):
            TicketConfig.from_dict({"prune": {"reinit": reinit}}).check_control("my-snip")
    TicketConfig.from_dict({"prune": {"mask": "my-snip", "reinit": "rewind"}})


def test_a_users_pruning_at_init_method_is_a_control_of_its_own_name(my_snip):
    from ltstudy.engine.config import TicketConfig

    assert "my-snip" in CONTROLS and "my-snip-reinit" in CONTROLS.names()
    assert "random-reinit" in CONTROLS and "magnitude" not in CONTROLS  # (a ticket-finding rule is not a control)
    named, ticket = TicketConfig.from_dict({"prune": {"mask": "my-snip"}}).split_control()  # (its config form)
    assert (named, ticket.prune.mask) == ("my-snip", "magnitude")


def test_the_config_checks_read_a_methods_class_so_registration_metadata_cannot_slip_past_them(my_snip,
                                                                                             monkeypatch):
    from ltstudy.engine.config import TicketConfig

    monkeypatch.setattr(REINITS, "_entries", dict(REINITS._entries))
    REINITS.add("lazy-finetune", "ltstudy.engine.reinit.finetune:Finetune", rewinds=True)  # (says what it is not)
    with pytest.raises(ConfigError, match=r"needs a ticket that rewinds .*not 'lazy-finetune'"):
        TicketConfig.from_dict({"prune": {"mask": "my-snip", "reinit": "lazy-finetune"}})


def test_every_built_in_methods_class_loads_without_torch_so_a_study_file_is_checked_without_it():
    code = """
import sys
from ltstudy.engine.registry import AT_INIT, CONTROLS, MASKS, REINITS
from ltstudy.engine.config import TicketConfig
print(sorted(n for n, e in REINITS.items() if e.load().rewinds))
print(sorted(n for n, e in CONTROLS.items() if e.load().needs_rewinding) == sorted(AT_INIT.names()))
print(CONTROLS.config_forms()[("random", "random")], len(MASKS))
TicketConfig.from_dict({"prune": {"mask": "snip"}})
print("TORCH", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:3])
"""
    proc = __import__("subprocess").run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['rewind']", "True", "random-both 1", "TORCH []"]


def test_a_study_runs_a_users_pruning_at_init_method_from_a_plugin_file_as_a_control(tmp_path, tmp_path_factory):
    (tmp_path / "mysnip.py").write_text(textwrap.dedent(MY_SNIP))
    seed_mlflow_db(tmp_path_factory, tmp_path / "mlflow.db")
    path = tiny_study(tmp_path, ["mysnip"], model="lenet-300-100", controls=["my-snip"])
    text = path.read_text().replace("[search]", "[search]\nmask = \"my-snip\"")
    (tmp_path / "searched.toml").write_text(text)
    line = one_line(ltstudy("run", "searched.toml", cwd=tmp_path))  # searched, it is refused with the way to use it
    assert "search.mask = 'my-snip' is a control" in line and 'controls = ["my-snip"]' in line

    proc = ltstudy("run", "study.toml", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="mine", storage=open_storage(f"journal:{tmp_path / 'optuna.journal'}"))
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE"
    (levels,) = trial.user_attrs["controls_per_seed"]["my-snip"]
    ticket = trial.user_attrs["rounds"]
    assert [lv["round"] for lv in levels] == [0, 1]  # the ticket's dense round, then its own level 1
    assert levels[1]["density"] == ticket[1]["density"]  # at the ticket's density
    assert levels[1]["val_accuracy"] != ticket[1]["val_accuracy"]  # trained on a mask of its own
