"""The typed configuration: validation, TOML, CLI-string coercion, hashing and lengths."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltstudy.engine.config import TicketConfig, load_config, parse_length, read_toml, to_iterations
from ltstudy.engine.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- defaults and round trips


def test_empty_dict_gives_the_defaults():
    assert TicketConfig.from_dict({}).to_dict() == TicketConfig().to_dict()


def test_to_dict_round_trips_through_from_dict(tiny_cfg):
    cfg = tiny_cfg(prune__layer_rates={"fc1": 0.3}, prune__ignore=["fc3"], train__milestones=[20, "1ep"])
    again = TicketConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.hash() == cfg.hash()


def test_replace_returns_a_validated_copy_and_leaves_the_original(tiny_cfg):
    cfg = tiny_cfg()
    other = cfg.replace({"prune.prune_rate": 0.3})
    assert other.prune.prune_rate == 0.3
    assert cfg.prune.prune_rate == 0.2
    with pytest.raises(ConfigError, match="prune_rate"):
        cfg.replace({"prune.prune_rate": 3.0})


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown key 'sed'.*did you mean 'seed'"):
        TicketConfig.from_dict({"sed": 1})


def test_unknown_key_in_a_section_names_the_section_and_suggests_a_name():
    with pytest.raises(ConfigError, match=r"unknown key 'itertions' in \[train\]; did you mean 'iterations'"):
        TicketConfig.from_dict({"train": {"itertions": 5}})


def test_unknown_key_without_a_close_match_lists_the_known_keys():
    with pytest.raises(ConfigError, match=r"known keys: .*prune_rate"):
        TicketConfig.from_dict({"prune": {"zzzzzz": 1}})


def test_unknown_key_in_a_toml_file_suggests_the_closest_name(tmp_path):
    path = write(tmp_path, "[prune]\nprune_rte = 0.3\n")
    with pytest.raises(ConfigError, match="did you mean 'prune_rate'"):
        load_config(path)


# --------------------------------------------------------------------------- value checks


@pytest.mark.parametrize("rate", [0.0, 1.0, 1.5, -0.2])
def test_prune_rate_outside_the_open_unit_interval_is_rejected(rate):
    with pytest.raises(ConfigError, match="prune_rate must be in"):
        TicketConfig.from_dict({"prune": {"prune_rate": rate}})


def test_negative_rounds_are_rejected():
    with pytest.raises(ConfigError, match="rounds must be >= 0"):
        TicketConfig.from_dict({"prune": {"rounds": -1}})


def test_zero_rounds_is_a_valid_dense_only_run():
    assert TicketConfig.from_dict({"prune": {"rounds": 0}}).prune.rounds == 0


@pytest.mark.parametrize("target", [1.0, 1.5, -0.1])
def test_target_density_outside_the_unit_interval_is_rejected(target):
    with pytest.raises(ConfigError, match="target_density"):
        TicketConfig.from_dict({"prune": {"target_density": target}})


def test_one_shot_needs_a_target_density():
    with pytest.raises(ConfigError, match="one_shot needs"):
        TicketConfig.from_dict({"prune": {"one_shot": True}})


def test_output_rate_that_makes_the_output_rate_reach_one_is_rejected():
    with pytest.raises(ConfigError, match="output_rate"):
        TicketConfig.from_dict({"prune": {"prune_rate": 0.6, "output_rate": 2.0}})


@pytest.mark.parametrize("train", [{"nesterov": True}, {"optimizer": "sgd", "nesterov": True}])
def test_nesterov_needs_sgd_with_momentum(train):
    with pytest.raises(ConfigError, match="nesterov"):
        TicketConfig.from_dict({"train": train})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"train": {"lr": "fast"}}, "train.lr must be a number"),
        ({"train": {"lr": 0}}, "train.lr must be > 0"),
        ({"train": {"lr": float("nan")}}, "finite"),
        ({"train": {"iterations": True}}, "train.iterations"),
        ({"train": {"iterations": 1.5}}, "train.iterations has the wrong type"),
        ({"train": {"iterations": 0}}, "train.iterations must be > 0"),
        ({"train": {"iterations": "2epochs"}}, "'Nit' / 'Nep'"),
        ({"train": {"nesterov": "maybe"}}, "true or false"),
        ({"train": {"milestones": 5}}, "must be a list"),
        ({"train": {"optimizer": "adm"}}, "did you mean 'adam'"),
        ({"prune": {"scope": "globl"}}, "did you mean 'global'"),
        ({"prune": {"layer_rates": "fc1"}}, "name=value"),
        ({"seed": "one"}, "seed must be an integer"),
        ({"seed": 1.0}, "seed must be an integer"),
        ({"data": 5}, "data must be a table"),
        ({"device": "gpu"}, "device must be"),
        ({"model": {"dropout": 1.0}}, "dropout"),
    ],
)
def test_wrong_types_and_values_raise_config_error(data, fragment):
    with pytest.raises(ConfigError) as info:
        TicketConfig.from_dict(data)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- TOML files


def test_toml_file_values_reach_the_config(tmp_path):
    path = write(tmp_path, 'seed = 3\n[train]\niterations = "2ep"\nmilestones = [10, 20]\n[prune]\nignore = ["fc1"]\n')
    cfg = load_config(path)
    assert (cfg.seed, cfg.train.iterations, cfg.train.milestones, cfg.prune.ignore) == (3, "2ep", [10, 20], ["fc1"])


def test_overrides_win_over_the_toml_file(tmp_path):
    path = write(tmp_path, "[prune]\nprune_rate = 0.3\nrounds = 4\n")
    cfg = load_config(path, {"prune.prune_rate": "0.5"})
    assert (cfg.prune.prune_rate, cfg.prune.rounds) == (0.5, 4)


def test_malformed_toml_raises_config_error_naming_the_file(tmp_path):
    path = write(tmp_path, "seed = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "absent.toml")


def test_directory_as_config_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        read_toml(tmp_path)


def test_non_utf8_config_file_raises_config_error(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"seed = 1\n\xff\xfe\n")
    with pytest.raises(ConfigError):
        read_toml(path)


# --------------------------------------------------------------------------- hashing


def test_cli_strings_and_toml_values_hash_alike(tmp_path):
    """argparse hands every flag over as a string; the TOML file has typed values."""
    path = write(tmp_path, "\n".join([
        "seed = 7",
        "[train]",
        "iterations = 500",
        "lr = 0.01",
        "optimizer = 'sgd'",
        "momentum = 0.9",
        "milestones = [100, 200]",
        "eval_every = 50",
        "[prune]",
        "prune_rate = 0.25",
        "rounds = 3",
        "rewind_iter = 20",
        "ignore = ['fc1']",
        "layer_rates = { fc2 = 0.3 }",
        "[data]",
        "augment = true",
    ]) + "\n")
    from_file = load_config(path)
    from_flags = load_config(None, {
        "seed": "7", "train.iterations": "500", "train.lr": "0.01", "train.optimizer": "sgd",
        "train.momentum": "0.9", "train.milestones": "100,200", "train.eval_every": "50",
        "prune.prune_rate": "0.25", "prune.rounds": "3", "prune.rewind_iter": "20", "prune.ignore": "fc1",
        "prune.layer_rates": "fc2=0.3", "data.augment": "true",
    })
    assert from_flags.to_dict() == from_file.to_dict()
    assert from_flags.hash() == from_file.hash()


def test_iterations_as_string_and_as_integer_hash_alike():
    a = TicketConfig.from_dict({"train": {"iterations": "500"}})
    b = TicketConfig.from_dict({"train": {"iterations": 500}})
    assert a.train.iterations == 500
    assert a.hash() == b.hash()


def test_integer_in_a_float_field_hashes_like_the_float():
    assert TicketConfig.from_dict({"train": {"lr": 1}}).hash() == TicketConfig.from_dict({"train": {"lr": 1.0}}).hash()


def test_equal_configs_hash_equal_and_the_hash_is_short_hex():
    h = TicketConfig().hash()
    assert h == TicketConfig().hash()
    assert len(h) == 16
    int(h, 16)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seed", 1),
        ("train.iterations", 999),
        ("train.lr", 0.01),
        ("prune.prune_rate", 0.3),
        ("prune.rewind_iter", 5),
        ("prune.scope", "global"),
        ("prune.ignore", ["fc1"]),
        ("data.split_seed", 1),
        ("model.name", "conv-2"),
    ],
)
def test_hash_changes_when_a_setting_changes(key, value):
    base = TicketConfig()
    assert base.replace({key: value}).hash() != base.hash()


# --------------------------------------------------------------------------- lengths and schedules


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, (7, "it")), ("500", (500, "it")), ("500it", (500, "it")), ("2ep", (2, "ep")), (" 3 ep ", (3, "ep"))],
)
def test_parse_length_reads_iterations_and_epochs(value, expected):
    assert parse_length(value, "x") == expected


@pytest.mark.parametrize("value", ["2epochs", "ep", "1.5ep", -1, "-3", True, "abc"])
def test_parse_length_rejects_malformed_or_negative_lengths(value):
    with pytest.raises(ConfigError, match="x"):
        parse_length(value, "x")


def test_epochs_convert_with_the_iterations_per_epoch():
    assert to_iterations("2ep", 30, "x") == 60
    assert to_iterations("500it", 30, "x") == 500
    assert to_iterations(12, 30, "x") == 12


def test_resolve_schedule_turns_epochs_into_iterations():
    cfg = TicketConfig.from_dict({"train": {"iterations": "3ep", "batch_size": 100, "warmup": "5it",
                                            "milestones": ["1ep", 25], "eval_every": "1ep"},
                                  "prune": {"rewind_iter": "1ep"}})
    sched = cfg.resolve_schedule(train_size=1050)  # 10 full batches per epoch, the partial one dropped
    assert sched.iterations_per_epoch == 10
    assert (sched.iterations, sched.warmup, sched.milestones, sched.eval_every, sched.rewind_iter) == (
        30, 5, (10, 25), 10, 10)


@pytest.mark.parametrize("k", [60, 61, "1ep"])
def test_rewind_iteration_at_or_beyond_the_training_length_is_rejected(k):
    cfg = TicketConfig.from_dict({"train": {"iterations": 60, "batch_size": 10}, "prune": {"rewind_iter": k}})
    with pytest.raises(ConfigError, match="rewind_iter"):
        cfg.resolve_schedule(train_size=1000)  # 1ep = 100 iterations


def test_rewind_iteration_just_below_the_training_length_is_accepted():
    cfg = TicketConfig.from_dict({"train": {"iterations": 60}, "prune": {"rewind_iter": 59}})
    assert cfg.resolve_schedule(train_size=1000).rewind_iter == 59


def test_warmup_as_long_as_training_is_rejected():
    cfg = TicketConfig.from_dict({"train": {"iterations": 60, "warmup": 60}})
    with pytest.raises(ConfigError, match="warmup"):
        cfg.resolve_schedule(train_size=1000)
