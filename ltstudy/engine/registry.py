"""Registries: datasets, models and the methods of a ticket search, each found by name.

An entry holds what the CLI and the config checks need (name, summary, and
for datasets and models their shapes) and a *target*: the builder or class,
given as an object or as "module:attribute", imported only when the entry is
first used. So `ltstudy --help` lists every entry without importing torch,
and a user adds their own with one call, in a file of their own:

    from ltstudy.engine.registry import MODELS
    MODELS.add("my-mlp", "mynets:build_mlp", "a 1-hidden-layer MLP")

What each registry's targets are:
- DATASETS: a loader, DataConfig -> raw numpy arrays (train_x, train_y, test_x, test_y), x shaped (n, c, h, w);
  metadata num_classes, input_shape (c, h, w) and default_val_size.
- MODELS: a builder, (input_shape, num_classes, dropout) -> nn.Module; metadata min_size (the smallest
  input height and width it accepts; 1 when left out).
- REINITS: a `reinit.base.Reinit` subclass: how survivors start the next round (rewind, finetune, ...).
- MASKS: a `masks.base.MaskRule` subclass: how IMP's pruning step picks a round's mask (magnitude).
- SCOPES: a `scopes.base.Scope` subclass: which layers share one pruning threshold.
- AT_INIT: a `masks.at_init.AtInit` subclass: a pruning-at-initialisation method (snip, grasp, ...).
- CONTROLS: a `branches.base.Branch` subclass: a control or baseline trained at each level of a ticket's
  search (`[study] controls`, `ltstudy ticket --control`). Every AT_INIT method X is also the controls X and
  X-reinit (branches/at_init.py) without a registration here.
- METRICS: a `metrics.RoundMetric` subclass: numbers computed for every round (compression.py's).

What the config checks read of a method (a re-init's `rewinds`, a branch's `needs_rewinding` and config form)
is its class's attribute, and nothing repeats it: the modules of reinit/ and branches/ import torch only inside
the methods that train, so loading their classes costs no torch (`ltstudy compare` never imports it).

Each registry checks what its entries must be (contracts.py): a method class subclasses its kind's base
class and implements its abstract methods; a builder takes the registry's arguments, with metadata of the
right shape. An object is checked when it is registered, a "module:attribute" when it is first loaded:
either way in the checks of a config, before anything runs.

User modules that register entries are loaded by `load_plugins` (a study's
`[study] plugins`, `ltstudy ticket --plugin`) or, for installed packages, from
the entry-point group `ltstudy.plugins`, read the first time a name is not
found. The cache keys cover the code of every entry a run uses (`Entry.code`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contracts import Check, builder, method_class, positive_int
from .errors import ConfigError

PLUGIN_GROUP = "ltstudy.plugins"


@dataclass
class Entry:
    """One registered name: its target (an object, or "module:attribute" until first loaded), summary and metadata."""

    name: str
    target: Any  # the object, or "module:attribute" until first loaded
    summary: str
    meta: dict[str, Any] = field(default_factory=dict)  # a registration's metadata (a branch's: its parameters)
    contract: Check | None = None  # what the target must be (contracts.py), checked when it is first loaded

    def load(self) -> Any:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split(".") if attr else ():
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"cannot load '{self.name}' from {self.target!r} ({type(exc).__name__}: {exc}); "
                                  "check the module:attribute it was registered with") from None
            if self.contract is not None:
                self.contract(self.name, obj, self.meta)
            self.target = obj
        return self.target

    def code(self) -> str:
        """A digest of the code behind the entry: "" for the engine's own (in every key anyway)."""
        from .hashing import module_digest

        return module_digest(self.load())

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["meta"][key]
        except KeyError:
            raise AttributeError(key) from None


