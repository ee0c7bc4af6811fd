"""A ticket with its controls at every level: each search's numbers are the ones it gets alone."""

from __future__ import annotations

import pytest
import torch

from ltstudy.engine.cache import RoundCache
from ltstudy.engine.controls import ControlSearch
from ltstudy.engine.drivers import run_packed
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.ticket import TicketSearch
from tests.engine_helpers import OnRoundEnd

CONTROLS = ("random-reinit", "random-mask", "random-both")
SETTINGS = {"prune.rounds": 3, "prune.prune_rate": 0.4, "prune.rewind_iter": 20, "train.iterations": 40,
            "train.eval_every": 20}


def numbers(records) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k not in ("wall_seconds", "control", "reused",
                                                                "computed_iterations")} for r in records]


def split(records) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.control, []).append(r)
    return out


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_the_ticket_and_each_control_get_the_numbers_they_get_alone(tiny_cfg, digits, scope):
    cfg = tiny_cfg(SETTINGS, prune__scope=scope)
    seen = []
    result = ticket_search(cfg, digits, controls=CONTROLS).run(OnRoundEnd(seen.append))
    by = split(seen)
    assert sorted(by) == ["", *sorted(CONTROLS)]
    assert numbers(result.rounds) == numbers(by[""]) == numbers(ticket_search(cfg, digits).run().rounds)
    for name in CONTROLS:
        alone = ticket_search(cfg, digits, control=name).run().rounds
        assert [r.round for r in by[name]] == [1, 2, 3]  # (their round 0 is the ticket's dense round)
        assert numbers(by[name]) == numbers(alone[1:]), name
        assert [r.path_iterations for r in by[name]] == [r.path_iterations for r in alone[1:]]


def test_each_control_trains_on_the_tickets_own_masks_at_every_level(tiny_cfg, digits):
    cfg = tiny_cfg(SETTINGS, prune__reinit="finetune")  # any ticket-finding strategy: its own masks
    ticket_masks, control_masks = {}, {}
    search = ticket_search(cfg, digits, controls=("random-reinit",))

    def keep(rec):
        target = control_masks if rec.control else ticket_masks
        source = search.branches["random-reinit"].masks if rec.control else search.masks
        target[rec.round] = {n: m.clone() for n, m in source.items()}

    search.run(OnRoundEnd(keep))
    for r in (1, 2, 3):
        assert all(torch.equal(control_masks[r][n], ticket_masks[r][n]) for n in ticket_masks[r]), r


def test_a_tickets_controls_come_from_the_cache_when_they_ran_before(tiny_cfg, digits, tmp_path):
    cache = RoundCache(tmp_path / "cache")
    cfg = tiny_cfg(SETTINGS)
    first = TicketSearch(cfg, digits, cache, controls=CONTROLS)
    seen_first, seen_again = [], []
    first.run(OnRoundEnd(seen_first.append))
    ticket_search(cfg, digits, cache, controls=CONTROLS).run(OnRoundEnd(seen_again.append))
    assert all(r.reused for r in seen_again)
    assert numbers(seen_again) == numbers(seen_first)
    # a control run alone afterwards finds its levels in the cache too (the ticket is its path), named either way
    for alone in (ControlSearch(cfg, digits, cache, control="random-reinit"),
                  ticket_search(cfg.replace({"prune.reinit": "random"}), digits, cache)):
        assert all(r.reused for r in alone.run().rounds)


def test_a_ticket_with_controls_packs_with_others_and_keeps_its_numbers(tiny_cfg, digits):
    cfgs = [tiny_cfg(SETTINGS), tiny_cfg(SETTINGS, seed=1, prune__prune_rate=0.5)]
    alone = []
    for c in cfgs:
        seen = []
        ticket_search(c, digits, controls=CONTROLS[:2]).run(OnRoundEnd(seen.append))
        alone.append(numbers(seen))
    packed_seen = [[], []]
    searches = [ticket_search(c, digits, controls=CONTROLS[:2]) for c in cfgs]
    run_packed(searches, capacity=3, watchers=[OnRoundEnd(seen.append) for seen in packed_seen])
    assert [numbers(s) for s in packed_seen] == alone


def test_controls_go_with_a_tickets_config_only(tiny_cfg, digits):
    with pytest.raises(ValueError, match="not with a control's"):
        ticket_search(tiny_cfg(prune__reinit="random"), digits, controls=("random-mask",))
    with pytest.raises(ValueError, match="names control 'random-reinit' already"):
        ControlSearch(tiny_cfg(prune__reinit="random"), digits, control="random-mask")
