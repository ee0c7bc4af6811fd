"""`ltstudy stability`: linear mode connectivity of the dense network at each k, and of a search's tickets."""

from __future__ import annotations

import argparse
import json
import sys

from ..engine.cache import RoundCache
from ..engine.config import load_config
from ..engine.data import load_dataset
from ..engine.device import resolve_device
from ..engine.errors import ConfigError
from ..engine.stability import StabilityAnalysis, earliest_stable
from ..study.storage import check_cache_dir
from ..study.tables import format_table
from ..study.threads import set_threads
from .common import check_writable
from .parser import overrides


def stability(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides(args))
    ks, rounds = _ints(args.k, "--k"), _ints(args.ticket_rounds, "--ticket-rounds")
    if not ks and not rounds:
        raise ConfigError("nothing to measure: give --k 0,100,500 (the dense network at each k) and/or "
                          "--ticket-rounds 1,3,5 (the search's tickets at those rounds)")
    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold is a fraction of error in (0, 1), got {args.threshold}; the paper's is 0.02")
    for out in (args.json, args.plot):
        if out:
            check_writable(out)
    cache = None
    if args.cache_dir:
        check_cache_dir(args.cache_dir)
        cache = RoundCache(args.cache_dir)
    set_threads(0)
    data = load_dataset(cfg.data, resolve_device(cfg.device))
    sched = cfg.resolve_schedule(len(data.train))
    for k in ks:
        if not 0 <= k < sched.iterations:
            raise ConfigError(f"--k {k} must be in [0, {sched.iterations}) (the round's length, --iterations)")
    analysis = StabilityAnalysis(cfg, data, cache, points=args.points, copy_seed=args.copy_seed)
    results = analysis.dense(ks) + (analysis.ticket(rounds) if rounds else [])
    first = earliest_stable(results, args.threshold)
    rows = [[r.label, r.k, r.round, f"{100 * r.density:.3g}%", f"{100 * r.val_instability:.2f}",
             f"{100 * r.test_instability:.2f}", f"{100 * r.val_errors[0]:.2f} / {100 * r.val_errors[-1]:.2f}",
             f"{100 * max(r.val_errors):.2f}", "yes" if r.stable(args.threshold) else "no"] for r in results]
    print(f"Instability = the largest error on the linear path between two copies trained from the same start "
          f"with different data orders, minus the mean of its end points' errors ({args.points} points), in "
          f"error points; validation selects, test is reported. Stable below {100 * args.threshold:g} points.")
    print(format_table(["start", "k", "round", "density", "val instab.", "test instab.", "val err A / B",
                        "max val err", "stable"], rows))
    if ks:
        print(f"earliest stable k: {first.k}" if first else
              f"no k of {', '.join(map(str, ks))} is stable at {100 * args.threshold:g} points")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": cfg.to_dict(), "threshold": args.threshold, "points": args.points,
                       "earliest_stable_k": first.k if first else None,
                       "results": [r.to_dict() for r in results]}, fh, indent=1)
    if args.plot:
        from ..study.stability_plots import stability_figure

        stability_figure(results, args.threshold, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _ints(text: str | None, flag: str) -> list[int]:
    try:
        values = [int(v) for v in (text or "").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes whole numbers separated by commas, e.g. {flag} 0,100,500; got {text!r}") \
            from None
    if any(v < 0 for v in values):
        raise ConfigError(f"{flag} values must be >= 0, got {text!r}")
    return sorted(set(values))