class Registry:
    """Named entries of one kind; `defaults` fills metadata a registration leaves out."""

    def __init__(self, kind: str, defaults: dict[str, Any] | None = None, contract: Check | None = None):
        self.kind = kind
        self.defaults = dict(defaults or {})
        self.contract = contract  # (contracts.py: a class or builder is checked when registered, or first loaded)
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: Any, summary: str | None = None, **meta: Any) -> None:
        """Register `target` under `name` (again: replaces it). The summary defaults to the docstring's first line."""
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ConfigError(f"a {self.kind} name must be a non-empty string without spaces, got {name!r}")
        if summary is None:
            doc = getattr(target, "__doc__", None) if not isinstance(target, str) else None
            summary = (doc or "").strip().splitlines()[0] if doc and doc.strip() else f"(a {self.kind} of yours)"
        if not isinstance(target, str) and self.contract is not None:
            self.contract(name, target, meta)
        self._entries[name] = Entry(name, target, summary, {**self.defaults, **meta}, self.contract)

    def register(self, name: str, summary: str | None = None, **meta: Any) -> Callable[[Any], Any]:
        """Decorator form of `add`."""
        def wrap(target: Any) -> Any:
            self.add(name, target, summary, **meta)
            return target
        return wrap

    def _all(self) -> dict[str, Entry]:
        return self._entries

    def get(self, name: str) -> Entry:
        entry = self._all().get(name)
        if entry is None and load_installed_plugins():
            entry = self._all().get(name)
        if entry is None:
            raise ConfigError(unknown_name(self.kind, name, list(self._all())))
        return entry

    def load(self, name: str) -> Any:
        return self.get(name).load()

    def __contains__(self, name: object) -> bool:
        if name in self._all():
            return True
        return isinstance(name, str) and load_installed_plugins() and name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def items(self):
        return self._all().items()

    def values(self):
        return self._all().values()

    def names(self) -> list[str]:
        return list(self._all())


def unknown_name(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown {kind} '{name}'; {hint}choose from {', '.join(known)}"


# --------------------------------------------------------------------------- plugins

_INSTALLED: bool | None = None  # the entry points were read (True if any loaded)
_LOADED: dict[str, str] = {}  # plugin spec -> module name


def load_installed_plugins() -> bool:
    """Load the installed packages' plugins (entry-point group `ltstudy.plugins`) once; True if any was loaded."""
    global _INSTALLED
    if _INSTALLED is None:
        _INSTALLED = False
        from importlib.metadata import entry_points

        for ep in entry_points(group=PLUGIN_GROUP):
            try:
                obj = ep.load()
            except Exception as exc:
                raise ConfigError(f"the installed plugin {ep.name!r} ({ep.value}) failed to load "
                                  f"({type(exc).__name__}: {exc}); fix or uninstall it") from None
            if callable(obj):
                obj()
            _INSTALLED = True
    return _INSTALLED


def load_plugins(specs: Iterable[str], search: Iterable[str | Path] = ()) -> list[str]:
    """Import user modules that register entries: module names or paths of .py files; their module names.

    A module name is looked for on sys.path and then in `search` (the study file's folder, the working
    folder), so `mynets.py` beside a study file is found by `plugins = ["mynets"]`.
    """
    loaded = []
    for spec in specs:
        if spec in _LOADED:
            loaded.append(_LOADED[spec])
            continue
        path = Path(spec)
        try:
            if spec.endswith(".py"):
                if not path.is_absolute():  # relative to the study file's folder or the working folder
                    path = next((Path(f) / path for f in search if (Path(f) / path).is_file()), path)
                if not path.is_file():
                    raise ConfigError(f"plugin file {spec} does not exist (looked in "
                                      f"{', '.join(map(str, search)) or 'the working folder'})")
                name = _import_file(spec, path.resolve())
            else:
                name = spec
                if importlib.util.find_spec(spec.split(".")[0]) is None:
                    for folder in search:
                        if (Path(folder) / f"{spec.split('.')[0]}.py").is_file() or \
                                (Path(folder) / spec.split(".")[0] / "__init__.py").is_file():
                            sys.path.insert(0, str(Path(folder).resolve()))
                            break
                importlib.import_module(spec)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot load plugin {spec!r} ({type(exc).__name__}: {exc}); give a module on "
                              "PYTHONPATH, a module beside the study file, or a path to a .py file") from None
        _LOADED[spec] = name
        loaded.append(name)
    return loaded


