"""Study files (studies/*.toml): the [study] section and the [search] space.

A study file is [study] + the engine's own sections ([data], [model], [train],
and optionally [prune] for fixed pruning settings) + [search]. Every entry of
[search] is either fixed (a scalar), a list of choices, or a range table
{low, high, step?, log?}. Everything is validated before any study, run or
file is created.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..engine.cache import DEFAULT_CACHE_DIR
from ..engine.coercion import build, set_dotted, unknown_key_message
from ..engine.config import (
    MAX_SEED,
    DataConfig,
    ModelConfig,
    PruneConfig,
    SeedConfig,
    SparseTrainingConfig,
    StabilityConfig,
    TicketConfig,
    TrainConfig,
    read_toml,
    setting,
)
from ..engine.errors import ConfigError
from ..engine.hashing import default_of, digest, identity, stored_identity
from ..engine.registry import CONTROLS, load_plugins, unknown_name
from .objectives import Objective, parse_objective
from .paths import shown

DEFAULT_STORAGE = "journal:.ltstudy/optuna.journal"
DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
DEFAULT_MAX_DENSE_GAP = 0.05

# What [search] may set, and where it lands in the engine's config.
SEARCHABLE = {
    "prune_rate": "prune.prune_rate",
    "rewind_iter": "prune.rewind_iter",
    "scope": "prune.scope",
    "reinit": "prune.reinit",
    "mask": "prune.mask",
    "rounds": "prune.rounds",
    "target_density": "prune.target_density",
    "one_shot": "prune.one_shot",
    "output_rate": "prune.output_rate",
    "conv_rate": "prune.conv_rate",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "momentum": "train.momentum",
    "batch_size": "train.batch_size",
    "warmup": "train.warmup",
    "optimizer": "train.optimizer",
    "dropout": "model.dropout",
}
_INT_KEYS = {"rewind_iter", "rounds", "batch_size", "warmup"}
# Settings that change how well the dense network trains: with them searched, "matching the trial's own dense
# round" is a moving target (a badly trained dense network makes every round match).
TRAINING_KEYS = ("lr", "weight_decay", "momentum", "batch_size", "warmup", "optimizer", "dropout")
_FLOAT_KEYS = {"prune_rate", "target_density", "output_rate", "conv_rate", "lr", "weight_decay", "momentum", "dropout"}


@dataclass
class StudySection:
    """The [study] section: what is searched for, how, and where the results go (docs/study-file.md lists it).

    A setting that defines what the trials' numbers mean is part of the study's identity (its `settings()`: a
    study continues only with equal ones); `identity=False` marks those that say how or where the study runs.
    """

    name: str = setting("ltstudy", identity=False,
                        help="the study's name: running the file again continues the study of this name")
    sampler: Literal["tpe", "nsga2", "random", "grid", "gp"] = setting(
        "tpe", identity=False,
        help="Optuna's sampler: tpe, nsga2, random, grid (each setting of a finite space once) or gp")
    seed: int = setting(0, help="the sampler's seed, and the training seed of replicate 0")
    n_trials: int = setting(10, help="the study's total of finished (complete or pruned) trials: running the file "
                                     "again finishes what is missing and stops", identity=False)
    objectives: list[str] = setting(factory=lambda: ["ticket_sparsity", "train_iterations"],
                                    help="what Optuna optimises, by name (ticket_sparsity, train_iterations, ...); "
                                         "accuracy_at_density takes ':X'", identity=False)
    controls: list[str] = setting(factory=list, help="controls trained level by level on every trial's ticket, "
                                                     "with its seeds (random-reinit, random-mask, ...)")
    replicates: int = setting(1, help="training seeds per trial: seed, seed+1, ...; objectives are their mean")
    epsilon: float = setting(0.01, help="a round matches when its validation accuracy is at least the same seed's "
                                        "dense round's minus epsilon")
    max_accuracy_drop: float | None = setting(None, help="a constraint: the sparsest round may lose at most this "
                                                         "much validation accuracy against dense")
    stop_on_drop: bool | str = setting(False, help="true: end a trial (pruned) once a round drops more than "
                                                   "max_accuracy_drop; \"unmatched\": end a seed's search "
                                                   "(complete) at its first round that no longer matches")
    min_dense_accuracy: float | None = setting(None, help="a constraint: the dense network must reach this "
                                                          "validation accuracy; required when [search] varies a "
                                                          "training setting and an objective matches against dense")
    max_dense_gap: float = setting(DEFAULT_MAX_DENSE_GAP, help="a trial whose dense network's validation accuracy "
                                   "is more than this below the study's best dense network is undertrained and left "
                                   "off the Pareto front (judged whenever the front is read); 1 turns it off",
                                   identity=False)
    pruner: Literal["none", "median", "percentile", "hyperband", "successive-halving"] = setting(
        "median", identity=False,
        help="Optuna's pruner, for single-objective studies (it reads values by density, not by round)")
    storage: str = setting(DEFAULT_STORAGE, help="Optuna's storage: journal:PATH, sqlite:///PATH or "
                                                 "postgresql+psycopg://...", identity=False)
    tracking_uri: str = setting("", help="MLflow's tracking URI; empty = $MLFLOW_TRACKING_URI, else "
                                         f"{DEFAULT_TRACKING_URI}", identity=False)
    device: str = setting("auto", help="auto (CUDA when present), cpu, cuda or cuda:N", identity=False)
    cache: bool = setting(True, identity=False,
                          help="reuse stored rounds across trials, and resume retried trials from them")
    cache_dir: str = setting("", help=f"the training cache; empty = $LTSTUDY_CACHE_DIR, else {DEFAULT_CACHE_DIR} "
                                      "(may be a shared filesystem)", identity=False)
    heartbeat_interval: int = setting(60, identity=False,
                                      help="RDB storages: seconds between a running trial's heartbeats")
    grace_period: int = setting(180, identity=False,
                                help="seconds without a heartbeat before a trial is failed and retried")
    max_retry: int = setting(3, help="retries of a trial whose worker died", identity=False)
    pack: int = setting(1, help="trials trained side by side as one batched network; 1 = one at a time", identity=False)
    save_tickets: bool = setting(False, help="log every round's mask, initial and trained weights to the trial's "
                                             "MLflow run", identity=False)
    threads: int = setting(0, help="torch threads per process; 0 = one per process", identity=False)
    plugins: list[str] = setting(factory=list, help="your modules (or .py files) that register models, "
                                                    "datasets, methods or objectives", identity=False)


ENGINE_SECTIONS = ("data", "model", "train", "prune", "seeds", "stability", "sparse_training")
# Each section of a study's settings, and the dataclass whose fields (and their defaults) it holds.
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prune": PruneConfig,
                             "seeds": SeedConfig, "stability": StabilityConfig, "sparse_training": SparseTrainingConfig,
                             "study": StudySection}


@dataclass(frozen=True)
class Param:
    """One [search] entry: fixed, categorical or a range."""

    key: str
    fixed: Any = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def searched(self) -> bool:
        return self.choices is not None or self.low is not None

    @property
    def is_int(self) -> bool:
        return self.key in _INT_KEYS

    def grid_values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.is_int:
            raise ConfigError(f"search.{self.key}: the grid sampler cannot enumerate a continuous range; "
                              "give a list of values or a step")
        step = self.step or 1
        # (0.3 - 0.1) // 0.1 is 1.0 in floating point: divide with a tolerance so `high` stays in the grid.
        n = int((self.high - self.low) / step + 1e-9) + 1  # type: ignore[operator]
        if n > 10_000:
            raise ConfigError(f"search.{self.key}: the grid would have {n} values; give a list or a larger step")
        vals = [self.low + i * step for i in range(n)]  # type: ignore[operator]
        return [int(v) for v in vals] if self.is_int else [round(v, 12) for v in vals]

    def extremes(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        if self.low is not None:
            return [self.low, self.high]
        return [self.fixed]


@dataclass
class StudyConfig:
    """A study file, read and validated: its [study] section, the engine settings every trial shares, the search."""

    study: StudySection
    base: TicketConfig  # the engine config with every fixed setting applied
    search: dict[str, Param]
    path: str = ""

    @property
    def objectives(self) -> list[Objective]:
        return [parse_objective(o) for o in self.study.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def searched(self) -> dict[str, Param]:
        return {k: p for k, p in self.search.items() if p.searched}

    def tracking_uri(self, override: str | None = None) -> str:
        return override or self.study.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI

    def cache_dir(self, override: str | None = None) -> str:
        return override or self.study.cache_dir or os.environ.get("LTSTUDY_CACHE_DIR") or DEFAULT_CACHE_DIR

    def trial_config(self, values: dict[str, Any], seed: int) -> TicketConfig:
        """The engine config of one trial: base + sampled values + the replicate seed."""
        overrides = {SEARCHABLE[k]: v for k, v in values.items()}
        overrides["seed"] = seed
        return self.base.replace(overrides)

    def grid(self) -> dict[str, list]:
        return {k: p.grid_values() for k, p in self.searched.items()}

    def settings(self) -> dict[str, dict[str, Any]]:
        """What defines the study's trials and what their numbers mean, by section: the identity of the engine's
        sections and of [study] (hashing.identity: settings at their defaults, and those that say where or how,
        are left out; a searched setting is in "search"), and the [search] space.

        A study is continued only with equal settings, so its trials stay comparable.
        """
        base = identity(self.base)
        in_search = {SEARCHABLE[k] for k in self.search}  # (the base holds their first values: [search] has them)
        out = {name: {k: v for k, v in base.get(name, {}).items() if f"{name}.{k}" not in in_search}
               for name in ENGINE_SECTIONS}
        out["search"] = {k: describe(p) for k, p in sorted(self.search.items())}
        out["study"] = identity(self.study)
        return {name: values for name, values in out.items() if values}

    def hash(self) -> str:
        """Hash of `settings()` (for naming and sanity checks)."""
        return digest(self.settings(), size=16)


def describe(p: Param) -> str:
    """A [search] entry as text: its value, its choices, or its range."""
    if p.choices is not None:
        return str(list(p.choices))
    if p.low is not None:
        return f"[{p.low}, {p.high}]" + (f" step {p.step}" if p.step else "") + (" log" if p.log else "")
    return str(p.fixed)


def settings_changes(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """'[train] lr 0.0012 -> 0.002'-style lines for every setting that differs.

    Both are read under today's rule (hashing.stored_identity): a study that stored every setting, or a setting
    that has left the identity since, continues with the same file.
    """
    old, new = _identity_of(old), _identity_of(new)
    changes = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, "(unset)") != b.get(key, "(unset)"):
                changes.append(f"[{section}] {key} {_shown(section, key, a)} -> {_shown(section, key, b)}")
    return changes


def _identity_of(settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    read = {name: stored_identity(SECTIONS[name], values) if name in SECTIONS else values
            for name, values in settings.items()}
    return {name: values for name, values in read.items() if values}


def _shown(section: str, key: str, values: dict[str, Any]) -> str:
    if key in values:
        return str(values[key])
    known = {f.name: f for f in dataclasses.fields(SECTIONS[section])} if section in SECTIONS else {}
    return str(default_of(known[key])) if key in known else "(unset)"  # (a setting left out is at its default)


_SECTIONS = ("study", *ENGINE_SECTIONS, "search")


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study file; `overrides` are dotted keys such as {"study.n_trials": 3}."""
    raw = read_toml(path)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(raw, key, value)
    return parse_study(raw, str(path))


