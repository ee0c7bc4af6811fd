"""One identity rule for configs (hashing.identity, open_lth's): a setting at its default is no part of a config's
hash, its cache keys or a study's settings, nor is where the data is read from or which device setting ran it; so a
new setting changes nothing old, and a study made before this rule continues with its unchanged file."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from ltstudy.engine.config import TicketConfig, TrainConfig, setting
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.hashing import identity
from ltstudy.study.config import load_study, parse_study
from ltstudy.study.session import check_same_settings
from tests.study_helpers import study_doc

PINS = Path(__file__).parent / "pins"


def test_a_setting_written_at_its_default_is_the_same_config_as_one_left_out():
    plain = TicketConfig.from_dict({"train": {"iterations": 60}})
    spelled = TicketConfig.from_dict({"data": {"name": "digits", "val_size": -1}, "train": {
        "iterations": 60, "lr": 1.2e-3, "kernels": "dense"}, "seeds": {"init": -1}})
    assert identity(plain) == identity(spelled) == {"train": {"iterations": 60}}
    assert plain.hash() == spelled.hash()


def test_a_new_setting_at_its_default_changes_no_identity():
    @dataclass
    class TrainConfigOfLater(TrainConfig):
        label_smoothing: float = setting(0.0, help="a setting added after studies were made")

    assert identity(TrainConfigOfLater(lr=0.01)) == identity(TrainConfig(lr=0.01)) == {"lr": 0.01}
    assert identity(TrainConfigOfLater(lr=0.01, label_smoothing=0.1)) == {"lr": 0.01, "label_smoothing": 0.1}


@pytest.mark.parametrize("where", [{"data.root": "/mnt/shared/data"}, {"data.download": True}, {"device": "cpu"},
                                   {"plugins": []}])
def test_where_the_data_is_read_and_which_device_runs_it_are_no_part_of_the_hash(where):
    base = TicketConfig.from_dict({"train": {"iterations": 60}})
    assert base.replace(where).hash() == base.hash()


def test_the_cache_keys_follow_the_identity_and_keep_the_device_type_and_the_datas_digest(tiny_cfg, make_search):
    base = make_search(tiny_cfg())
    moved = make_search(tiny_cfg({"data.root": "/mnt/shared/data", "train.kernels": "dense", "train.lr": 1.2e-3}))
    assert (moved.dense_key, moved.rounds_key) == (base.dense_key, base.rounds_key)
    assert make_search(tiny_cfg({"train.lr": 0.002})).dense_key != base.dense_key
    assert make_search(tiny_cfg({"prune.prune_rate": 0.5})).rounds_key != base.rounds_key
    assert make_search(tiny_cfg({"prune.rounds": 3})).rounds_key == base.rounds_key  # (round r is the same)


def test_a_studys_settings_hold_what_is_not_at_its_default_and_not_where_it_runs():
    cfg = parse_study(study_doc())
    assert cfg.settings() == {"train": {"iterations": 60, "eval_every": 20}, "search": {
        "prune_rate": "[0.2, 0.5]", "reinit": "['rewind', 'finetune']", "rewind_iter": "[0, 20]", "rounds": "2",
        "scope": "['layerwise', 'global']"}}
    elsewhere = parse_study(study_doc(data={"root": "/elsewhere", "name": "digits"},
                                      study={"device": "auto", "pack": 2, "n_trials": 9, "max_dense_gap": 0.2}))
    assert elsewhere.settings() == cfg.settings() and elsewhere.hash() == cfg.hash()
    assert parse_study(study_doc(study={"replicates": 2})).settings()["study"] == {"replicates": 2}


# --------------------------------------------------------------------------- a study made before the rule


@pytest.fixture
def old_study(tmp_path: Path) -> tuple[Path, str]:
    """A study created by ltstudy before this rule (commit 5415ad4): its journal stores every setting, then."""
    shutil.copy(PINS / "study_before_identity.journal", tmp_path / "optuna.journal")
    shutil.copy(PINS / "study_before_identity.toml", tmp_path / "study.toml")
    return tmp_path / "study.toml", f"journal:{tmp_path / 'optuna.journal'}"


def _load(path: Path, storage: str, **overrides):
    return load_study(path, {"study.storage": storage, **overrides})


def test_a_study_made_before_the_rule_continues_with_its_unchanged_file(old_study):
    path, storage = old_study
    check_same_settings(_load(path, storage), storage, "before-identity")
    check_same_settings(_load(path, storage, **{"data.root": "/mnt/shared/data"}), storage, "before-identity")


@pytest.mark.parametrize(("change", "named"), [
    ({"train.lr": 0.002}, "[train] lr 0.0012 -> 0.002"),
    ({"study.replicates": 1}, "[study] replicates 2 -> 1"),
    ({"stability.points": 8}, "[stability] points 4 -> 8"),
    ({"prune.output_rate": 0.5}, "[prune] output_rate 1.0 -> 0.5"),
    ({"study.controls": []}, "[study] controls ['random-reinit'] -> []"),
])
def test_a_study_made_before_the_rule_is_refused_with_another_file_naming_the_change(old_study, change, named):
    path, storage = old_study
    with pytest.raises(ConfigError) as refused:
        check_same_settings(_load(path, storage, **change), storage, "before-identity")
    assert named in str(refused.value) and "start a new study" in str(refused.value)