def _import_file(spec: str, path: Path) -> str:
    """Import a plugin file as the module its name says (mymodels.py: `mymodels`), its folder on sys.path.

    So a registration "mymodels:build" finds it, its own imports of files beside it work, and a worker
    process that imports `mymodels` gets the same file, wherever the command was started.
    """
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(f"plugin file {spec}: {path.name} is not a Python module name; rename it (letters, digits, "
                          "underscores)")
    held = sys.modules.get(name)
    found = held.__spec__.origin if held is not None and held.__spec__ is not None else None
    if held is None:
        try:
            found_spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found_spec = None
        found = found_spec.origin if found_spec is not None else None
    if found is not None and Path(found).resolve() != path:
        raise ConfigError(f"plugin file {spec} has the name of the module '{name}' of {found}; rename the file, "
                          "or give the module's name instead of a path")
    if held is not None:
        return name  # (this file, imported already)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    importlib.import_module(name)
    return name


# --------------------------------------------------------------------------- the built-in entries

DATASETS = Registry("dataset", defaults={"default_val_size": 5000, "num_classes": 10}, contract=builder(
    "dataset", ("cfg",), {"input_shape": (lambda v: len(v) == 3 and all(map(positive_int, v)),
                                          "(channels, height, width), three positive integers"),
                          "num_classes": (lambda v: positive_int(v) and v >= 2, "an integer of at least 2"),
                          "default_val_size": (positive_int, "a positive integer")}))
# input_shape is (channels, height, width) of the loader's images: models are checked against it before any load.
DATASETS.add("digits", "ltstudy.engine.datasets.digits:load", "scikit-learn's 8x8 digits (1,797 images), embedded "
             "and offline", default_val_size=180, input_shape=(1, 8, 8))
DATASETS.add("fashion-mnist", "ltstudy.engine.datasets.fashion_mnist:load", "Fashion-MNIST 28x28 (IDX files; Debian: "
             "dataset-fashion-mnist)", input_shape=(1, 28, 28))
DATASETS.add("mnist", "ltstudy.engine.datasets.mnist:load", "MNIST 28x28 (IDX files) from --data-dir (download on "
             "request)", input_shape=(1, 28, 28))
DATASETS.add("cifar10", "ltstudy.engine.datasets.cifar10:load", "CIFAR-10 32x32x3 (python batches) from --data-dir "
             "(download on request)", input_shape=(3, 32, 32))

MODELS = Registry("model", defaults={"min_size": 1}, contract=builder(
    "model", ("input_shape", "num_classes", "dropout"), {"min_size": (positive_int, "a positive integer")}))
MODELS.add("lenet-300-100", "ltstudy.engine.models.lenet_300_100:build", "fully connected 300-100, any input size "
           "(Frankle & Carbin, MNIST)")
MODELS.add("lenet-5", "ltstudy.engine.models.lenet_5:build", "conv 6-16 (5x5), fc 120-84, inputs of at least 28x28",
           min_size=28)
for _blocks in (1, 2, 3):
    MODELS.add(f"conv-{2 * _blocks}", f"ltstudy.engine.models.conv:conv_{2 * _blocks}",
               f"Frankle & Carbin's Conv-{2 * _blocks} (CIFAR-10): {2 * _blocks} convs, fc 256-256",
               min_size=2 ** _blocks)
MODELS.add("vgg-19", "ltstudy.engine.models.vgg:build", "VGG-19 for CIFAR-10 (batch norm, global average pool, one "
           "fc), inputs of at least 16x16", min_size=16)
MODELS.add("resnet-20", "ltstudy.engine.models.resnet:ResNet20", "ResNet-20 for CIFAR-10 (He et al. 2016), widths "
           "16-32-64", min_size=4)

