"""Hostile input for fuzzing the command line: study-file mutations and flag sets over the commands.

Two fuzzes draw from here: tests/test_fuzz.py (hypothesis, in-process, in CI: it cuts every accepted
input off before anything is created or trained) and tests/fuzz_cli.py (subprocesses, outside CI:
accepted inputs really run). Whatever they draw, the answer must be a result or one line and exit 2
that creates nothing, never a traceback.

An input is a `Case`: the command line (arguments after `ltstudy`) and, for a study-file case, the
file's text, written as `study.toml` in the folder the command runs in.
"""

from __future__ import annotations

import math
import random
import typing
from dataclasses import dataclass, field

from ltstudy.engine.config import TicketConfig, config_fields
from ltstudy.study.config import SEARCHABLE, StudySection
from tests.study_helpers import to_toml

# A study that passes every check and, run, trains one trial of 2 rounds of 40 iterations (seconds). Its stores
# are the defaults (.ltstudy/, mlflow/), in the folder the command runs in: "nothing created" is checked there.
BASE: dict[str, dict] = {
    "study": {"name": "fuzz", "sampler": "random", "n_trials": 1, "device": "cpu"},
    "data": {"name": "digits"},
    "model": {"name": "lenet-300-100"},
    "train": {"iterations": 40, "eval_every": 20, "batch_size": 60},
    "search": {"prune_rate": [0.2, 0.5], "rounds": 1},
}

LONG = "a" * 5000
INTS = [0, 1, -1, -5, 2, 7, 10**7, 10**15, 2**63, -(2**63), 2**64]
FLOATS = [0.0, -0.0, 0.5, 0.9999, 1.0, 1.5, -0.5, 1e-300, 1e300, math.nan, math.inf, -math.inf]
LENGTHS = [*INTS, "", "2ep", "0ep", "10000000000ep", "500it", "1e15", "-1", "40"]
STRINGS = ["", " ", "a", "a\nb", "tab\there", "\x7f", "é" * 3, "a" * 300, LONG]
PATHS = ["", ".", "..", "/", "/proc/nope", "/proc/nope/x", "/dev/null", "~/x", "a/b/c", "x/", "a" * 300, LONG,
         "nodir/x", ".ltstudy", "mlflow", "mlflow/mlflow.db"]
STORAGES = ["journal:/dev/null", "journal:.ltstudy", "journal:" + LONG, "journal:", "journal:.",
            "journal:/proc/nope/x.journal", "journal:mlflow", "journal:mlflow/mlflow.db", "journal:~/j",
            "journal:.ltstudy/cache", "sqlite:///:memory:", "sqlite://", "sqlite:////dev/null", "sqlite:///.ltstudy",
            "redis://localhost/0", "postgresql://u:p@127.0.0.1:1/db", "", "x"]
TRACKING = ["sqlite:///:memory:", "sqlite://", "sqlite:///", "sqlite:////dev/null", "sqlite:///.ltstudy",
            "sqlite:///.ltstudy/optuna.journal", "sqlite:///" + LONG, "http://127.0.0.1:1", "file:///tmp/x", "",
            "mlflow", "sqlite:////proc/nope/m.db"]
NAMES = ["", "a/b", "a\\b", "a\nb", "\x00", LONG, "a" * 501, "a" * 500, " ", "é", "x", "fuzz"]
OBJECTIVES = [[], ["ticket_sparsity"], ["ticket_sparsity", "ticket_sparsity"], ["instability"],
              ["accuracy_at_density:0.5", "accuracy_at_density:0.50"], ["accuracy_at_density:0"],
              ["accuracy_at_density:x"], ["ticket_sparsity:1"], ["nosuch"], ["theoretical_speedup", "train_iterations"],
              "ticket_sparsity", [1], [""]]
CONTROLS = [[], ["random-reinit"], ["random-reinit", "random-reinit"], ["snip-reinit"], ["nosuch"], ["random"],
            "random-mask", [1], ["grasp", "synflow-inverted"]]
