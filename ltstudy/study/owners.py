"""Who runs a trial, and closing the trials of workers that died.

Heartbeats exist only on RDB storages, and even there a worker that dies
between asking for a trial and its first heartbeat leaves the trial RUNNING
forever. So every trial records its owner (`worker` = host:pid:start-time)
right after it is asked for, and `sweep_dead_owners` fails, then re-queues,
any RUNNING trial whose owner is a process of this machine that no longer
exists, or that never recorded an owner (nor, on an RDB storage, a
heartbeat) and is older than the grace period.
The start time guards against a recycled pid (engine/processes.py).
"""

from __future__ import annotations

import datetime
import os
import socket

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ..engine.processes import alive, start_time
from .attrs import OWNER_ATTR
from .optuna_api import heartbeat_recorded, trial_id
from .storage import ask_lock, storage_kind


def this_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or ''}"


_mine: set[tuple[str, int]] = set()  # (study, trial number) this process is running now


def owner_alive(owner: str, study_name: str = "", number: int = -1) -> bool | None:
    """Whether the owner process lives; None when it is on another machine (its heartbeats decide).

    A trial owned by this very process counts as alive only while this
    process is running it (a library user's earlier run that failed left it).
    """
    if owner == this_owner():
        return (study_name, number) in _mine
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    return alive(int(pid_text), started or None)


def register(trial: optuna.Trial) -> None:
    trial.set_user_attr(OWNER_ATTR, this_owner())
    _mine.add((trial.study.study_name, trial.number))  # (after: a failed write, a full disk, leaves no claim)


def release(trial: optuna.Trial) -> None:
    _mine.discard((trial.study.study_name, trial.number))


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> None:
    """Queue the same settings again (first in line); the retry resumes from the cached rounds."""
    attrs = {k: v for k, v in trial.user_attrs.items() if k != OWNER_ATTR}
    study.enqueue_trial(trial.params, user_attrs=attrs)


def sweep_dead_owners(study: optuna.Study, storage, grace: float, storage_url: str | None = None) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker died (see the module docstring); their numbers.

    On a file storage (`storage_url` given) a trial is asked for and registered under one lock, so a
    trial without an owner seen while holding that lock was left by a process that died in between:
    it is failed at once, without waiting for the grace period.
    """
    now = datetime.datetime.now()
    swept = []
    unowned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get(OWNER_ATTR) is None]
    orphans: set[int] = set()
    if unowned and storage_url and storage_kind(storage_url) != "rdb":
        with ask_lock(storage_url):
            orphans = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.user_attrs.get(OWNER_ATTR) is None and (study.study_name, t.number) not in _mine}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_ATTR)
        if owner is not None:
            if owner_alive(owner, study.study_name, t.number) is not False:
                continue
            reason = f"its worker (pid {owner.split(':')[1]} on this machine) died"
        elif t.number in orphans:
            reason = "its worker stopped between asking for it and registering (no process holds it)"
        else:
            started = t.datetime_start
            if started is None or (now - started).total_seconds() < grace:
                continue
            if heartbeat_recorded(storage, trial_id(storage, study, t.number)):
                continue  # (its heartbeats decide: Optuna's own sweep)
            reason = f"its worker never registered and it is older than the grace period ({grace:g} s)"
        tid = trial_id(storage, study, t.number)
        try:
            storage.set_trial_user_attr(tid, "fail_reason", reason)  # (before: a finished trial's attrs are frozen)
            if not storage.set_trial_state_values(tid, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process closed it a moment ago
            continue
        requeue(study, t)
        swept.append(t.number)
    return swept
