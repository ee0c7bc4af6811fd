"""`ltstudy ticket`: one ticket search (or a control) from flags or a TOML file, as a per-round table."""

from __future__ import annotations

import argparse
import sys

from ..engine.cache import RoundCache
from ..engine.chance import DenseMustLearn
from ..engine.config import load_config
from ..engine.data import load_dataset
from ..engine.device import resolve_device
from ..engine.errors import ConfigError, DivergedError
from ..engine.export import TicketSaver
from ..engine.searches import kind_of, ticket_search
from ..study.storage import check_cache_dir
from ..study.tables import round_table
from ..study.threads import set_threads
from .common import check_folder, check_output
from .parser import overrides
from .progress import TicketProgress


def ticket(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides(args))
    if args.control is not None:
        named = cfg.split_control()[0]
        if named is not None:
            raise ConfigError(f"--control {args.control}: the settings name control {named!r} already (--reinit "
                              f"{cfg.prune.reinit}, --mask {cfg.prune.mask}); give the control once")
        cfg.check_control(args.control)
    if args.json:
        check_output(args.json, "--json")
    if args.save:
        check_folder(args.save, "--save")
    cache = None
    if args.cache_dir:
        check_cache_dir(args.cache_dir)
        cache = RoundCache(args.cache_dir)
    set_threads(0)
    saver = TicketSaver(args.save, cfg) if args.save else None
    progress = TicketProgress(0, enabled=not args.quiet and sys.stderr.isatty())
    # (building the search loads the data and validates the schedule before any training)
    data = load_dataset(cfg.data, resolve_device(cfg.device))
    search = ticket_search(cfg, data, cache, control=args.control)
    progress.n_rounds = search.n_rounds
    try:
        with progress:
            result = search.run([DenseMustLearn(data), progress, saver])
    except DivergedError as exc:  # not bad input, but a result: one line, exit 1
        print(f"ltstudy ticket: {exc}", file=sys.stderr)
        return 1
    if args.json:
        result.write_json(args.json)
    if not args.quiet:
        if result.kind == "control":
            done = result.path or {}
            source = ("loaded from the cache" if not done.get("trained") else
                      f"{done['trained']} trained here" + (f", {done['reused']} loaded from the cache"
                                                           if done.get("reused") else ""))
            print(f"{kind_of(cfg, args.control)} on the masks of the ticket with the same settings; the ticket's "
                  f"rounds 0..{search.n_rounds - 1}: {source}")
        print(round_table(result.rounds))
        print(f"device {result.device}; config hash {cfg.hash()}")
    if args.json:  # (what was written is said with --quiet too)
        print(f"wrote {args.json}")
    if saver is not None:
        print(f"wrote {len(saver.written)} tickets: {args.save}/round_00 .. round_{len(saver.written) - 1:02d}")
    return 0
