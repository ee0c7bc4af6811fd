"""Pruning at initialisation (SNIP, GraSP, SynFlow, magnitude, random) and Frankle et al. 2021's ablations,
each a control trained at the ticket's density of every level."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ltstudy.engine import pruning
from ltstudy.engine.config import DataConfig
from ltstudy.engine.data import load_dataset
from ltstudy.engine.errors import ConfigError
from ltstudy.engine.masks.at_init import training_batch
from ltstudy.engine.masks.snip import BATCH
from ltstudy.engine.models import build_model
from ltstudy.engine.registry import AT_INIT
from ltstudy.engine.searches import ticket_search
from tests.engine_helpers import OnRoundEnd, OnRoundStart

METHODS = ["snip", "grasp", "synflow", "magnitude-init", "random-uniform"]
ABLATED = ["snip", "grasp", "synflow", "magnitude-init"]


@pytest.fixture(scope="module")
def net(digits) -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet-300-100", digits.input_shape, digits.num_classes, 0.0)


def ticket_like(model: nn.Module, kept: dict[str, int]) -> pruning.Masks:
    """Masks with `kept` survivors per layer (which ones does not matter: only the counts are targets)."""
    masks = pruning.full_masks(model, pruning.prunable_layers(model))
    for n, k in kept.items():
        flat = torch.zeros(masks[n].numel())
        flat[:k] = 1.0
        masks[n] = flat.view_as(masks[n])
    return masks


def mask_of(rule: str, model, masks, data, seed: int = 0, round_: int = 1) -> pruning.Masks:
    return AT_INIT.load(rule)().at_start(model, masks, seed, round_, data)


def counts(masks: pruning.Masks) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


@pytest.mark.parametrize("rule", [*METHODS, *(f"{m}-{v}" for m in ABLATED for v in ("shuffled", "inverted"))])
def test_each_method_keeps_exactly_the_tickets_number_of_weights_and_its_dense_layers(net, digits, rule):
    target = ticket_like(net, {"fc1": 2000, "fc2": 900})  # fc3 left dense, as `ignore` would
    got = mask_of(rule, net, target, digits)
    assert pruning.remaining(got) == pruning.remaining(target)
    assert int(got["fc3"].sum()) == got["fc3"].numel()
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in got.values())


def test_scoring_leaves_the_model_and_the_global_random_stream_as_they_were(net, digits):
    before, state = copy.deepcopy(net.state_dict()), torch.random.get_rng_state()
    for rule in METHODS:
        mask_of(rule, net, ticket_like(net, {"fc1": 2000, "fc2": 900}), digits)
    assert all(torch.equal(before[n], t) for n, t in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_snip_keeps_the_top_connection_sensitivities_of_its_definition(net, digits):
    """Lee et al.: s = |dL/dc| at c = 1 for the mask c, i.e. |g ⊙ θ|; the k largest over all layers are kept."""
    target = ticket_like(net, {"fc1": 3000, "fc2": 1500, "fc3": 400})
    x, y = training_batch(digits, BATCH, seed=0)
    model = copy.deepcopy(net)
    gates = {n: torch.ones_like(m, requires_grad=True) for n, m in target.items()}
    weights = {n: getattr(model, n).weight.detach() for n in target}
    h = x.flatten(1)
    for n in ("fc1", "fc2"):
        h = torch.relu(nn.functional.linear(h, weights[n] * gates[n], getattr(model, n).bias))
    loss = nn.functional.cross_entropy(nn.functional.linear(h, weights["fc3"] * gates["fc3"], model.fc3.bias), y)
    loss.backward()
    sensitivity = torch.cat([gates[n].grad.abs().flatten() for n in target])
    keep = pruning.remaining(target)
    expected = torch.zeros_like(sensitivity)
    expected[sensitivity.topk(keep).indices] = 1.0
    got = mask_of("snip", net, target, digits)
    assert torch.equal(torch.cat([got[n].flatten() for n in target]), expected)


def test_grasp_keeps_the_top_scores_of_its_definition_with_torchs_own_hessian_vector_product(net, digits):
    """Wang et al.: score −θ ⊙ Hg, H the Hessian of the loss (logits / 200, 10 examples per class) in the weights
    and g its gradient; the largest −θ ⊙ Hg are removed, so the largest θ ⊙ Hg over all layers are kept. Here Hg
    is `torch.autograd.functional.hvp` of the loss as a function of the three weight matrices."""
    from ltstudy.engine.masks.grasp import PER_CLASS, TEMPERATURE

    target = ticket_like(net, {"fc1": 3000, "fc2": 1500, "fc3": 400})
    x, y = training_batch(digits, 0, seed=0, per_class=PER_CLASS)
    names = list(target)
    model = copy.deepcopy(net).train()
    params = {n: t.detach() for n, t in model.named_parameters()}

    def loss(*ws):
        state = {**params, **{f"{n}.weight": w for n, w in zip(names, ws, strict=True)}}
        return nn.functional.cross_entropy(torch.func.functional_call(model, state, (x,)) / TEMPERATURE, y)

    ws = tuple(params[f"{n}.weight"] for n in names)
    leaves = tuple(w.clone().requires_grad_(True) for w in ws)
    g = torch.autograd.grad(loss(*leaves), leaves)
    _, hg = torch.autograd.functional.hvp(loss, ws, g)
    score = torch.cat([(w * h).flatten() for w, h in zip(ws, hg, strict=True)])
    expected = torch.zeros_like(score)
    expected[score.topk(pruning.remaining(target)).indices] = 1.0
    got = mask_of("grasp", net, target, digits)
    got_flat = torch.cat([got[n].flatten() for n in names])
    # (scores within float rounding of the k-th can swap places: all but a handful agree)
    assert int((got_flat != expected).sum()) <= 4 and pruning.remaining(got) == pruning.remaining(target)


def test_synflow_is_data_free(net, digits):
    other = load_dataset(DataConfig(name="digits", split_seed=7), "cpu")
    assert not torch.equal(other.train.x[:10], digits.train.x[:10])
    target = ticket_like(net, {"fc1": 2000, "fc2": 900, "fc3": 300})
    a, b = mask_of("synflow", net, target, digits), mask_of("synflow", net, target, other)
    assert all(torch.equal(a[n], b[n]) for n in a)
    snip = mask_of("snip", net, target, digits), mask_of("snip", net, target, other)
    assert any(not torch.equal(snip[0][n], snip[1][n]) for n in a)  # (a data-dependent one is not)


@pytest.mark.parametrize("method", ABLATED)
def test_the_shuffled_ablation_keeps_each_layers_density_and_moves_the_weights(net, digits, method):
    target = ticket_like(net, {"fc1": 2000, "fc2": 900, "fc3": 300})
    plain, shuffled = mask_of(method, net, target, digits), mask_of(f"{method}-shuffled", net, target, digits)
    assert counts(shuffled) == counts(plain)
    assert all(not torch.equal(plain[n], shuffled[n]) for n in plain)


def test_the_inverted_ablation_keeps_the_lowest_scores(net, digits):
    target = ticket_like(net, {"fc1": 2000, "fc2": 900, "fc3": 300})
    got = mask_of("magnitude-init-inverted", net, target, digits)
    magnitude = {n: getattr(net, n).weight.detach().abs() for n in target}
    kept = torch.cat([magnitude[n][got[n].bool()] for n in got])
    dropped = torch.cat([magnitude[n][~got[n].bool()] for n in got])
    assert kept.max() <= dropped.min()


def test_each_level_of_a_baseline_trains_at_the_tickets_density_from_theta_k(tiny_cfg, digits):
    cfg = tiny_cfg(prune__rounds=2, prune__prune_rate=0.5, prune__rewind_iter=20, train__iterations=40)
    seen, starts = [], {}

    def start(job):
        if job.label.startswith("control"):
            name = job.label.split()[1]
            starts[(name, job.round)] = (job.start, {n: m.clone() for n, m in job.masks.items()},
                                         {n: p.detach().clone() for n, p in job.model.named_parameters()})

    search = ticket_search(cfg, digits, controls=["snip", "snip-reinit"])
    search.run([OnRoundEnd(seen.append), OnRoundStart(start)])
    ticket = {r.round: r for r in seen if not r.control}
    theta_k = search.ensure_theta_k()
    for r in (1, 2):
        snip_start, snip_masks, snip_weights = starts[("snip", r)]
        reinit_start, reinit_masks, reinit_weights = starts[("snip-reinit", r)]
        for rec in (rec for rec in seen if rec.control and rec.round == r):
            assert rec.weights_remaining == ticket[r].weights_remaining
        assert (snip_start, reinit_start) == (20, 0)  # trained like the ticket; the re-init from iteration 0
        assert all(torch.equal(snip_masks[n], reinit_masks[n]) for n in snip_masks)  # both scored on θ_k
        for n, m in snip_masks.items():
            assert torch.equal(snip_weights[f"{n}.weight"], theta_k[f"{n}.weight"] * m)
            assert not torch.equal(reinit_weights[f"{n}.weight"], snip_weights[f"{n}.weight"])


def test_pruning_at_init_on_a_ticket_that_does_not_rewind_is_refused(tiny_cfg):
    with pytest.raises(ConfigError, match="control 'snip' prunes at initialisation: it needs a ticket that rewinds"):
        tiny_cfg(prune__reinit="finetune").check_control("snip")
    with pytest.raises(ConfigError, match=r"prune\.mask 'snip' prunes at initialisation: it needs a ticket"):
        tiny_cfg(prune__reinit="finetune", prune__mask="snip")
    tiny_cfg(prune__reinit="finetune").check_control("snip-reinit")  # (a fresh draw: the ticket's start is not used)