REINITS = Registry("re-init strategy", contract=method_class("re-init strategy", "ltstudy.engine.reinit.base:Reinit"))
REINITS.add("rewind", "ltstudy.engine.reinit.rewind:Rewind", "survivors <- θ_k, retrain k..T (k = 0: the original "
            "lottery ticket)")
REINITS.add("finetune", "ltstudy.engine.reinit.finetune:Finetune", "keep the trained weights, train T-k more "
            "iterations at the final learning rate")
REINITS.add("lr-rewind", "ltstudy.engine.reinit.lr_rewind:LrRewind", "keep the trained weights, replay the learning-"
            "rate schedule from k (Renda et al. 2020)")

MASKS = Registry("mask rule", contract=method_class("mask rule", "ltstudy.engine.masks.base:MaskRule", elsewhere={
    "ltstudy.engine.masks.at_init:AtInit": "AT_INIT (it is then the controls NAME and NAME-reinit)"}))
MASKS.add("magnitude", "ltstudy.engine.masks.magnitude:Magnitude", "prune the smallest surviving weights")

SCOPES = Registry("pruning scope", contract=method_class("pruning scope", "ltstudy.engine.scopes.base:Scope"))
SCOPES.add("layerwise", "ltstudy.engine.scopes.layerwise:Layerwise", "each layer loses p of its survivors")
SCOPES.add("global", "ltstudy.engine.scopes.global_scope:Global", "one magnitude threshold over every layer without a "
           "rate of its own")

# Pruning at initialisation (masks/at_init.py), each with Frankle et al. 2021's ablations of its mask.
AT_INIT = Registry("pruning-at-initialisation method", contract=method_class("pruning-at-initialisation method",
                                                                               "ltstudy.engine.masks.at_init:AtInit"))
for _name, _target, _summary in (("snip", "snip:Snip", "SNIP: |g ⊙ θ| on a batch (Lee et al. 2019)"),
                                 ("grasp", "grasp:Grasp", "GraSP: θ ⊙ Hg (Wang et al. 2020)"),
                                 ("synflow", "synflow:Synflow", "SynFlow: data-free, iterative (Tanaka et al. 2020)"),
                                 ("magnitude-init", "magnitude_init:MagnitudeInit", "the largest |θ| at "
                                  "initialisation")):
    AT_INIT.add(_name, f"ltstudy.engine.masks.{_target}", _summary)
    for _variant, _what in (("shuffled", "each layer's mask shuffled"), ("inverted", "the lowest scores kept")):
        AT_INIT.add(f"{_name}-{_variant}", f"ltstudy.engine.masks.{_target}{_variant.title()}",
                    f"{_name}'s ablation: {_what}")
AT_INIT.add("random-uniform", "ltstudy.engine.masks.random_uniform:RandomUniform", "random, every pruned layer at "
            "the same density")