def parse_study(raw: dict[str, Any], path: str = "") -> StudyConfig:
    where = path or "the study file"
    if not raw:
        raise ConfigError(f"{where} is empty: a study file has at least [study] name = \"...\" and a [search] "
                          "table; start from studies/quickstart.toml")
    if not isinstance(raw.get("study"), dict) or "name" not in raw["study"]:
        raise ConfigError(f"{where} has no [study] name; name the study (name = \"my-study\"): a study is found "
                          "again by its name")
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(unknown_key_message(key, list(_SECTIONS), "config").replace("key", "section", 1))
    study = build(StudySection, raw.get("study", {}), "study")
    # The plugins first: they may register objectives, models, datasets or methods the file names.
    load_plugins(study.plugins, search=[Path(path).resolve().parent if path else Path.cwd(), Path.cwd()])
    _validate_study_section(study)

    search_raw = raw.get("search", {})
    if not isinstance(search_raw, dict):
        raise ConfigError("[search] must be a table of settings")
    search: dict[str, Param] = {}
    for key, spec in search_raw.items():
        if key not in SEARCHABLE:
            raise ConfigError(unknown_key_message(key, list(SEARCHABLE), "search"))
        search[key] = _parse_param(key, spec)

    engine = {k: raw[k] for k in ENGINE_SECTIONS if k in raw}
    for key in search:
        section, name = SEARCHABLE[key].split(".")
        if name in engine.get(section, {}):
            raise ConfigError(f"{key} is set in both [{section}] and [search]; keep it in one place")
    engine["seed"] = study.seed
    engine["device"] = study.device
    engine["plugins"] = study.plugins
    try:
        base = TicketConfig.from_dict(engine)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None
    cfg = StudyConfig(study, base, search, path)
    _validate_space(cfg)  # first, so a bad value is reported against its [search] entry
    # Apply the fixed and first searched values so `base` is a valid trial config.
    cfg.base = base.replace({SEARCHABLE[k]: p.extremes()[0] for k, p in search.items()})
    for objective in cfg.objectives:
        objective.check(cfg)
    reinits = search["reinit"].extremes() if "reinit" in search else [cfg.base.prune.reinit]
    for name in study.controls:  # (a control that cannot run on some trial's ticket is refused now, not mid-study)
        for reinit in reinits:
            ticket = cfg.base.replace({"prune.reinit": reinit})
            if ticket.split_control()[0] is None:  # (a control searched is refused with its own message)
                ticket.check_control(name)
    return cfg