SEARCH = [[], [0], [1, 1], [0.2, 0.2], [-1, 5], ["a"], ["rewind", "random"], ["snip-reinit"], [[]], [math.nan],
          [True, 1], {}, {"low": 0.1, "high": 0.5}, {"low": 1, "high": 0}, {"low": 0.1}, {"x": 1},
          {"low": 0, "high": 10**9}, {"low": 0.1, "high": 0.5, "log": True, "step": 0.1}, {"low": -1.0, "high": 2.0},
          {"low": "a", "high": "b"}, {"low": 0.1, "high": 0.5, "step": 0}, {"low": 1e-9, "high": 0.9, "log": True}]
VALUES: list = [*INTS, *FLOATS, True, False, *STRINGS, "0", "nan", "true", "auto", "cuda:7", "mps", "random",
                "snip-reinit", "random-reinit", "resnet-20", "vgg-19", "mnist", "fc1=0.3,fc1=0.4", *SEARCH[:10],
                {"fc1": 0.3}, {"fc1": 1.5}, {"fc9": 0.1}]

# The hostile values of each key a study file may hold (and of some it may not): by its name where it names
# something (a store, a study, an objective), else by its type in the typed config; a quarter of the draws are
# any value at all.
_BY_NAME = {"storage": STORAGES, "tracking_uri": TRACKING, "cache_dir": PATHS, "root": PATHS, "name": NAMES,
            "objectives": OBJECTIVES, "controls": CONTROLS, "plugins": [["mymodule"], ["/proc/nope.py"], [""], "a"],
            "layer_rates": [{"fc1": 0.3}, {"fc1": 1.5}, {"fc9": 0.1}, {"fc1": -0.1}, "fc1=0.3,fc1=0.4", {}],
            "ignore": [["fc1", "fc2", "fc3"], ["nosuch"], ["fc1"]], "device": ["cuda:7", "mps", "tpu", "cpu", ""]}


def _pool(tp) -> list:
    if tp is bool:
        return [True, False, 0, 1, "yes", "maybe"]
    if tp is int:
        return INTS
    if tp is float:
        return FLOATS
    if tp is str:
        return STRINGS
    if typing.get_origin(tp) is typing.Literal:
        return [*typing.get_args(tp), "nosuch", 1, ""]
    if int in typing.get_args(tp) and str in typing.get_args(tp):
        return LENGTHS
    if typing.get_origin(tp) is list:
        return [[], [0], [-1], [2**63], [1, 1], ["a"], [10**7]]
    return VALUES


KEYS: dict[tuple[str, str], list] = {
    **{(key.split(".")[0], key.split(".")[1]): _pool(tp) for key, _, tp in config_fields(TicketConfig) if "." in key},
    **{("study", name): _pool(tp) for name, tp in typing.get_type_hints(StudySection).items()},
    **{("search", k): SEARCH for k in SEARCHABLE},
    ("study", "nmae"): VALUES, ("train", "iteration"): VALUES, ("search", "learning_rate"): VALUES,
    ("nosuch", "x"): VALUES,
}
KEYS = {k: _BY_NAME.get(k[1], v) if k[0] != "search" else v for k, v in KEYS.items()
        if k != ("data", "download")}  # (download: the network, not input handling)
_KEY_LIST = sorted(KEYS)

# Raw-text damage done to a valid file after the mutations.
GARBAGE = ["\n[study]\n", "\n[[search]]\n", "= =", "\x00", "\ufeff", "[", "\nname = \"x\"\n", "\"\"\"", "\\u"]


@dataclass
class Case:
    argv: list[str]
    study: str | None = None  # the text of study.toml, if the case has one
    notes: list[str] = field(default_factory=list)  # what was done, for the report

    def describe(self, width: int = 160) -> str:
        text = " ".join(self.notes + [repr(a) if not a or " " in a else a for a in self.argv])
        return text if len(text) <= width else text[:width] + f"… ({len(text):,} characters)"


