"""A study session: check everything before anything exists, then create or open the study and its MLflow runs.

The runner (`run`), the workers and the read-only commands (`pareto`,
`compare`, `report`, `repair`, ...) all go through here, so a study is found,
checked against its file and opened one way. Nothing in this module imports
the engine at import time: the read-only commands must stay torch-free, so the
one check that builds a search (`resolve`) imports it when called.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from ..engine.cache import RoundCache
from ..engine.errors import ConfigError
from .attrs import CODE_ATTR, PARENT_ATTR
from .config import MAX_THREADS, StudyConfig, check_study_name, settings_changes
from .mlflow_logging import StudyLog
from .optuna_api import STUDY_NOT_FOUND, quiet_experimental
from .sampling import make_pruner, make_sampler
from .signals import deferred
from .storage import (
    check_cache_dir,
    check_places,
    check_storage,
    check_tracking_uri,
    open_storage,
    redact,
    storage_exists,
    storage_kind,
    tracking_lock,
)
from .user_code import code_changes, code_digests

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # what n_trials counts


@dataclass
class RunOptions:
    """Command-line choices that override the study file."""

    n_trials: int | None = None  # the study's total (default: [study].n_trials)
    more: int | None = None  # run this many trials beyond those already finished
    jobs: int = 1
    storage: str | None = None
    tracking_uri: str | None = None
    study_name: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False

    def storage_url(self, cfg: StudyConfig) -> str:
        return self.storage or cfg.study.storage

    def name(self, cfg: StudyConfig) -> str:
        return self.study_name or cfg.study.name

    def cache(self, cfg: StudyConfig) -> RoundCache | None:
        if self.no_cache or not cfg.study.cache:
            return None
        return RoundCache(cfg.cache_dir(self.cache_dir))

    def target(self, cfg: StudyConfig, finished: int) -> int:
        """How many finished trials the study should have when this call ends."""
        if self.more is not None:
            return finished + self.more
        return cfg.study.n_trials if self.n_trials is None else self.n_trials


def n_counted(study: optuna.Study) -> int:
    """Finished trials: what n_trials counts (complete or pruned; failures don't)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


# --------------------------------------------------------------------------- checks before anything exists


def resolve(cfg: StudyConfig, opts: RunOptions) -> tuple[str, str, str]:
    """Check storage, tracking URI, data and the study's settings before anything is created; (storage, uri, name)."""
    storage_url, uri, name = opts.storage_url(cfg), cfg.tracking_uri(opts.tracking_uri), opts.name(cfg)
    if not 1 <= opts.jobs <= MAX_THREADS:
        raise ConfigError(f"--jobs must be >= 1 and at most {MAX_THREADS} (processes on this machine: more than any "
                          f"machine's cores), got {opts.jobs}")
    if opts.n_trials is not None and opts.n_trials < 0:
        raise ConfigError(f"--n-trials must be >= 0, got {opts.n_trials}")
    if opts.more is not None and opts.more < 1:
        raise ConfigError(f"--more must be >= 1, got {opts.more}")
    if opts.more is not None and opts.n_trials is not None:
        raise ConfigError(f"--n-trials {opts.n_trials} sets the study's total and --more {opts.more} adds to the "
                          "trials already finished; give one of them")
    check_study_name(name, "--study-name" if opts.study_name is not None else "study.name")
    check_storage(storage_url, jobs=opts.jobs)
    check_tracking_uri(uri)
    cache = opts.cache(cfg)
    if cache is not None:
        check_cache_dir(cache.root)
    check_places(storage_url, uri, str(cache.root) if cache is not None else None)
    from .engine_checks import check_with_engine  # (torch: see the module docstring)

    check_with_engine(cfg, processes=opts.jobs)
    check_same_settings(cfg, storage_url, name)
    return storage_url, uri, name


def check_same_settings(cfg: StudyConfig, storage_url: str, name: str) -> None:
    """A study is continued only with the settings and the code it was created with: its trials must stay
    comparable."""
    found = existing_study(storage_url, name)
    if found is not None:
        check_same_study(cfg, found.user_attrs, name)


def check_same_study(cfg: StudyConfig, attrs: dict[str, Any], name: str) -> None:
    """`check_same_settings` against a study's attributes."""
    if attrs.get("objectives", cfg.study.objectives) != cfg.study.objectives:
        raise ConfigError(f"study '{name}' exists with objectives {attrs.get('objectives')}; the file asks for "
                          f"{cfg.study.objectives}. Start a new study with --study-name NAME (or [study].name)")
    old = attrs.get("settings")
    if old is not None:
        changes = settings_changes(old, json.loads(json.dumps(cfg.settings(), default=str)))
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            raise ConfigError(f"study '{name}' was created with other settings ({shown}), so its trials would not be "
                              "comparable; start a new study with --study-name NAME (or [study].name), or restore "
                              "the file")
    elif attrs.get("study_hash") not in (None, cfg.hash()):  # (a study that recorded only its settings' hash)
        raise ConfigError(f"study '{name}' was created with other settings, or by an ltstudy older than 2026-11-29 "
                          "that recorded only their hash; start a new study with --study-name NAME (or [study].name)")
    if CODE_ATTR in attrs:  # (a study made before code was recorded gets it at its next run: open_study)
        changes = code_changes(attrs[CODE_ATTR], code_digests(cfg))
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            raise ConfigError(f"study '{name}' was created with other code of yours ({shown}), so its trials would "
                              "not be comparable; start a new study with --study-name NAME (or [study].name), or "
                              "restore the code")


# --------------------------------------------------------------------------- opening studies


def existing_study(storage_url: str, name: str) -> optuna.Study | None:
    if not storage_exists(storage_url):  # opening a journal or SQLite file that isn't there would create it
        return None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage_url))
    except KeyError as exc:
        if exc.args == (STUDY_NOT_FOUND,):
            return None
        # Any other KeyError is the storage failing to read its own records, not a missing study.
        raise ConfigError(f"storage {redact(storage_url)} could not be read (KeyError: {exc}); if it is a journal, "
                          "`ltstudy repair STUDY.toml` keeps every readable record (the file is backed up first)"
                          ) from None


