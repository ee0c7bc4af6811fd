"""`ltstudy export`: a study's ticket as files, and as an artifact of its trial's MLflow run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ..engine.cache import RoundCache
from ..engine.callbacks import Callback
from ..engine.errors import ConfigError, StopSearch
from ..engine.export import TicketSaver
from ..engine.searches import ticket_search
from .attrs import RUN_ATTR
from .config import StudyConfig
from .curves import TICKET, ticket_round, ticket_sparsity
from .frontier import pareto_trials
from .mlflow_logging import StudyLog
from .session import COUNTED, load_existing
from .tracking import Tracker
from .trial_results import kind


@dataclass
class Exported:
    trial: int
    round: int
    seed: int
    folder: Path
    density: float
    val_accuracy: float
    test_accuracy_at_early_stop: float
    trained_here: int  # rounds trained to rebuild it (0: all from the cache)
    logged_to: str | None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        source = "every round from the training cache" if not self.trained_here else \
            f"{self.trained_here} rounds trained again (not in the cache)"
        logged = f"; logged to MLflow run {self.logged_to} under ticket/" if self.logged_to else ""
        return (f"wrote {self.folder} (trial {self.trial}, seed {self.seed}, round {self.round}: density "
                f"{self.density:.4f}, val accuracy {self.val_accuracy:.4f}, test accuracy at early stop "
                f"{self.test_accuracy_at_early_stop:.4f}; {source}){logged}")


def pick(study: optuna.Study, cfg: StudyConfig, trial: int | None, round_: int | None,
         seed_index: int) -> tuple[optuna.trial.FrozenTrial, int]:
    """The trial and round to export: as asked, or the sparsest matching ticket among the Pareto-optimal trials."""
    eps = cfg.study.epsilon

    def rounds_of(t) -> list[dict]:
        per_seed = t.user_attrs.get("rounds_per_seed") or [t.user_attrs.get("rounds", [])]
        return per_seed[min(seed_index, len(per_seed) - 1)]

    if trial is None:
        front = [t for t in pareto_trials(study, cfg.study.max_dense_gap)
                 if kind(t) == TICKET] or [
            t for t in study.get_trials(deepcopy=False, states=COUNTED) if t.user_attrs.get("kind") == TICKET]
        if not front:
            raise ConfigError("no finished ticket trial to export yet; run the study first (or pass --trial N)")
        chosen = max(front, key=lambda t: (ticket_sparsity(rounds_of(t), eps), -t.number))
    else:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not found:
            raise ConfigError(f"study '{study.study_name}' has no trial {trial}")
        chosen = found[0]
        if chosen.state not in COUNTED or not rounds_of(chosen):
            raise ConfigError(f"trial {trial} is {chosen.state.name} with no finished rounds; pick a finished trial")
    rounds = rounds_of(chosen)
    r = ticket_round(rounds, eps)["round"] if round_ is None else round_
    if not 0 <= r < len(rounds):
        raise ConfigError(f"trial {chosen.number} has rounds 0..{len(rounds) - 1}; --round {r} is not one of them")
    return chosen, r


def export_ticket(cfg: StudyConfig, storage_url: str, name: str, trial: int | None, round_: int | None,
                  seed: int | None, out: str, tracking_uri: str, cache_dir: str | None) -> Exported:
    study = load_existing(storage_url, name)
    seeds = [cfg.study.seed + i for i in range(cfg.study.replicates)]
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ConfigError(f"--seed {seed} is not one of the study's training seeds {seeds}")
    chosen, r = pick(study, cfg, trial, round_, seeds.index(seed))
    tcfg = cfg.trial_config(chosen.params, seed)
    saver = TicketSaver(out, tcfg, rounds={r})
    stop = _StopAt(r)
    ticket_search(tcfg, cache=RoundCache(cache_dir) if cache_dir else None).run([saver, stop])
    records = stop.records
    if not saver.written:
        raise ConfigError(f"trial {chosen.number} no longer reaches round {r} with this code; pick another round")
    rec = records[-1]
    done = Exported(chosen.number, r, seed, saver.written[0], rec.density, rec.val_accuracy,
                    rec.test_accuracy_at_early_stop, sum(not x.reused for x in records), None)
    stored = (chosen.user_attrs.get("rounds_per_seed") or [chosen.user_attrs.get("rounds", [])])[seeds.index(seed)]
    if r < len(stored) and abs(stored[r]["val_accuracy"] - rec.val_accuracy) > 1e-9:
        done.warnings.append(f"round {r} now gives val accuracy {rec.val_accuracy:.4f}; the trial recorded "
                             f"{stored[r]['val_accuracy']:.4f} (another device or code version)")
    run_id = chosen.user_attrs.get(RUN_ATTR)
    if run_id:
        try:
            StudyLog(Tracker(tracking_uri)).exported_ticket(run_id, done.folder, done.folder.name)
            done.logged_to = run_id
        except Exception as exc:  # the files are written; MLflow is a copy
            done.warnings.append(f"could not log the ticket to MLflow ({type(exc).__name__}: {exc})")
    return done


class _StopAt(Callback):
    """Keep the records, and end the search once round `r` is done."""

    def __init__(self, r: int):
        self.r, self.records = r, []

    def on_round_end(self, record) -> None:
        self.records.append(record)
        if record.round == self.r:
            raise StopSearch("exported")