def mutated_study(rng: random.Random, base: dict | None = None) -> tuple[str, list[str]]:
    """The BASE study (or `base`) with 1-3 keys set to hostile values or deleted, and sometimes damaged as text."""
    doc = {section: dict(table) for section, table in (base or BASE).items()}
    notes = []
    for _ in range(rng.randint(1, 3)):
        section, key = rng.choice(_KEY_LIST)
        if rng.random() < 0.1 and key in doc.get(section, {}):
            del doc[section][key]
            notes.append(f"del {section}.{key}")
        else:
            value = rng.choice(KEYS[section, key] if rng.random() < 0.75 else VALUES)
            doc.setdefault(section, {})[key] = value
            notes.append(f"{section}.{key} = {short(value)}")
    text = to_toml(doc)
    if rng.random() < 0.08:
        at = rng.randrange(len(text))
        junk = rng.choice(GARBAGE)
        text = text[:at] + junk + text[at:]
        notes.append(f"text: {junk!r} at {at}")
    elif rng.random() < 0.04:
        at = rng.randrange(len(text))
        text = text[:at]
        notes.append(f"text cut at {at}")
    return text, notes


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}… ({len(text):,} characters)"


# --------------------------------------------------------------------------- flags

# Flag values by what the flag takes; a quarter of the draws take any of them.
NUMBER = ["0", "-1", "1", "2", "3", "1000000", "99999999999999999999", "nan", "inf", "-inf", "1e15", "0.5", "-0.5",
          "abc", "", "0x10", "1_000"]
FILE = ["", ".", "..", "/", "/proc/nope", "/proc/nope/x.json", "/dev/null", "x.xyz", "out", "out.png", "out.json",
        "out.html", "out.svg", "nodir/out.png", "x/", "a" * 300 + ".png", LONG, "-", "~/out.json", "é.json"]
STORE = ["", "journal:/dev/null", "journal:.ltstudy", "journal:" + LONG, "journal:x.journal", "journal:.",
         "journal:mlflow", "sqlite:///:memory:", "sqlite:///s.db", "sqlite://", "http://127.0.0.1:1",
         "redis://x", "postgresql://u:p@127.0.0.1:1/db", "x"]
TRACK = ["", "sqlite:///:memory:", "sqlite:///m.db", "sqlite:///.ltstudy", "sqlite:////dev/null", "sqlite://",
         "http://127.0.0.1:1", "mlflow", "sqlite:///" + LONG]
CREATES = ["sqlite:///m.db", "sqlite:///.ltstudy"]  # (new MLflow stores: seconds each to create, in-process)
NAME = ["", "a/b", "a\nb", LONG, "a" * 501, "a" * 100_000, " ", "é", "fuzz", "tiny", "other"]
BY = ["", "prune_rate", "prune_rate,prune_rate", "lr", "scope", "prune_rate,rounds", "x,y", ",", "rewind_iter",
      "prune_rate,rewind_iter,scope,reinit"]
WORD = ["", "snip-reinit", "random-reinit", "snip", "random", "global", "nosuch", "resnet-20", "vgg-19", "mnist",
        "cifar10", "fc1=0.3,fc1=0.4", "fc1=2", "fc9=0.1", "a\nb", "cuda:7", "cpu", "/proc/nope.py", "val", "test"]
LIST = ["", "0,10,20", "1,1", "-1,5", "x,y", "0", "1000000000", ",", "3,7"]
AGE = ["", "12h", "7d", "-3d", "0d", "1y", "abc", "99999999999999999999w"]
FLAG_VALUES = sorted({*NUMBER, *FILE, *STORE, *TRACK, *NAME, *BY, *WORD, *LIST, *AGE})

