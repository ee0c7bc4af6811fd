"""Model registry: every network builds, runs, is initialised as in the paper, and rejects bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ltstudy.engine.errors import ConfigError
from ltstudy.engine.models import build_model
from ltstudy.engine.pruning import prunable_layers
from ltstudy.engine.registry import MODELS

INPUTS = {
    "lenet-300-100": (1, 8, 8),
    "lenet-5": (1, 28, 28),
    "conv-2": (3, 32, 32),
    "conv-4": (3, 32, 32),
    "conv-6": (3, 32, 32),
    "vgg-19": (3, 32, 32),
    "resnet-20": (3, 32, 32),
}


def test_every_registered_model_has_a_test_input():
    assert set(MODELS) == set(INPUTS)


@pytest.mark.parametrize("name", list(INPUTS))
def test_every_model_builds_and_maps_a_batch_to_class_logits(name):
    torch.manual_seed(0)
    model = build_model(name, INPUTS[name], num_classes=7)
    out = model(torch.randn(2, *INPUTS[name]))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    layers = prunable_layers(model)
    assert layers[-1].is_output and sum(la.is_output for la in layers) == 1
    assert dict(model.named_modules())[layers[-1].name].out_features == 7


@pytest.mark.parametrize("name", ["lenet-300-100", "conv-2", "conv-4", "conv-6", "resnet-20"])
def test_small_input_models_run_on_8x8_digits(name):
    assert build_model(name, (1, 8, 8), 10)(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize(("name", "shape"), [("lenet-5", (1, 8, 8)), ("vgg-19", (3, 8, 8)), ("conv-6", (1, 4, 4))])
def test_inputs_below_a_models_minimum_size_raise_config_error(name, shape):
    with pytest.raises(ConfigError, match=f"model {name} needs inputs of at least"):
        build_model(name, shape, 10)


def test_unknown_model_name_suggests_the_closest_one():
    with pytest.raises(ConfigError, match=r"unknown model 'lenet300'; did you mean 'lenet-300-100'\? choose from"):
        build_model("lenet300", (1, 8, 8), 10)


def test_unknown_model_name_without_a_close_match_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        build_model("transformer", (1, 8, 8), 10)
    assert "did you mean" not in str(info.value)
    assert all(name in str(info.value) for name in MODELS)


def test_initialisation_is_glorot_normal_weights_zero_biases_and_unit_batch_norm():
    torch.manual_seed(0)
    model = build_model("resnet-20", (3, 8, 8), 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
        if isinstance(m, nn.Linear):
            assert not m.bias.any()
    torch.manual_seed(0)
    fc1 = build_model("lenet-300-100", (1, 28, 28), 10).fc1.weight  # 784 -> 300
    assert fc1.std().item() == pytest.approx((2 / (784 + 300)) ** 0.5, rel=0.02)
    assert abs(fc1.mean().item()) < 1e-3


def test_the_same_seed_builds_the_same_weights():
    torch.manual_seed(5)
    a = build_model("conv-2", (1, 8, 8), 10).state_dict()
    torch.manual_seed(5)
    b = build_model("conv-2", (1, 8, 8), 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dropout_does_not_rename_the_prunable_layers():
    plain = [la.name for la in prunable_layers(build_model("conv-4", (3, 32, 32), 10))]
    dropped = build_model("conv-4", (3, 32, 32), 10, dropout=0.5)
    assert [la.name for la in prunable_layers(dropped)] == plain
    assert any(isinstance(m, nn.Dropout) for m in dropped.modules())


def test_conv_models_have_the_paper_layer_counts():
    for name, convs in (("conv-2", 2), ("conv-4", 4), ("conv-6", 6), ("vgg-19", 16)):
        kinds = [la.kind for la in prunable_layers(build_model(name, (3, 32, 32), 10))]
        assert kinds.count("conv") == convs, name
    resnet = prunable_layers(build_model("resnet-20", (3, 32, 32), 10))
    assert sum(la.kind == "conv" and "shortcut" not in la.name for la in resnet) == 19


# --------------------------------------------------------------------------- every model on every dataset


def _pairs():
    from ltstudy.engine.registry import DATASETS

    return [(m, d) for m in MODELS for d in DATASETS]


@pytest.mark.parametrize(("model", "dataset"), _pairs())
def test_every_model_trains_on_every_dataset_or_the_pair_is_refused_in_one_line_before_training(model, dataset):
    """(ticket --dataset fashion-mnist --model vgg-19 used to die in batch norm with a traceback.)"""
    from ltstudy.engine.config import TicketConfig
    from ltstudy.engine.data import Dataset, Split
    from ltstudy.engine.registry import DATASETS, check_pair
    from ltstudy.engine.searches import ticket_search

    shape = DATASETS.get(dataset).input_shape
    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))

    data = Dataset(dataset, split(4), split(2), split(2), 10, digest=f"synthetic-{dataset}")
    cfg = TicketConfig.from_dict({"device": "cpu", "data": {"name": dataset}, "model": {"name": model},
                                  "train": {"iterations": 1, "eval_every": 1, "batch_size": 2},
                                  "prune": {"rounds": 1}})
    try:
        check_pair(model, dataset)
    except ConfigError as exc:
        assert "\n" not in str(exc) and f"model {model} needs inputs of at least" in str(exc)
        with pytest.raises(ConfigError):
            ticket_search(cfg, data)
        return
    rounds = ticket_search(cfg, data).run().rounds
    assert [r.round for r in rounds] == [0, 1] and all(r.iterations == 1 for r in rounds)