class Controls(Registry):
    """The registered branches (branches/), and two for every pruning-at-initialisation method X not registered here
    under those names: X (its mask, trained like the ticket) and X-reinit (its mask, a fresh draw): a plugin's
    `AT_INIT.add("my-snip", MySnip)` is `[study] controls = ["my-snip"]` with nothing else to register."""

    def _all(self) -> dict[str, Entry]:
        derived = {}
        for name, e in AT_INIT.items():
            for control, cls, summary in (
                    (name, "AtInitBaseline", f"{e.summary}, at each level's density, trained like the ticket"),
                    (f"{name}-reinit", "AtInitReinitBaseline", f"{name}'s mask (scored on θ_k) with a fresh "
                                                               "initialisation")):
                if control not in self._entries:
                    derived[control] = Entry(control, f"ltstudy.engine.branches.at_init:{cls}", summary,
                                             {"rule": name})
        return {**self._entries, **derived}

    def get(self, name: str) -> Entry:
        try:
            return super().get(name)
        except ConfigError:
            found = self._variant(name)
            if found is None:
                raise
            return found

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and self._variant(name) is not None)

    def _variant(self, name: str) -> Entry | None:
        """A registered branch's variant named "<name>-<suffix>" (`Branch.variant`: "rigl-uniform-2x"), or None."""
        for base, e in self._entries.items():
            if name.startswith(base + "-"):
                cls = e.load()
                meta = cls.variant(name[len(base) + 1:])
                if meta is not None:
                    return Entry(name, cls, f"{e.summary} ({cls.describe(**meta)})", {**e.meta, **meta})
        return None

    def config_forms(self) -> dict[tuple[str | None, str | None], str]:
        """(prune.reinit, prune.mask) values that name a control in a config -> its name (branches/base.py)."""
        forms: dict[tuple[str | None, str | None], str] = {}
        for name, e in self.items():
            form = e.load().config_form(**e.meta)
            if form != (None, None):
                forms.setdefault(form, name)
        return forms

    def forms_text(self) -> str:
        """The config forms, for a message: "random-reinit = reinit 'random', ..."."""
        return ", ".join(f"{name} = " + " + ".join(f"{k} {v!r}" for k, v in zip(("reinit", "mask"), form, strict=True)
                                                   if v) for form, name in self.config_forms().items())


CONTROLS = Controls("control", contract=method_class("control", "ltstudy.engine.branches.base:Branch"))
CONTROLS.add("random-reinit", "ltstudy.engine.branches.random_reinit:RandomReinit", "the ticket's mask with a fresh "
             "θ'0 from the same distribution, trained from iteration 0 (Frankle & Carbin)")
CONTROLS.add("random-mask", "ltstudy.engine.branches.random_mask:RandomMask", "a random mask with the ticket's "
             "per-layer densities, started like the ticket (Frankle & Carbin)")
CONTROLS.add("random-both", "ltstudy.engine.branches.random_both:RandomBoth", "a random mask with the ticket's "
             "per-layer densities and a fresh θ'0: a random sparse network")

for _name, _target, _summary in (
        ("static", "static_sparse:StaticSparse", "a random mask at each level's density drawn at a fresh init, never "
                                                 "changed ([sparse_training]; -uniform, -2x ... fix a setting)"),
        ("set", "set_sparse:SetSparse", "SET: static's start, the weights closest to zero regrown at random every "
                                        "update (Mocanu et al. 2018)"),
        ("rigl", "rigl:RigL", "RigL: static's start, the smallest weights regrown where the dense gradient is "
                              "largest (Evci et al. 2020)")):
    CONTROLS.add(_name, f"ltstudy.engine.branches.{_target}", _summary)

METRICS = Registry("round metric", contract=method_class("round metric", "ltstudy.engine.metrics:RoundMetric"))
METRICS.add("compression", "ltstudy.engine.compression:Compression", "ShrinkBench's compression ratios, FLOPs and "
            "theoretical speedup")


def control_hint(name: str, kind: str) -> str | None:
    """For a control's name given where a mask rule or re-init goes (`--mask snip-reinit`): how to run it, or None
    for any other name."""
    if not isinstance(name, str) or name not in CONTROLS:
        return None
    return (f"'{name}' is a control ({CONTROLS.get(name).summary}), not a {kind}: run it alone with --control {name}, "
            "or in a study list it in [study] controls")


def check_pair(model: str, dataset: str) -> None:
    """Refuse a model that cannot take the dataset's images, before anything is loaded or built."""
    m, d = MODELS.get(model), DATASETS.get(dataset)
    if "input_shape" not in d.meta:
        return  # a user's dataset without a declared shape: build_model checks the real one
    _, h, w = d.input_shape
    if min(h, w) < m.min_size:
        small = [n for n, e in MODELS.items() if e.min_size <= min(h, w)]
        raise ConfigError(f"model {model} needs inputs of at least {m.min_size}x{m.min_size}, but {dataset} images "
                          f"are {h}x{w}; use {', '.join(small)} for {dataset}")