def _validate_study_section(s: StudySection) -> None:
    if not 0 <= s.seed <= MAX_SEED:
        raise ConfigError(f"study.seed must be between 0 and 2^63 - 1, got {s.seed}")
    check_study_name(s.name, "study.name")
    if s.n_trials < 0:
        raise ConfigError(f"study.n_trials must be >= 0, got {s.n_trials}")
    if not 1 <= s.replicates <= MAX_REPLICATES:
        raise ConfigError(f"study.replicates must be >= 1 and at most {MAX_REPLICATES} (each is a whole ticket "
                          f"search per trial), got {s.replicates}")
    if s.seed + s.replicates - 1 > MAX_SEED:
        raise ConfigError(f"study.seed {s.seed} + replicates {s.replicates} - 1 passes 2^63 - 1, the largest seed; "
                          "lower study.seed")
    if not s.objectives:
        raise ConfigError("study.objectives is empty; e.g. objectives = [\"ticket_sparsity\", \"train_iterations\"]")
    for name in s.controls:
        if name not in CONTROLS:
            raise ConfigError("study.controls: " + unknown_name(CONTROLS.kind, name, CONTROLS.names()))
    if len(set(s.controls)) != len(s.controls):
        raise ConfigError(f"study.controls lists a control twice: {s.controls}")
    seen: dict[str, str] = {}
    for spec in s.objectives:
        identity = parse_objective(spec).identity
        if identity in seen:
            same = f"{seen[identity]!r}" if seen[identity] == spec else f"{seen[identity]!r} and {spec!r} are one"
            raise ConfigError(f"study.objectives lists an objective twice: {same}; keep one")
        seen[identity] = spec
    if not 0.0 <= s.epsilon < 1.0:
        raise ConfigError(f"study.epsilon must be in [0, 1), got {s.epsilon}")
    if s.max_accuracy_drop is not None and not 0.0 <= s.max_accuracy_drop <= 1.0:
        raise ConfigError(f"study.max_accuracy_drop must be in [0, 1], got {s.max_accuracy_drop}")
    if isinstance(s.stop_on_drop, str) and s.stop_on_drop != "unmatched":
        raise ConfigError(f"study.stop_on_drop must be true, false or \"unmatched\", got {s.stop_on_drop!r}")
    if s.stop_on_drop is True and s.max_accuracy_drop is None:
        raise ConfigError("study.stop_on_drop needs study.max_accuracy_drop, e.g. max_accuracy_drop = 0.05")
    if s.min_dense_accuracy is not None and not 0.0 <= s.min_dense_accuracy <= 1.0:
        raise ConfigError(f"study.min_dense_accuracy must be in [0, 1], got {s.min_dense_accuracy}")
    if not 0.0 <= s.max_dense_gap <= 1.0:
        raise ConfigError(f"study.max_dense_gap must be in [0, 1] (1 turns it off), got {s.max_dense_gap}")
    if s.heartbeat_interval < 1 or s.grace_period <= s.heartbeat_interval:
        raise ConfigError(f"study.heartbeat_interval must be >= 1 and grace_period larger than it, got "
                          f"{s.heartbeat_interval} and {s.grace_period}")
    if s.max_retry < 0:
        raise ConfigError(f"study.max_retry must be >= 0, got {s.max_retry}")
    if s.pack < 1:
        raise ConfigError(f"study.pack must be >= 1 (1 = no packing), got {s.pack}")
    if not 0 <= s.threads <= MAX_THREADS:
        raise ConfigError(f"study.threads must be between 0 (one per process) and {MAX_THREADS}, more than any "
                          f"machine's cores; got {s.threads}")


