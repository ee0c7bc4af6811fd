"""What `ltstudy run` prints at the end: the dense network, the front's tickets beside their controls, the cost."""

from __future__ import annotations

from collections.abc import Sequence

from ..study.compare import at_ticket_text, ticket_gap
from ..study.curves import TICKET, ticket_round
from ..study.frontier import front_exclusions, pareto_trials, undertrained
from ..study.stats import Stat
from ..study.tables import format_table
from ..study.trial_results import trial_curves
from .common import setting_text


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def run_summary(study, cfg, new_trials) -> str:
    """The answer a researcher reads first."""
    eps = cfg.study.epsilon
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("rounds")]
    lines = []
    tickets = [c for t in trials for c in trial_curves(t) if c.kind == TICKET]
    if tickets:
        # Trials with the same seed and training settings share one dense network: count it once.
        dense = {(c.seed, r["val_accuracy"], r.get("test_accuracy_at_early_stop")): r
                 for c in tickets for r in c.rounds[:1]}.values()
        val = Stat.of(r["val_accuracy"] for r in dense)
        test = Stat.of(r.get("test_accuracy_at_early_stop") for r in dense)
        lines.append(f"dense network (round 0): validation accuracy {val.prose()}, test accuracy at early stop "
                     f"{test.prose()} (over the study's {len(dense)} distinct dense "
                     f"{'network' if len(dense) == 1 else 'networks'})")
    gap = cfg.study.max_dense_gap
    best = pareto_trials(study, gap)
    lines += left_off_the_front(study.get_trials(deepcopy=False), gap, empty=not best)
    if best:
        keys = [k for k in cfg.searched] or ["prune_rate"]
        controls = cfg.study.controls
        objectives = cfg.objectives  # (a fraction in %, as the report shows it)
        rows, capped = [], []
        for t in best:
            own = [c for c in trial_curves(t) if c.kind == TICKET]
            picks = [ticket_round(c.rounds, eps) for c in own]
            rows.append([t.number, *[o.display(v) for o, v in zip(objectives, t.values, strict=False)],
                         *[setting_text(t.params.get(k, "")) for k in keys],
                         f"{100 * sum(p['density'] for p in picks) / len(picks):.2f}%",
                         pct(sum(p["val_accuracy"] for p in picks) / len(picks)),
                         pct(sum(p.get("test_accuracy_at_early_stop", 0.0) for p in picks) / len(picks)),
                         *vs_controls(t, controls, eps)])
            if all(p["round"] == len(c.rounds) - 1 and len(c.rounds) > 1 for p, c in zip(picks, own, strict=True)):
                capped.append(t.number)
        lines.append("Pareto-optimal trials (ticket = sparsest round within ε of dense validation accuracy; test "
                     "accuracy at the early-stop iteration" + (f"; {VS_CONTROLS}" if controls else "")
                     + "):")
        lines.append(format_table(["trial", *(o.heading for o in objectives), *keys, "ticket density", "ticket val acc",
                                   "ticket test acc", *(f"vs {c}" for c in controls)], rows))
        for number in capped:
            lines.append(f"trial {number}: every round matched; `rounds` caps this answer (the ticket is the last "
                         "round searched: raise rounds or lower target_density to see how far it goes)")
    cost = cost_text([(c.kind, r) for t in new_trials if t.user_attrs.get("rounds") for c in trial_curves(t)
                      for r in (c.rounds if c.kind == TICKET else c.rounds[1:])])  # (a control's round 0: the ticket's)
    if cost:
        lines.append(cost)
    return "\n".join(lines)


VS_CONTROLS = "vs control: ticket minus control test accuracy in points at the ticket's round, and its density"


