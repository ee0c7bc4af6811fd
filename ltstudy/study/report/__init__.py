"""`ltstudy report`: one self-contained HTML page that answers "which p, which k?" for a study.

Figures are PNGs embedded as base64, the CSS is inline, nothing is fetched.
Every number comes from the study's own trials through compare.py and the
objectives' classes, with the same definitions as `compare`. The sections, one
module each: `overview` (what was searched, the recommendation, the front, the
frontier), `settings` (every combination, one setting at a time, p × k maps),
`controls` (every ticket beside its controls, early stopping), `layers`
(density per layer), `metrics` (every round metric at the ticket), `stability`
and `level_barrier` (linear connectivity), on the pieces in `html`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..compare import compare
from ..frontier import pareto_trials
from ..trial_results import census, collect
from .controls import section_controls, section_early_stop
from .html import CSS, e
from .layers import section_layers
from .level_barrier import section_level_barrier
from .metrics import open_metrics, section_metrics
from .overview import section_front, section_frontier, section_recommendation, section_setup
from .settings import section_by_setting, section_combinations, section_heatmaps
from .stability import section_stability

if TYPE_CHECKING:
    import optuna

    from ..config import StudyConfig


def build_report(study: optuna.Study, cfg: StudyConfig, by: Sequence[str] | None = None, density: float = 0.2,
                 n_bins: int | None = None) -> str:
    """The whole HTML page."""
    trials = study.get_trials(deepcopy=False)
    eps = cfg.study.epsilon
    searched = list(cfg.searched)
    col = collect(trials, searched)
    names = list(study.user_attrs.get("objectives") or cfg.study.objectives)
    front = pareto_trials(study, cfg.study.max_dense_gap)
    overview = compare(trials, [], eps, density, searched, split="test", objectives=cfg.study.objectives,
                       n_bins=n_bins, metrics=open_metrics(col.curves))
    by = list(by if by is not None else searched)
    log_ranges = {k for k, p in cfg.search.items() if p.log}
    parts = [
        f"<h1>Lottery-ticket study: {e(study.study_name)}</h1>",
        f'<p class="meta">{e(cfg.base.model.name)} on {e(cfg.base.data.name)}; '
        f"{e(cfg.base.train.iterations)} training iterations per round; study file {e(cfg.path or '?')}; "
        f"generated {e(datetime.datetime.now().strftime('%Y-%m-%d %H:%M'))}. "
        "n is always the number of (setting combination, seed) curves behind a number; "
        + ("every setting combination here has one curve (n = 1: one trial, one seed), so the tables give each "
           "curve's value, with no spread, and no difference between settings can be tested. " if overview.single else
           "mean ± sample standard deviation, and “—” when n = 1. ")
        + "Accuracies are in %.</p>",
        section_setup(cfg, names, census(trials)),
        section_recommendation(front, overview, names),
        section_front(front, names, col, searched, len(study.directions), cfg.objectives),
        section_frontier(trials, col, eps),
        section_combinations(overview),
        section_controls(overview, col, eps),
        section_by_setting(trials, col, by, eps, density, searched, n_bins, log_ranges),
        section_heatmaps(col, eps, density, n_bins),
        section_early_stop(col, eps, cfg.base.train.iterations),
        section_layers(col, eps),
        section_metrics(overview),
        section_stability(col),
        section_level_barrier(col, eps),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(study.study_name)}: ltstudy report</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


__all__ = ["build_report"]