MAX_NAME = 500  # MLflow's longest experiment name (the experiment is named after the study)
MAX_REPLICATES = 1000  # training seeds per trial: each is a whole ticket search (the paper: 5)
MAX_THREADS = 1024  # torch threads per process: more than any machine's cores (a million crashed torch)


def check_study_name(name: str, where: str) -> None:
    """A study's name: it names the MLflow experiment, the report's file and every message about the study."""
    if not name or any(c in name for c in "/\\") or not name.isprintable():
        raise ConfigError(f"{where} must be a non-empty name without slashes or control characters, got "
                          f"{shown(repr(name))}")
    if len(name) > MAX_NAME:
        raise ConfigError(f"{where} is {len(name):,} characters long; MLflow names an experiment with at most "
                          f"{MAX_NAME}: give a shorter name")


def _parse_param(key: str, spec: Any) -> Param:
    where = f"search.{key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where} has no choices; give at least one value or a fixed scalar")
        if len(set(map(repr, spec))) != len(spec):
            raise ConfigError(f"{where} lists a choice twice: {spec}")
        return Param(key, choices=tuple(spec))
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in ("low", "high", "step", "log")]
        if unknown:
            raise ConfigError(unknown_key_message(unknown[0], ["low", "high", "step", "log"], where))
        if key not in _INT_KEYS | _FLOAT_KEYS:
            raise ConfigError(f"{where} is not numeric, so it takes a list of choices, not a range")
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"{where} range needs both low and high, e.g. {{ low = 0.1, high = 0.5 }}")
        num = int if key in _INT_KEYS else float
        try:
            low, high = num(spec["low"]), num(spec["high"])
            step = num(spec["step"]) if "step" in spec else None
        except (TypeError, ValueError):
            raise ConfigError(f"{where} low/high/step must be {'integers' if num is int else 'numbers'}") from None
        if num is int and any(isinstance(spec.get(k), float) and not float(spec[k]).is_integer()
                              for k in ("low", "high", "step")):
            raise ConfigError(f"{where} is an integer setting; its range bounds must be integers")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}.log must be true or false")
        if low > high:
            raise ConfigError(f"{where} range is inverted (low {low} > high {high}); swap them")
        if step is not None and step <= 0:
            raise ConfigError(f"{where}.step must be > 0, got {step}")
        if log and low <= 0:
            raise ConfigError(f"{where} log range needs low > 0, got {low}")
        if log and step is not None:
            raise ConfigError(f"{where}: Optuna cannot combine log = true with a step; drop one")
        return Param(key, low=low, high=high, step=step, log=log)
    return Param(key, fixed=spec)