# Per command: its fixed arguments ({study} is the finished study's file, {new} the case's own study.toml) and the
# flags a case draws from, with their values (None: a switch). "ticket" and "stability" start from a tiny search.
TINY_TICKET = ["--dataset", "digits", "--iterations", "40", "--eval-every", "20", "--rounds", "1", "--quiet"]
_STUDY_FLAGS = {"--storage": STORE, "--study-name": NAME}
COMMANDS: dict[str, tuple[list[str], dict[str, list | None]]] = {
    "run": (["{new}", "--quiet"], {**_STUDY_FLAGS, "--n-trials": NUMBER, "--more": NUMBER, "--jobs": NUMBER,
                                   "--tracking-uri": TRACK, "--cache-dir": FILE, "--no-cache": None}),
    "worker": (["{new}", "--quiet"], {**_STUDY_FLAGS, "--n-trials": NUMBER, "--tracking-uri": TRACK,
                                      "--cache-dir": FILE}),
    "ticket": (TINY_TICKET, {"--prune-rate": NUMBER, "--rounds": NUMBER, "--iterations": NUMBER,
                             "--rewind-iter": NUMBER, "--reinit": WORD, "--mask": WORD, "--scope": WORD,
                             "--batch-size": NUMBER, "--seed": NUMBER, "--layer-rates": WORD, "--val-size": NUMBER,
                             "--lr": NUMBER, "--model": WORD, "--dataset": WORD, "--json": FILE, "--save": FILE,
                             "--cache-dir": FILE, "--config": FILE, "--prunerate": NUMBER, "--plugin": WORD,
                             "--device": WORD, "--eval-every": NUMBER}),
    "stability": ([*TINY_TICKET[:-1], "--k", "0"], {"--k": LIST, "--ticket-rounds": LIST, "--points": NUMBER,
                                                    "--threshold": NUMBER, "--copy-seed": NUMBER, "--json": FILE,
                                                    "--plot": FILE, "--iterations": NUMBER}),
    "pareto": (["{study}"], {**_STUDY_FLAGS, "--json": FILE, "--plot": FILE}),
    "compare": (["{study}"], {"--by": BY, "--density": NUMBER, "--bins": NUMBER, "--json": FILE, "--plot": FILE,
                              "--split": WORD, "--study-name": NAME}),
    "report": (["{study}"],
               {"--out": FILE, "--by": BY, "--density": NUMBER, "--bins": NUMBER, "--study-name": NAME}),
    "export": (["{study}"],
               {"--out": FILE, "--trial": NUMBER, "--round": NUMBER, "--seed": NUMBER}),
    "studies": (["{study}"], {"--storage": STORE}),
    "repair": (["{study}"], {**_STUDY_FLAGS, "--tracking-uri": [t for t in TRACK if t not in CREATES]}),
    "cache": (["info"], {"--cache-dir": FILE, "--older-than": AGE}),
}


def flag_case(rng: random.Random, command: str) -> Case:
    """The command's fixed arguments and 1-3 of its flags with hostile values."""
    fixed, flags = COMMANDS[command]
    argv = [command, *fixed]
    for flag in rng.sample(sorted(flags), k=min(len(flags), rng.randint(1, 3))):
        values = flags[flag]
        if values is not None and rng.random() < 0.25:
            values = FLAG_VALUES
        argv += [flag] if values is None else [flag, rng.choice(values)]
    if command == "cache" and rng.random() < 0.5:
        argv[1] = "clear"
    return Case(argv)


def study_case(rng: random.Random, command: str, finished: dict | None = None) -> Case:
    """A mutated study file given to a command that reads one: `run` and `worker` get the BASE study (its stores
    in the working folder), the others the `finished` study's file, if given (so they read a study that exists)."""
    text, notes = mutated_study(rng, None if command in ("run", "worker") else finished)
    fixed = {"run": ["--quiet"], "worker": ["--quiet"], "cache": []}.get(command, [])
    argv = ["cache", "info", "{new}"] if command == "cache" else [command, "{new}", *fixed]
    return Case(argv, text, notes)


STUDY_COMMANDS = ["run", "run", "run", "run", "worker", "pareto", "compare", "report", "export", "studies", "repair",
                  "stability", "cache"]


def draw(rng: random.Random, finished: dict | None = None) -> Case:
    """One hostile input: two in three a mutated study file, else a flag set."""
    if rng.random() < 2 / 3:
        return study_case(rng, rng.choice(STUDY_COMMANDS), finished)
    return flag_case(rng, rng.choice(sorted(COMMANDS)))


def resolve(case: Case, study: str, new: str = "study.toml") -> list[str]:
    """The argv with {study} (a finished study's file) and {new} (the case's own file) filled in."""
    return [new if a == "{new}" else study if a == "{study}" else a for a in case.argv]