def vs_controls(trial, controls: Sequence[str], eps: float) -> list[str]:
    """Per control: the trial's ticket minus the same seed's control at the ticket's round (the same density), over
    seeds ('2.4 ± 1.8 at 37.5%')."""
    curves = trial_curves(trial)
    own = [c for c in curves if c.kind == TICKET]
    picks = [ticket_round(c.rounds, eps) for c in own]
    out = []
    for name in controls:
        kind = trial.user_attrs.get("controls", {}).get(name)
        at = [ticket_gap(o, c, p["round"], "test_accuracy_at_early_stop") for c in curves if c.kind == kind
              for p, o in zip(picks, own, strict=True) if c.seed == o.seed]
        st = Stat.of(g for g, _ in at if g is not None)
        dens = [d for g, d in at if g is not None]
        out.append(at_ticket_text({"gap_at_ticket": st.mean, "gap_at_ticket_std": st.std, "gap_at_ticket_n": st.n,
                                   "ticket_density": sum(dens) / len(dens) if dens else None}, spread=st.n > 1,
                                  show_n=False))
    return out


def cost_text(rounds: Sequence[tuple[str, dict]]) -> str:
    """What this run trained: the rounds' iterations, how many of them were trained here and how many came from the
    cache, and, apart, what measuring stability (its copies) and replaying training to θ_k cost on top.

    A round's `computed_iterations` is everything trained for it here: its own iterations unless it was reused,
    plus the stability copies trained for it (each path's `trained_iterations`), plus any replay to θ_k.
    """
    if not rounds:
        return ""
    total = sum(r.get("iterations", 0) for _, r in rounds)
    trained = sum(r.get("iterations", 0) for _, r in rounds if not r.get("reused"))
    copies = sum(p.get("trained_iterations", 0) for _, r in rounds for p in r.get("stability_paths") or [])
    measured = any(r.get("stability_paths") for _, r in rounds)
    replays = max(0, sum(r.get("computed_iterations", 0) for _, r in rounds) - trained - copies)
    what = "tickets and controls" if any(kind != TICKET for kind, _ in rounds) else "tickets"
    source = ("all trained here" if trained == total else "all from the cache" if trained == 0 else
              f"{trained:,} trained here, {total - trained:,} from the cache")
    line = f"cost of this run: {total:,} training iterations of {what} ({source})"
    if measured:
        line += (f"; {copies:,} more trained here for the stability copies" if copies else
                 "; the stability copies came from the cache")
    if replays:
        line += f"; {replays:,} more trained here to replay training up to the rewind point θ_k"
    return line


def left_off_the_front(trials, max_dense_gap: float, empty: bool) -> list[str]:
    """Lines on the trials the front leaves out: the undertrained ones always, and, when the front is empty, why."""
    lines = []
    flagged = undertrained(trials, max_dense_gap)
    if flagged:
        best = next(iter(flagged.values()))[1]
        one = len(flagged) == 1
        shown = ", ".join(f"{n} ({pct(d)})" for n, (d, _) in sorted(flagged.items()))
        lines.append(f"undertrained, left off the Pareto front: {'trial' if one else 'trials'} {shown}, whose dense "
                     f"{'network is' if one else 'networks are'} more than max_dense_gap = {max_dense_gap:g} below "
                     f"the study's best dense network ({pct(best)} validation accuracy): {'its' if one else 'their'} "
                     "tickets only match a network that did not learn")
    excluded = {why: numbers for why, numbers in front_exclusions(trials, max_dense_gap).items() if numbers}
    if empty and excluded:
        why = {"diverged": "diverged (its training broke down; the reason is in its MLflow run)",
               "undertrained": "undertrained (above)",
               "infeasible": "infeasible (a constraint of [study] is not met: min_dense_accuracy or "
                             "max_accuracy_drop)"}
        parts = [f"{'trial' if len(numbers) == 1 else 'trials'} {', '.join(map(str, numbers))} {why[reason]}"
                 for reason, numbers in excluded.items()]
        lines.append("no Pareto-optimal trial: every complete trial is left off the front: " + "; ".join(parts))
    return lines