def load_existing(storage_url: str, name: str, cfg: StudyConfig | None = None) -> optuna.Study:
    """A study that must exist already (pareto, compare, report, repair); with `cfg`, opened with heartbeats."""
    return open_existing(storage_url, name, cfg)[0]


def open_existing(storage_url: str, name: str, cfg: StudyConfig | None = None) -> tuple[optuna.Study, Any]:
    """`load_existing`, with the storage object it was opened on (repair writes through it)."""
    check_storage(storage_url)
    study = existing_study(storage_url, name)
    if study is None:
        raise ConfigError(f"no study named '{name}' in {redact(storage_url)}; run `ltstudy run` first "
                          "(or pass --storage / --study-name)")
    heartbeat = None
    if cfg is not None:
        s = cfg.study
        heartbeat = (s.heartbeat_interval, s.grace_period, s.max_retry)
    storage = open_storage(storage_url, heartbeat=heartbeat)
    return optuna.load_study(study_name=name, storage=storage), storage


@dataclass
class Opened:
    study: optuna.Study
    storage: Any  # the Optuna storage object the study was opened on
    created: bool  # this call created it (and so owns creating its MLflow parent run)
    url: str  # the storage URL
    notes: list[str] = field(default_factory=list)


def open_study(cfg: StudyConfig, storage_url: str, name: str, stream: int = 0) -> Opened:
    """Create the study, or load it to continue (race-safe: concurrent callers agree on one study).

    The sampler's seed is offset by the trials already in the study and by
    `stream` (one per worker), so a resumed study or a second worker does not
    replay the same draws as the first run.
    """
    s = cfg.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url, heartbeat=(s.heartbeat_interval, s.grace_period, s.max_retry))
    found = existing_study(storage_url, name)
    offset = (len(found.get_trials(deepcopy=False)) if found is not None else 0) + 1_000_003 * stream
    sampler = make_sampler(cfg, offset)
    pruner, pruner_note = make_pruner(cfg)
    created = False
    with deferred():  # (a study a Ctrl-C left without its settings would never be checked against them again)
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=cfg.directions,
                                        sampler=sampler, pruner=pruner)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        # A study made before code was recorded is pinned to the code of its next run (one with trials: a study
        # another worker has just created gets its creator's).
        if created or (CODE_ATTR not in study.user_attrs and found is not None and found.get_trials(deepcopy=False)):
            study.set_user_attr(CODE_ATTR, code_digests(cfg))
        if created:
            study.set_user_attr("objectives", s.objectives)
            study.set_user_attr("study_file", cfg.path)
            study.set_user_attr("settings", json.loads(json.dumps(cfg.settings(), default=str)))
            study.set_user_attr("study_hash", cfg.hash())
            study.set_user_attr("epsilon", s.epsilon)
            with quiet_experimental():  # names in optuna-dashboard and Optuna's plots, not "0" and "1"
                study.set_metric_names([o.spec for o in cfg.objectives])
    return Opened(study, storage, created, storage_url, [pruner_note] if pruner_note else [])


def attach_tracking(opened: Opened, cfg: StudyConfig, log: StudyLog, wait: float = 60.0) -> tuple[str, str]:
    """The study's experiment and its one parent run: made once, reopened by every later process.

    On one machine (journal, SQLite) processes take turns under a lock beside
    the storage file, so two `run`s started at once agree on one parent run.
    Across machines (RDB) the process that created the study makes it and the
    others wait for it to appear.
    """
    study = opened.study
    exp_id = log.experiment(study.study_name)
    with tracking_lock(opened.url):
        parent = _fresh(opened).user_attrs.get(PARENT_ATTR)
        if not parent and not opened.created and storage_kind(opened.url) == "rdb":
            deadline = time.monotonic() + wait  # the creator is making the parent run right now (a fresh cluster)
            while not parent and time.monotonic() < deadline:
                time.sleep(0.2 + random.random() * 0.3)
                parent = _fresh(opened).user_attrs.get(PARENT_ATTR)
        if parent and log.reopen(parent):
            return exp_id, parent
        with deferred():  # (a parent run a Ctrl-C left unrecorded in the study: the next run would make another)
            return exp_id, log.start_study(study, cfg, exp_id)


def _fresh(opened: Opened) -> optuna.Study:
    """The study as its storage holds it now (another process may have set attributes since it was opened)."""
    return optuna.load_study(study_name=opened.study.study_name, storage=opened.storage)
