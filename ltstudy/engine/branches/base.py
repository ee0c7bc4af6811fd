"""What a branch is: a control or a baseline trained at each level of a ticket's search, from that level.

At level r a ticket search has its masks m_r, its θ0, θ_k and the trained
weights of round r-1 (a `Level`, rounds.py). A branch (as open_lth's
lottery/branch/*.py) trains one network from there, with its own cache entry
and its own record (`RoundResult.control` = its name). What every branch does
(its model, the job, the cache, the state for ticket savers) is `Branch`'s; a
branch class says only how it differs, in class attributes read by the config
checks and in one method:

- `mask(level)`: the mask it trains at level r (by default m_r itself);
- `fresh_init`: it starts from a fresh draw θ'0 of the initialisation at
  iteration 0 (the paper's random re-initialisation); otherwise it starts as
  the ticket's round r would (θ_k for a rewinding ticket, the trained weights
  for fine-tuning);
- `needs_rewinding`: it prunes at initialisation (its mask scored on θ_k) and
  trains from the ticket's start, so the ticket must rewind;
- `label`: its name in reports ("random re-init");
- `mask_form`: the `prune.mask` value that names it in a config (`ltstudy
  ticket --mask random`); with `fresh_init` also `prune.reinit = "random"`;
- `charges_path`: its mask needs the ticket's trained rounds, so their
  iterations are part of its cost (`RoundResult.path_iterations`); False for
  one that takes only the level's weight count (sparse training's ERK).

A branch is one file (this folder), registered once in `registry.CONTROLS`:
then `[study] controls = ["name"]` and `ltstudy ticket --control name` run it.
Its metadata are its class attributes and nothing repeats them: this package
imports torch only inside the methods that train, so a study file's checks
(`ltstudy compare`, `report`, `--help`) read them without torch.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

from ..contracts import Contract, overrides
from ..hashing import digest, identity, module_digest
from ..reinit.base import Start
from ..rounds import Level, RoundJob, RoundResult, RoundState
from ..seeds import DROPOUT, derived_seed

if TYPE_CHECKING:
    from ..rounds import Event, Masks, TrainResult
    from ..ticket import TicketSearch

FRESH_INIT_FORM = "random"  # `prune.reinit = "random"`: a config's way to say "a branch with a fresh init"


class Branch(Contract):
    """A control or baseline off a ticket's levels (see the module docstring)."""

    label: ClassVar[str] = ""
    fresh_init: ClassVar[bool] = False
    needs_rewinding: ClassVar[bool] = False
    mask_form: ClassVar[str | None] = None
    charges_path: bool = True  # its mask comes from the ticket's trained rounds: their iterations count as its cost

    def __init__(self, ticket: TicketSearch, name: str):
        from ..models import build_model

        self.ticket, self.name = ticket, name
        cfg, data = ticket.cfg, ticket.data
        self.model = build_model(cfg.model.name, data.input_shape, data.num_classes, cfg.model.dropout).to(
            ticket.device)
        self.masks: Masks = {}

    @classmethod
    def describe(cls) -> str:
        """Its name in reports: "control: <this>" (a branch with parameters takes them as keywords)."""
        return cls.label

    @classmethod
    def missing(cls) -> list[str]:
        named = cls.label or overrides(cls, Branch, "describe")
        return super().missing() + ([] if named else ["set label (its name in reports: 'control: <label>')"])

    @classmethod
    def variant(cls, suffix: str) -> dict[str, Any] | None:
        """The keywords a control named "<registered name>-<suffix>" takes (`rigl-uniform-2x`), None for no variant."""
        return None

    @classmethod
    def config_form(cls) -> tuple[str | None, str | None]:
        """(prune.reinit, prune.mask) values that name it in a config, None for a part it leaves to the ticket."""
        return (FRESH_INIT_FORM if cls.fresh_init else None), cls.mask_form

    def mask(self, level: Level) -> Masks:
        """The mask trained at `level` (the model holds the ticket's round r-1 state or the previous level's)."""
        return {n: m.clone() for n, m in level.masks().items()}

    def codes(self) -> list[str]:
        """Digests of the code behind it that the engine's own digest leaves out (a plugin's module)."""
        return [module_digest(type(self))]

    def settings(self) -> dict[str, Any]:
        """The settings of its own that it trains by (its part of the config's identity), for its cache key."""
        return {}

    def key(self, level: Level) -> str | None:
        if self.ticket.cache is None or not level.key:
            return None
        ident = identity(self.ticket.cfg)  # (its seeds as the config gives them: the mask seed is not in level.key)
        seeds = {k: ident[k] for k in ("seed", "seeds") if k in ident}
        own = self.settings()
        return digest("branch", level.key, self.name, seeds, *([own] if own else []),
                      *(c for c in self.codes() if c))

    def job(self, level: Level) -> RoundJob:
        """Level r's start: its mask, and its start state (a fresh draw, or as the ticket would start round r)."""
        from .. import pruning
        from ..models.layers import fresh_draw

        ticket, r, seeds = self.ticket, level.round, level.seeds
        sched, train = ticket.sched, ticket.cfg.train
        self.masks = self.mask(level)
        if self.fresh_init:
            fresh_draw(self.model, seeds.init, r)
            start, constant_lr = 0, None
        else:
            ticket.reinit.reset(self.model, Start(r, seeds.init, level.theta_k, level.trained))
            start, constant_lr = ticket.reinit.start(sched), ticket.reinit.constant_lr(train, sched)
        pruning.apply_masks(self.model, self.masks)
        return RoundJob(r, self.model, self.masks, train, sched, seeds.data_order,
                        derived_seed(seeds.dropout, DROPOUT, r), start, sched.iterations, constant_lr=constant_lr,
                        label=f"control {self.name} round {r}")

    def level(self, level: Level, states: bool) -> Generator[Event, TrainResult | None, RoundResult]:
        """Level r: from the cache, or trained (its job yielded to the driver) and stored; returns its record, and
        yields its RoundState first when `states`."""
        from .. import pruning
        from ..round_protocol import clone_state, cpu, round_record

        ticket = self.ticket
        key = self.key(level)
        stored = ticket.cache.load(key) if key is not None else None
        if stored is not None:
            self.masks = {n: m.to(ticket.device).float() for n, m in stored["masks"].items()}
            self.model.load_state_dict(stored["state"])
            rec = RoundResult.from_dict(stored["record"], reused=True, computed_iterations=0, control=self.name,
                                        metrics={})
            if states:
                yield RoundState(rec, self.masks, stored["start"], stored["state"], stored["training"])
            return rec
        t0 = time.perf_counter()
        job = self.job(level)
        start = clone_state(self.model)
        res = yield job
        pruning.check_masks_hold(self.model, self.masks)
        rec = round_record(level.round, self.masks, res)
        rec.control = self.name
        rec.wall_seconds = round(time.perf_counter() - t0, 4)
        training = ticket.training_info(job)
        if key is not None:
            ticket.cache.save(key, {"state": cpu(self.model.state_dict()), "start": cpu(start),
                                    "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                                    "record": {**rec.to_dict(), "control": ""}, "training": training})
        if states:
            yield RoundState(rec, self.masks, start, self.model.state_dict(), training)
        return rec
