"""The one typed configuration of a ticket search.

The same dataclasses back the TOML files, the CLI flags (generated from the
fields below) and the run hashes, so a setting has one name, one type and one
validation rule wherever it is written.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .coercion import build, set_dotted
from .errors import ConfigError, SettingWarning
from .hashing import digest, identity
from .linear_paths import MAX_POINTS, STABLE  # noqa: F401 (STABLE: docs/stability/findings.py reads it here)
from .registry import CONTROLS, DATASETS, MASKS, MODELS, REINITS, SCOPES, control_hint, load_plugins, unknown_name
from .seeds import Seeds

MAX_SEED = 2**63 - 1  # (torch and the derived streams take 63 bits)
MAX_ITERATIONS = 10**7  # the longest a round may train, and any length within it

# --------------------------------------------------------------------------- sections


def setting(default: Any = dataclasses.MISSING, *, help: str = "", factory: Any = dataclasses.MISSING,
            flag: str | None = None, identity: bool = True) -> Any:
    """A config field with its --help text (and CLI flag name, when it isn't the field name).

    `help` is a keyword so that the code digest of cache keys leaves it out (hashing.py): rewording a
    --help text keeps the cache. `identity=False`: the setting says where or how a run happens, not what it
    computes, and is no part of the config's hash, its cache keys or a study's settings (hashing.identity).
    """
    meta = {"help": help, **({"flag": flag} if flag else {}), **({} if identity else {"identity": False})}
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass
class DataConfig:
    """The [data] section: which dataset, where its files are, and how it is split."""

    name: str = setting("digits", help="dataset name (the list is at the end of --help)", flag="dataset")
    root: str = setting("data", help="folder searched first for dataset files", flag="data-dir", identity=False)
    download: bool = setting(False, help="allow torchvision to download missing data (needs internet)", identity=False)
    val_size: int = setting(-1, help="validation examples held out of the training split; -1 = the dataset's default")
    split_seed: int = setting(0, help="seed of the train/validation(/test) split, fixed across run seeds")
    augment: bool = setting(False, help="random crop and flip on the device (image datasets with 32x32 inputs)")


@dataclass
class ModelConfig:
    """The [model] section: which model, and its dropout."""

    name: str = setting("lenet-300-100", help="model name (the list is at the end of --help)", flag="model")
    dropout: float = setting(0.0, help="dropout probability on hidden fully connected layers")


@dataclass
class TrainConfig:
    """The [train] section: how each round trains (optimiser, schedule, evaluation, kernels)."""

    optimizer: Literal["adam", "sgd"] = setting("adam", help="adam, or sgd (with --momentum/--nesterov)")
    lr: float = setting(1.2e-3, help="peak learning rate")
    momentum: float = setting(0.0, help="SGD momentum")
    nesterov: bool = setting(False, help="Nesterov momentum for SGD")
    weight_decay: float = setting(0.0, help="L2 weight decay")
    batch_size: int = setting(60, help="examples per iteration")
    iterations: int | str = setting(1000, help="training length per round: iterations, or '500it' / '2ep'")
    warmup: int | str = setting(0, help="linear learning-rate warmup length (iterations or 'Nep')")
    milestones: list[int | str] = setting(factory=list, help="comma-separated points where the lr is x gamma")
    gamma: float = setting(0.1, help="learning-rate factor at each milestone")
    eval_every: int | str = setting(100, help="evaluate on validation and test every N iterations (or 'Nep')")
    eval_batch_size: int = setting(2048, help="examples per evaluation forward pass")
    kernels: Literal["dense", "sparse", "auto"] = setting("dense", help="dense; sparse: pruned fully connected "
                                                           "layers train as CSR on the CPU (the same numbers to "
                                                           "float tolerance); auto: sparse below the measured "
                                                           "crossover density (engine/sparse.py)")
    patience: int = setting(0, help="end a round after this many evaluations without a lower validation loss; 0 = off "
                               "(off follows the paper: every round trains its full length)")


@dataclass
class PruneConfig:
    """The [prune] section: how each round prunes and what the survivors are reset to."""

    prune_rate: float = setting(0.2, help="fraction p of the remaining weights removed per round, in (0, 1)")
    rounds: int = setting(5, help="pruning rounds R after the dense round 0 (ignored when target_density is set)")
    target_density: float = setting(0.0, help="stop when this fraction of prunable weights remains; 0 = use rounds")
    one_shot: bool = setting(False, help="prune straight to target_density in a single round")
    rewind_iter: int | str = setting(0, help="k: the iteration rewound to (or '500it' / '2ep'); 0 = the original "
                                             "ticket")
    # Methods are registered by name (registry.py): the lists in --help are the built-in ones.
    scope: str = setting("layerwise", help="layerwise: each layer loses p; global: one threshold over the layers")
    # A control's config form (TicketConfig.split_control): reinit = "random", mask = "random" or "snip", ...
    reinit: str = setting("rewind", help="what the survivors are reset to: rewind, finetune, lr-rewind; random = "
                                         "the paper's control: the ticket's mask, a fresh init")
    mask: str = setting("magnitude", help="magnitude; or random = the control: a random mask with the ticket's "
                                          "per-layer densities; or a method pruning at initialisation (snip, ...)")
    output_rate: float = setting(1.0, help="factor on p for the output layer (Frankle & Carbin: 0.5)")
    conv_rate: float = setting(-1.0, help="rate for conv layers; -1 = prune_rate")
    layer_rates: dict[str, float] = setting(factory=dict, help="per-layer rate overrides, e.g. fc1=0.3,fc3=0.1")
    ignore: list[str] = setting(factory=list, help="layers never pruned, e.g. conv1")


@dataclass
class SeedConfig:
    """Each source of randomness on its own (seeds.py); -1 takes `seed`."""

    init: int = setting(-1, flag="init-seed", help="seed of θ0 and of a random re-init's fresh draw; -1 = --seed")
    data_order: int = setting(-1, flag="data-order-seed", help="seed of the order of training batches (and of "
                                                               "augmentation); -1 = --seed")
    dropout: int = setting(-1, flag="dropout-seed", help="seed of dropout; -1 = --seed")
    mask: int = setting(-1, flag="mask-seed", help="seed of random masks; -1 = --seed")



@dataclass
class StabilityConfig:
    """Each pruned round's stability to SGD noise, measured as the search goes (engine/connectivity.py)."""

    points: int = setting(0, flag="stability-points", help="points on the linear path between the round and a "
                                                           "second copy trained with another data order (the "
                                                           "paper: 30); 0 = off. Costs a second training per round")
    copy_seed: int = setting(-1, flag="stability-copy-seed", help="the second copy's data-order seed; -1 = a "
                                                                  "stream of its own")
    rounds: list[int] = setting(factory=list, flag="stability-rounds", help="the pruned rounds measured, e.g. "
                                "7,10,15; empty = every one")
    dense_ks: list[int] = setting(factory=list, flag="stability-dense-ks", help="also the dense network from θ_k at "
                                  "each of these k, measured with round 0 (the earliest stable k), e.g. 0,100,500")
    level_points: int = setting(0, flag="level-points", help="points on the linear path from each round's trained "
                                "weights to the next round's, for its level barrier (Paul et al. 2023; 30 as for "
                                "points); 0 = off. Trains nothing: evaluates validation and test at each point")


@dataclass
class SparseTrainingConfig:
    """The sparse-training baselines' settings (static, set, rigl: engine/branches/sparse_training.py)."""

    layer_density: Literal["erk", "uniform", "ticket"] = setting(
        "erk", help="how a level's density is split over the layers: erk (RigL's Erdős–Rényi-Kernel), uniform, or "
                    "ticket (the ticket's own per-layer densities); layers the ticket never prunes stay dense")
    update_every: int | str = setting(100, help="ΔT: iterations (or 'Nep') between the mask updates of set and rigl")
    drop_fraction: float = setting(0.3, help="fraction of each layer's surviving weights dropped and regrown at an "
                                             "update: SET's ζ, RigL's α (which decays by a cosine)")
    end_fraction: float = setting(0.75, help="rigl: no mask update after this fraction of training (RigL's T_end)")
    budget: float = setting(1.0, help="training length as a multiple of the round's iterations, its learning-rate "
                                      "schedule stretched alike (RigL reports 2 and 5)")

    def check(self) -> None:
        where = "sparse_training"
        if parse_length(self.update_every, f"{where}.update_every")[0] <= 0:
            raise ConfigError(f"{where}.update_every must be > 0 iterations, got {self.update_every!r}")
        if not 0.0 < self.drop_fraction < 1.0:
            raise ConfigError(f"{where}.drop_fraction must be in (0, 1), got {self.drop_fraction}; e.g. 0.3")
        if not 0.0 < self.end_fraction <= 1.0:
            raise ConfigError(f"{where}.end_fraction must be in (0, 1], got {self.end_fraction}; e.g. 0.75")
        if not 0.0 < self.budget <= 100.0:
            raise ConfigError(f"{where}.budget must be in (0, 100] (a multiple of the round's iterations), got "
                              f"{self.budget}; e.g. 2")


@dataclass
class TicketConfig:
    """The settings of one ticket search: the sections above, plus its seed, device and plugins.

    `ltstudy ticket` builds it from flags and `--config FILE.toml`; a study builds one per trial and seed.
    docs/study-file.md lists every setting with its default.
    """

    seed: int = setting(0, help="seed of θ0, data order, dropout and random masks (each can be set apart: [seeds])")
    device: str = setting("auto", help="auto (CUDA when present), cpu, cuda or cuda:N", identity=False)
    plugins: list[str] = setting(factory=list, flag="plugin", help="your modules (or .py files) that register models, "
                                 "datasets or methods, e.g. --plugin mynets", identity=False)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    sparse_training: SparseTrainingConfig = field(default_factory=SparseTrainingConfig)

    @property
    def resolved_seeds(self) -> Seeds:
        """The seed each source of randomness draws from: its own, or `seed`."""
        s = self.seeds
        return Seeds(*(self.seed if v == -1 else v for v in (s.init, s.data_order, s.dropout, s.mask)))

    # ----------------------------------------------------------------- (de)serialise

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Content hash of the config's identity (hashing.identity; the cache keys add the code and the data read)."""
        return digest(identity(self), size=16)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config") -> TicketConfig:
        cfg = build(cls, data, where)
        cfg.validate()
        return cfg

    def replace(self, overrides: dict[str, Any]) -> TicketConfig:
        """A copy with dotted-key overrides such as {"prune.prune_rate": 0.3}."""
        data = self.to_dict()
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return TicketConfig.from_dict(data)

    # ----------------------------------------------------------------- controls

    def split_control(self) -> tuple[str | None, TicketConfig]:
        """The control this config names in its config form (`prune.reinit = "random"`, `prune.mask = "random"`
        or a method pruning at initialisation), and the ticket it is evaluated on: this config with those
        settings at their defaults. (None, self) for a ticket's config."""
        p = self.prune
        form = (p.reinit if p.reinit not in REINITS else None, p.mask if p.mask not in MASKS else None)
        if form == (None, None):
            return None, self
        name = CONTROLS.config_forms().get(form)
        if name is None:
            raise ConfigError(f"prune.reinit = {p.reinit!r} with prune.mask = {p.mask!r} is no registered control; "
                              f"the controls' config forms: {CONTROLS.forms_text()}")
        default = PruneConfig()
        return name, self.replace({"prune.reinit": default.reinit if form[0] else p.reinit,
                                   "prune.mask": default.mask if form[1] else p.mask})

    def check_control(self, name: str, subject: str | None = None) -> None:
        """Refuse, in one line, control `name` (registry.CONTROLS) on this ticket's config when it cannot run there."""
        if name not in CONTROLS:
            raise ConfigError(unknown_name(CONTROLS.kind, name, CONTROLS.names()))
        entry, reinit = CONTROLS.get(name), self.prune.reinit
        if entry.load().needs_rewinding and not REINITS.load(reinit).rewinds:
            raise ConfigError(f"{subject or f'control {name!r}'} prunes at initialisation: it needs a ticket that "
                              f"rewinds (prune.reinit = \"rewind\"), not {reinit!r}, whose rounds start from trained "
                              "weights")

    # ----------------------------------------------------------------- checks

    def validate(self) -> None:
        """Checks that need no data; data-dependent ones live in `resolve_schedule`."""
        load_plugins(self.plugins, search=[Path.cwd()])
        p, t = self.prune, self.train
        forms = CONTROLS.config_forms()
        for registry, name, where, part in ((DATASETS, self.data.name, "data.name", None),
                                            (MODELS, self.model.name, "model.name", None),
                                            (REINITS, p.reinit, "prune.reinit", 0),
                                            (MASKS, p.mask, "prune.mask", 1),
                                            (SCOPES, p.scope, "prune.scope", None)):
            controls = [] if part is None else list(dict.fromkeys(f[part] for f in forms if f[part]))
            if name not in registry and name not in controls:
                hint = control_hint(name, registry.kind) if part is not None else None
                raise ConfigError(f"{where}: " + (hint or unknown_name(registry.kind, name,
                                                                       [*registry.names(), *controls])))
        control, ticket = self.split_control()
        if control is not None:
            ticket.check_control(control, f"prune.mask {p.mask!r}" if p.mask not in MASKS else None)
        for name, seed in (("seed", self.seed), ("data.split_seed", self.data.split_seed)):
            if not 0 <= seed <= MAX_SEED:
                raise ConfigError(f"{name} must be between 0 and 2^63 - 1, got {seed}")
        for name, seed in dataclasses.asdict(self.seeds).items():
            if not -1 <= seed <= MAX_SEED:
                raise ConfigError(f"seeds.{name} must be between 0 and 2^63 - 1, or -1 (= seed), got {seed}")
        if t.optimizer == "adam" and (t.momentum or t.nesterov):
            warnings.warn("train.momentum and train.nesterov are SGD settings; Adam ignores them (its moments are "
                          "fixed at beta1 = 0.9, beta2 = 0.999)", SettingWarning, stacklevel=2)
        if not 0.0 < p.prune_rate < 1.0:
            raise ConfigError(f"prune.prune_rate must be in (0, 1), got {p.prune_rate}; e.g. --prune-rate 0.2")
        if p.rounds < 0:
            raise ConfigError(f"prune.rounds must be >= 0, got {p.rounds}")
        if p.target_density and not 0.0 < p.target_density < 1.0:
            raise ConfigError(f"prune.target_density must be in (0, 1), got {p.target_density}; 0 means 'use rounds'")
        if p.one_shot and not p.target_density:
            raise ConfigError("prune.one_shot needs prune.target_density, e.g. --target-density 0.1")
        if not 0.0 < p.output_rate * p.prune_rate < 1.0:
            raise ConfigError(f"prune.output_rate x prune_rate must be in (0, 1), got {p.output_rate} x {p.prune_rate}")
        if p.conv_rate != -1.0 and not 0.0 < p.conv_rate < 1.0:
            raise ConfigError(f"prune.conv_rate must be in (0, 1) or -1 (= prune_rate), got {p.conv_rate}")
        for name, rate in p.layer_rates.items():
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"prune.layer_rates.{name} must be in [0, 1), got {rate}")
        if self.stability.points and (not 2 <= self.stability.points <= MAX_POINTS or t.patience):
            raise ConfigError(f"stability.points must be 0 (off) or 2 (the path's ends) to {MAX_POINTS}, with "
                              "train.patience = 0 (both copies train to the end); got "
                              f"{self.stability.points} and {t.patience}")
        if self.stability.level_points and not 2 <= self.stability.level_points <= MAX_POINTS:
            raise ConfigError(f"stability.level_points must be 0 (off) or 2 (the path's ends) to {MAX_POINTS}, got "
                              f"{self.stability.level_points}")
        if (self.stability.rounds or self.stability.dense_ks or self.stability.copy_seed != -1) \
                and not self.stability.points:
            raise ConfigError("stability.rounds, stability.dense_ks and stability.copy_seed choose what [stability] "
                              "measures: set stability.points too (the paper: 30)")
        if any(r < 1 for r in self.stability.rounds) or any(k < 0 for k in self.stability.dense_ks):
            raise ConfigError(f"stability.rounds count pruned rounds from 1 and stability.dense_ks are iterations >= "
                              f"0; got {self.stability.rounds} and {self.stability.dense_ks}")
        if not -1 <= self.stability.copy_seed <= MAX_SEED:
            raise ConfigError(f"stability.copy_seed must be between 0 and 2^63 - 1, or -1, got "
                              f"{self.stability.copy_seed}")
        self.sparse_training.check()
        if t.patience < 0:
            raise ConfigError(f"train.patience must be >= 0 (0 = off), got {t.patience}")
        if self.data.val_size == 0 or self.data.val_size < -1:
            raise ConfigError(f"data.val_size must be >= 1 (examples held out for validation) or -1 (the dataset's "
                              f"default), got {self.data.val_size}")
        if not 0.0 <= self.model.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.model.dropout}")
        for name in ("lr", "batch_size", "eval_batch_size", "gamma"):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(t, name)}")
        for name in ("momentum", "weight_decay"):
            if getattr(t, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(t, name)}")
        if t.nesterov and (t.optimizer != "sgd" or t.momentum <= 0):
            raise ConfigError("train.nesterov needs optimizer = 'sgd' and momentum > 0")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        # Parse lengths now so a typo like '2epochs' fails before any data loads.
        for name, value in (("train.iterations", t.iterations), ("train.warmup", t.warmup),
                            ("train.eval_every", t.eval_every), ("prune.rewind_iter", p.rewind_iter),
                            *((f"train.milestones[{i}]", m) for i, m in enumerate(t.milestones))):
            parse_length(value, name)
        if parse_length(t.iterations, "train.iterations")[0] <= 0:
            raise ConfigError(f"train.iterations must be > 0, got {t.iterations!r}")
        if parse_length(t.eval_every, "train.eval_every")[0] <= 0:
            raise ConfigError(f"train.eval_every must be > 0, got {t.eval_every!r}")

    def resolve_schedule(self, train_size: int) -> Schedule:
        """Turn '2ep'-style lengths into iterations once the training split size is known."""
        t = self.train
        ipe = max(1, train_size // t.batch_size)
        it = lambda v, n: to_iterations(v, ipe, n)  # noqa: E731
        sched = Schedule(
            iterations=it(t.iterations, "train.iterations"),
            iterations_per_epoch=ipe,
            warmup=it(t.warmup, "train.warmup"),
            milestones=tuple(it(m, "train.milestones") for m in t.milestones),
            eval_every=it(t.eval_every, "train.eval_every"),
            rewind_iter=it(self.prune.rewind_iter, "prune.rewind_iter"),
        )
        if not 0 <= sched.rewind_iter < sched.iterations:
            raise ConfigError(
                f"prune.rewind_iter k={self.prune.rewind_iter!r} ({sched.rewind_iter} iterations) must be >= 0 "
                f"and below the training length {sched.iterations} iterations; lower --rewind-iter or raise "
                "--iterations")
        if sched.warmup >= sched.iterations:
            raise ConfigError(f"train.warmup ({sched.warmup} it) must be shorter than train.iterations "
                              f"({sched.iterations} it)")
        if t.batch_size > train_size:
            raise ConfigError(f"train.batch_size {t.batch_size} is more than the {train_size} training examples; "
                              f"use at most {train_size} (every step takes a full batch)")
        if sched.eval_every > sched.iterations:
            warnings.warn(f"train.eval_every ({sched.eval_every} it) is longer than a round ({sched.iterations} it): "
                          "validation runs only at the end of each round, so early stopping has one point to "
                          "choose from", SettingWarning, stacklevel=2)
        return sched


@dataclass(frozen=True)
class Schedule:
    """Training lengths in iterations, resolved against the training split."""

    iterations: int
    iterations_per_epoch: int
    warmup: int
    milestones: tuple[int, ...]
    eval_every: int
    rewind_iter: int


# --------------------------------------------------------------------------- lengths

_LENGTH = re.compile(r"^\s*(\d+)\s*(it|ep)?\s*$")


def parse_length(value: int | str, name: str) -> tuple[int, str]:
    """'500it' -> (500, 'it'), '2ep' -> (2, 'ep'), 7 -> (7, 'it')."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an iteration count or 'Nit' / 'Nep', got {value!r}")
    if isinstance(value, int):
        n, unit = value, "it"
    else:
        m = _LENGTH.match(str(value))
        if not m:
            if re.match(r"^\s*-\d", str(value)):
                raise ConfigError(f"{name} must be >= 0, got {value!r}")
            raise ConfigError(f"{name} must be an iteration count or 'Nit' / 'Nep' (e.g. 500 or '2ep'), got "
                              f"{value!r}")
        n, unit = int(m.group(1)), m.group(2) or "it"
    if n < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    if n > MAX_ITERATIONS and unit == "it":  # (epochs: once the training split is known, `to_iterations`)
        raise ConfigError(f"{name} = {value!r} is longer than {MAX_ITERATIONS:,} iterations, the most a round may "
                          "train (20 times ImageNet's ResNet-50 schedule)")
    return n, unit


def to_iterations(value: int | str, iterations_per_epoch: int, name: str) -> int:
    n, unit = parse_length(value, name)
    n = n * iterations_per_epoch if unit == "ep" else n
    if n > MAX_ITERATIONS:
        raise ConfigError(f"{name} = {value!r} is {n:,} iterations, more than the {MAX_ITERATIONS:,} a round may "
                          "train (20 times ImageNet's ResNet-50 schedule)")
    return n


# --------------------------------------------------------------------------- files and flags


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:  # (a name too long, a folder that is a file, no permission)
        name = str(path) if len(str(path)) <= 80 else f"{str(path)[:60]}… ({len(str(path)):,} characters)"
        raise ConfigError(f"config file {name} cannot be read ({exc.strerror or exc})") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TicketConfig:
    """A validated config from a TOML file (or the defaults) and dotted-key overrides such as {"prune.rounds": 3}."""
    data = read_toml(path) if path else {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return TicketConfig.from_dict(data)


def config_fields(cls: type = TicketConfig, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """Every leaf setting as (dotted key, field, type), in declaration order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(config_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f, tp))
    return out


def flag_name(key: str, f: dataclasses.Field) -> str:
    return "--" + f.metadata.get("flag", key.rpartition(".")[2]).replace("_", "-")
