"""`ltstudy stability`: linear mode connectivity of the dense network at each k, and of a search's tickets; and
the level barrier between a search's successive rounds (`--level-points`).

From flags (or --config) it measures; from a study file it reads what the
study's trials measured (`[stability]`) and summarises it over seeds, without
importing torch.
"""

from __future__ import annotations

import argparse

from ..engine import strict_json
from ..engine.errors import ConfigError
from ..engine.linear_paths import MAX_POINTS, StartKind
from ..study.tables import format_table
from .common import check_output
from .parser import overrides


def stability(args: argparse.Namespace) -> int:
    if args.json:
        check_output(args.json, "--json")
    if args.plot:  # (a study's figures are drawn as PNG; a measurement's in any format matplotlib writes)
        check_output(args.plot, "--plot", plot=True, formats={"png"} if args.study_file else None)
    if not 2 <= args.points <= MAX_POINTS:
        raise ConfigError(f"--points must be 2 (the path's ends) to {MAX_POINTS}, got {args.points}; the paper's is 30")
    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold is a fraction of error in (0, 1), got {args.threshold}; the paper's is 0.02")
    return from_study(args) if args.study_file else measure(args)


def from_study(args: argparse.Namespace) -> int:
    """The study's measurements per setting: each start's instability over seeds, and the earliest stable k."""
    from ..study.level_summary import HEADERS as LEVEL_HEADERS
    from ..study.level_summary import measured, summarise_levels, verdict_headers, verdict_rows, verdicts
    from ..study.level_summary import rows as level_rows
    from ..study.stability_summary import HEADERS, earliest_stable_k, rows, summarise
    from .read import read_study

    given = [flag for flag, v in (("--config", args.config), ("--k", args.k), ("--ticket-rounds", args.ticket_rounds),
                                  ("--cache-dir", args.cache_dir), ("--copy-seed", args.copy_seed)) if v is not None]
    if given or overrides(args):
        raise ConfigError(f"a study file's measurements are read, not made: drop {', '.join(given) or 'the settings'} "
                          "(the study's [stability] section says what its trials measure)")
    from ..study.compare import row_label, setting_order
    from ..study.curves import TICKET
    from ..study.trial_results import collect

    cfg, study = read_study(args)
    col = collect(study.get_trials(deepcopy=False), cfg.searched)
    groups: dict[tuple, list] = {}
    for c in col.curves:
        if c.kind == TICKET:
            groups.setdefault(col.key(c), []).append(c)
    labelled = [(row_label(dict(zip(col.keys, key, strict=True)), col.keys) or "all trials", curves)
                for key, curves in sorted(groups.items(), key=lambda kv: setting_order(kv[0]))]
    found = [(label, ss) for label, curves in labelled if (ss := summarise(curves, args.threshold))]
    levels = [(label, measured_curves) for label, curves in labelled if (measured_curves := measured(curves))]
    if not found and not levels:
        raise ConfigError(f"study '{study.study_name}' has no stability measurements: give it a [stability] section "
                          "(points = 30, dense_ks, rounds; level_points = 30) and run it (ltstudy run), or measure "
                          "from flags")
    if found:
        print(f"{_DEFINITION} Mean ± sample std over curves (seeds); stable below {100 * args.threshold:g} points.")
    dense = {tuple((s.k, s.val, s.test) for s in ss if s.label == StartKind.DENSE) for _, ss in found}
    shared = len(found) > 1 and len(dense) == 1 and bool(next(iter(dense)))
    for i, (label, ss) in enumerate(found):
        first = earliest_stable_k(ss, args.threshold)
        shown = [s for s in ss if not (shared and i > 0 and s.label == StartKind.DENSE)]
        print(f"\n{label}" + (" (the dense network is every setting's):" if shared and i == 0 else ":"))
        print(format_table(HEADERS, rows(shown, args.threshold)))
        if any(s.label == StartKind.DENSE for s in shown):
            print(f"earliest stable k: {first.k}" if first else
                  f"no k measured is stable at {100 * args.threshold:g} points")
    eps = cfg.study.epsilon
    if levels:
        every = verdicts([c for _, curves in levels for c in curves], eps, args.threshold)
        print(f"\n{_LEVELS} Mean ± sample std over curves; connected below {100 * args.threshold:g} points, matching "
              f"within ε = {100 * eps:g} points of dense. Of {every.n} rounds, {every.agree} agree with Paul et al. "
              "(connected and matching, or neither):")
        print(format_table(verdict_headers(args.threshold), verdict_rows(every)))
        for label, curves in levels:
            print(f"\n{label}:")
            print(format_table(LEVEL_HEADERS, level_rows(summarise_levels(curves, eps, args.threshold))))
    if args.json:
        with open(args.json, "w") as fh:
            strict_json.dump({"study": study.study_name, "threshold": args.threshold,
                       "settings": [{"setting": label, "earliest_stable_k": getattr(earliest_stable_k(
                           ss, args.threshold), "k", None), "starts": [s.to_dict() for s in ss]}
                           for label, ss in found],
                       "levels": [{"setting": label, "rounds": [lv.to_dict() for lv in summarise_levels(
                           curves, eps, args.threshold)], "verdicts": verdicts(curves, eps, args.threshold).to_dict()}
                           for label, curves in levels]}, fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        _write_plot(found, levels, eps, args.threshold, args.plot)
    return 0


def _write_plot(found, levels, epsilon: float, threshold: float, path: str) -> None:
    """Instability against k (the dense starts), or else the error along the paths of the first setting; with no
    stability path, the level barriers."""
    from ..study.stability_plots import figure_dense_k, figure_level_barriers, figure_mean_paths

    dense = [(label, [s for s in ss if s.label == StartKind.DENSE]) for label, ss in found]
    if not found:
        png = figure_level_barriers(levels, epsilon, threshold)
    else:
        png = figure_dense_k([d for d in dense if d[1]], threshold) if any(d[1] for d in dense) else \
            figure_mean_paths(found[0][1], f"error along the path, {found[0][0]}")
    with open(path, "wb") as fh:
        fh.write(png)
    print(f"wrote {path}")


_DEFINITION = ("Instability = the largest error on the linear path between two copies trained from the same start "
               "with different data orders, minus the mean of its end points' errors, in error points; validation "
               "selects, test is reported.")
_LEVELS = ("Level barrier = the largest error on the linear path from round r - 1's trained weights to round r's "
           "(Paul et al. 2023), minus the mean of its end points' errors, in error points; validation selects, test "
           "is reported.")


def measure(args: argparse.Namespace) -> int:
    """Measure from flags (or --config): the dense network at each --k, the ticket at each of --ticket-rounds."""
    from ..engine.cache import RoundCache
    from ..engine.config import load_config
    from ..engine.data import load_dataset
    from ..engine.device import resolve_device
    from ..engine.stability import StabilityAnalysis, earliest_stable
    from ..study.storage import check_cache_dir
    from ..study.threads import set_threads

    cfg = load_config(args.config, overrides(args))
    ks, rounds = _ints(args.k, "--k"), _ints(args.ticket_rounds, "--ticket-rounds")
    level_points = cfg.stability.level_points
    if not ks and not rounds and not level_points:
        raise ConfigError("nothing to measure: give --k 0,100,500 (the dense network at each k), --ticket-rounds "
                          "1,3,5 (the search's tickets at those rounds) and/or --level-points 30 (the level barrier "
                          "of each of its rounds)")
    if args.plot and not ks and not rounds:
        raise ConfigError("--plot draws the stability paths of --k and --ticket-rounds; the level barriers are in the "
                          "table and --json (a study's report draws them against round)")
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
    results, searched = analysis.run(ks, rounds, level_points)
    first = earliest_stable(results, args.threshold)
    if results:
        rows = [[r.label, r.k, r.round, f"{100 * r.density:.3g}%", f"{100 * r.val_instability:.2f}",
                 f"{100 * r.test_instability:.2f}", f"{100 * r.val_errors[0]:.2f} / {100 * r.val_errors[-1]:.2f}",
                 f"{100 * max(r.val_errors):.2f}", "yes" if r.stable(args.threshold) else "no"] for r in results]
        print(f"{_DEFINITION} {args.points} points per path; stable below {100 * args.threshold:g} points.")
        print(format_table(["start", "k", "round", "density", "val instab.", "test instab.", "val err A / B",
                            "max val err", "stable"], rows))
    if ks:
        print(f"earliest stable k: {first.k}" if first else
              f"no k of {', '.join(map(str, ks))} is stable at {100 * args.threshold:g} points")
    levels = [r for r in searched if r.round > 0]
    if levels:
        print(f"{_LEVELS} {level_points} points per path; connected below {100 * args.threshold:g} points.")
        print(format_table(["round", "density", "val acc", "val level barrier", "test level barrier", "connected"], [
            [r.round, f"{100 * r.density:.3g}%", f"{100 * r.val_accuracy:.2f}",
             f"{100 * r.metrics['level_barrier']:.2f}", f"{100 * r.metrics['level_barrier_test']:.2f}",
             "yes" if r.metrics["level_barrier"] < args.threshold else "no"] for r in levels]))
    if args.json:
        with open(args.json, "w") as fh:
            strict_json.dump({"config": cfg.to_dict(), "threshold": args.threshold, "points": args.points,
                              "earliest_stable_k": first.k if first else None,
                              "results": [r.to_dict() for r in results],
                              "levels": [{"round": r.round, "density": r.density, "val_accuracy": r.val_accuracy,
                                          "level_barrier": r.metrics["level_barrier"],
                                          "level_barrier_test": r.metrics["level_barrier_test"]} for r in levels]},
                             fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot:  # (refused above without a stability path)
        from ..study.stability_plots import stability_figure

        stability_figure(results, args.threshold, args.plot)
        print(f"wrote {args.plot}")
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
