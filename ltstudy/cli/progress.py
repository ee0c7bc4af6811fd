"""What a run shows while it trains: tqdm bars on a terminal (callbacks of the engine and the study)."""

from __future__ import annotations

import sys

from ..engine.callbacks import Callback
from ..study.callbacks import StudyCallback
from .common import fmt


class TicketProgress(Callback):
    """Bars for rounds and iterations of one search, shown only on a terminal."""

    def __init__(self, n_rounds: int, enabled: bool, position: int = 0, label: str = "rounds",
                 total: int | None = None):
        """`total`: the rounds the bar counts, when not the one search's `n_rounds` + 1 (a trial's seeds and
        controls)."""
        self.enabled, self.n_rounds, self.position, self.label = enabled, n_rounds, position, label
        self.total = total
        self.rounds = self.iters = None
        self.current = ""  # the label of the job the iteration bar shows

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            total = self.total or (self.n_rounds + 1 if self.n_rounds else None)
            self.rounds = tqdm(total=total, desc=self.label, unit=" rounds", position=self.position, leave=False)
            self.iters = tqdm(total=0, desc="round 0", unit="it", position=self.position + 1, leave=False)
        return self

    def on_evaluation(self, job, iteration, evaluation) -> None:
        if self.iters is not None:
            if job.label != self.current:
                self.current = job.label
                self.iters.reset(total=job.end - job.start)
                self.iters.set_description(job.label)
            self.iters.update(iteration - job.start - self.iters.n)

    def on_round_end(self, record) -> None:
        if self.rounds is not None:
            self.rounds.update(1)
            self.rounds.set_postfix(density=f"{record.density:.3f}", val_acc=f"{record.val_accuracy:.3f}")

    def __exit__(self, *exc):
        for bar in (self.iters, self.rounds):
            if bar is not None:
                bar.close()
        return False


class StudyProgress(StudyCallback):
    """A bar over trials, plus round and iteration bars for the trial running in this process."""

    def __init__(self, n_trials: int | None, enabled: bool, per_round: bool):
        self.enabled, self.n_trials, self.per_round = enabled, n_trials, per_round
        self.trials = None
        self.plan = None
        self.ticket: TicketProgress | None = None  # the round bar of the trial that started last
        self.ticket_trial: int | None = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.trials = tqdm(total=self.n_trials, desc="trials", position=0)
        return self

    def on_study_start(self, missing: int, plan=None) -> None:
        self.plan = plan
        if self.trials is not None:
            self.trials.reset(total=missing)

    def on_trial_start(self, number: int) -> None:
        if self.enabled and self.per_round:
            if self.ticket is not None:
                self.ticket.__exit__(None, None, None)
            plan = self.plan  # (every seed's ticket rounds and its controls' levels, at most: a search may stop early)
            total = plan.seeds * (plan.rounds + 1 + plan.controls * plan.rounds) if plan is not None else None
            self.ticket = TicketProgress(0, True, position=1, label=f"trial {number} rounds", total=total).__enter__()
            self.ticket_trial = number

    def watch(self, trial: int, seed: int) -> Callback | None:
        return _TrialRounds(self, trial) if self.enabled and self.per_round else None

    def on_evaluation(self, job, iteration, evaluation) -> None:
        if self.ticket is not None:
            self.ticket.on_evaluation(job, iteration, evaluation)

    def on_trial_end(self, trial) -> None:
        if self.trials is not None:
            self.trials.update(1)
            if trial.values:
                self.trials.set_postfix(last=f"#{trial.number} {trial.state.name.lower()}",
                                        values=",".join(fmt(v) for v in trial.values))
            else:
                self.trials.set_postfix(last=f"#{trial.number} {trial.state.name.lower()}")

    def __exit__(self, *exc):
        if self.ticket is not None:
            self.ticket.__exit__(None, None, None)
        if self.trials is not None:
            self.trials.close()
        return False


class _TrialRounds(Callback):
    """A search's rounds on StudyProgress's round bar, while the bar is its trial's (every seed's rounds and its
    controls' levels count)."""

    def __init__(self, progress: StudyProgress, trial: int):
        self.progress, self.trial = progress, trial

    def on_round_end(self, record) -> None:
        if self.progress.ticket is not None and self.progress.ticket_trial == self.trial:
            self.progress.ticket.on_round_end(record)


class ProgressLines(StudyCallback):
    """One line per finished round, for logs that are not a terminal (Slurm, nohup, CI): trial, seed, round,
    density, validation accuracy and seconds; before the trials an estimate of the study's cost, and after the
    first dense round one of its time."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.plan = None
        self.timed = False

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def on_study_start(self, missing: int, plan=None) -> None:
        self.plan = plan
        if plan is not None and missing:
            controls = (f" and {plan.controls} {plural(plan.controls, 'control')} beside each ticket"
                        if plan.controls else "")
            self.say(f"{missing} {plural(missing, 'trial')} to run: each {plan.seeds} {plural(plan.seeds, 'search')} "
                     f"of up to {plan.rounds + 1} rounds × {plan.iterations:,} iterations{controls}"
                     f"{f' and {plan.stability:,} iterations of stability copies' if plan.stability else ''}: at most "
                     f"{plan.total_iterations:,} training iterations (fewer where the cache holds shared rounds)")

    def watch(self, trial: int, seed: int) -> Callback:
        return _RoundLines(self, trial, seed)

    def round_line(self, number: int, seed: int, record) -> None:
        what = f"control {record.control}" if record.control else "ticket"
        self.say(f"trial {number} seed {seed} round {record.round} ({what}): density {record.density:.4f}, val acc "
                 f"{record.val_accuracy:.4f}, {record.wall_seconds:.1f} s" + (" (from the cache)" if record.reused
                                                                               else ""))
        if not self.timed and self.plan is not None and record.round == 0 and not record.reused \
                and record.iterations:
            self.timed = True
            seconds = record.wall_seconds / record.iterations * self.plan.total_iterations
            self.say(f"the dense round took {record.wall_seconds:.1f} s for {record.iterations:,} iterations: the "
                     f"study's at most {self.plan.total_iterations:,} iterations would take {duration(seconds)} "
                     "here (less with the cache)")

    def on_trial_end(self, trial) -> None:
        values = ", ".join(f"{v:.4g}" for v in trial.values) if trial.values else ""
        self.say(f"trial {trial.number} {trial.state.name}" + (f": {values}" if values else ""))


class _RoundLines(Callback):
    """ProgressLines' line per finished round of one search (trial `number`, training seed `seed`)."""

    def __init__(self, lines: ProgressLines, number: int, seed: int):
        self.lines, self.number, self.seed = lines, number, seed

    def on_round_end(self, record) -> None:
        self.lines.round_line(self.number, self.seed, record)


def plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s" if not word.endswith("h") else f"{word}es"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