def _validate_space(cfg: StudyConfig) -> None:
    """Every choice and both ends of every range must make a valid engine config."""
    # Pass 1 adds first values one setting at a time (fixed ones first, as they are in every trial) so an error is
    # blamed on the entry that introduced it; pass 2 tries every extreme against all other settings' first values
    # (so one_shot = true is checked with the target_density a trial would have, not before it is set).
    checked: dict[str, Any] = {}
    ordered = sorted(cfg.search.items(), key=lambda kv: kv[1].searched)
    for key, param in ordered:
        value = param.extremes()[0]
        try:
            cfg.base.replace({**checked, SEARCHABLE[key]: value})
        except ConfigError as exc:
            raise ConfigError(f"search.{key} = {value!r} is out of range: {exc}") from None
        checked[SEARCHABLE[key]] = value
    for key, param in ordered:
        for value in param.extremes():
            try:
                cfg.base.replace({**checked, SEARCHABLE[key]: value})
            except ConfigError as exc:
                raise ConfigError(f"search.{key} = {value!r} is out of range: {exc}") from None
    rounds = cfg.search["rounds"].extremes() if "rounds" in cfg.search else [cfg.base.prune.rounds]
    targets = cfg.search["target_density"].extremes() if "target_density" in cfg.search else [
        cfg.base.prune.target_density]
    if 0 in rounds and 0 in [t or 0 for t in targets]:
        raise ConfigError("rounds = 0 prunes nothing, so p, k, scope and re-init cannot matter; set rounds >= 1 (in "
                          "[search] or [prune]) or a target_density")
    s = cfg.study
    trained = [k for k in TRAINING_KEYS if k in cfg.searched]
    uses_dense = any(parse_objective(o).matches_dense for o in s.objectives) or (
        s.max_accuracy_drop is not None or s.stop_on_drop)
    if trained and uses_dense and s.min_dense_accuracy is None:
        raise ConfigError(f"[search] varies {', '.join(trained)}, so a badly trained dense network would make every "
                          "round 'match' its own dense accuracy; set [study] min_dense_accuracy (e.g. 0.9) so such "
                          "trials are infeasible")
    if cfg.study.sampler == "grid":
        if not cfg.searched:
            raise ConfigError("the grid sampler needs at least one searched setting in [search]")
        cfg.grid()  # raises on continuous ranges


def validate_with_data(cfg: StudyConfig, train_size: int) -> None:
    """Checks that need the training split size: rewind points and warmup against the length."""
    combos = [cfg.search[k].extremes() if k in cfg.search else [None] for k in ("rewind_iter", "warmup")]
    for rewind, warmup in itertools.product(*combos):
        values = {k: v for k, v in (("rewind_iter", rewind), ("warmup", warmup)) if v is not None}
        try:
            cfg.trial_config(values, cfg.study.seed).resolve_schedule(train_size)
        except ConfigError as exc:
            raise ConfigError(f"[search] {', '.join(f'{k} = {v!r}' for k, v in values.items())}: {exc}") from None
