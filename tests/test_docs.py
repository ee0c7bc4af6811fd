"""README.md and docs/: every example runs here, or says why it cannot; every command, flag and setting named exists.

Each fenced block of a page is classified by its info string (docs/development.md says how):
- `bash`: run command by command in a copy of a folder where a small quickstart has already run; its `ltstudy`
  commands go through the real parser (in this process; `--jobs` in a subprocess) and must exit 0;
- `python`: run after the page's earlier blocks, in the same folder;
- `toml`: a study file or a part of one, read against the typed config;
- `text`: output, not run;
- `LANG norun: REASON`: not run here, for the reason given; its commands and keys are still checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from ltstudy import cli
from ltstudy.cli.parser import build_parser
from ltstudy.engine import registry
from ltstudy.engine.config import TicketConfig, config_fields
from ltstudy.study.config import SEARCHABLE, StudySection, _parse_param, parse_study
from ltstudy.study.objectives import OBJECTIVES
from tests.study_helpers import isolate, seed_mlflow_db, to_toml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md")
                                     if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT).parts))]
LANGUAGES = {"bash", "python", "toml", "text"}
DIRECTIVES = {"literalinclude", "ltstudy-settings", "ltstudy-registry", "ltstudy-help", "eval-rst", "toctree"}
ENGINE_SECTIONS = ("data", "model", "train", "prune", "seeds", "stability", "sparse_training")
RANGE_KEYS = {"low", "high", "step", "log"}
# The small quickstart every runnable example starts from: the quickstart's own file with fewer trials, rounds and
# iterations (its name, search space, objectives and controls unchanged).
SMALL = {"study": {"n_trials": 3, "device": "cpu"}, "train": {"iterations": 120, "eval_every": 40},
         "search": {"rounds": 2}}


# --------------------------------------------------------------------------- reading the pages


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, from 1
    info: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def directive(self) -> str | None:
        m = re.match(r"\{([\w-]+)\}", self.info)
        return m.group(1) if m else None

    @property
    def argument(self) -> str:
        return self.info.split("}", 1)[1].strip() if self.directive else ""

    @property
    def lang(self) -> str:
        return "" if self.directive else (self.info.split() or [""])[0]

    @property
    def norun(self) -> str | None:
        """The reason given after `norun:`, or None for a block the suite runs."""
        rest = self.info[len(self.lang):].strip() if not self.directive else ""
        m = re.fullmatch(r"norun:\s*(.*)", rest)
        return m.group(1).strip() if m else None

    @property
    def extra(self) -> str:
        """What the info string says besides the language and a `norun:` reason (nothing, in a valid block)."""
        rest = self.info[len(self.lang):].strip() if not self.directive else ""
        return "" if self.norun is not None else rest


_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, dedented, in order."""
    out, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, start = len(m["indent"]), m["fence"], i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])  # (a block in a list is indented)
            i += 1
        out.append(Block(page, start + 1, m["info"].strip(), "\n".join(body) + "\n"))
        i += 1
    return out


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    text, keep, fence = [], True, None
    for line in page.read_text().splitlines():
        m = _FENCE.match(line)
        if m and (fence is None or (m["fence"][0] == fence and not m["info"].strip())):
            fence = None if fence else m["fence"][0]
            keep = fence is None
            continue
        if keep:
            text.append(line)
    return "\n".join(text)


def inline_code(page: Path) -> list[str]:
    return [" ".join(m.group(2).split()) for m in re.finditer(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", prose(page), re.S)]


ALL = [b for page in PAGES for b in blocks(page)]


def split_line(line: str) -> list[list[str]]:
    """The simple commands of one shell line (a comment dropped; `&&`, `;` and `|` split)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";", "|", "||", "&"):
            out.append([])
        else:
            out[-1].append(token)
    return [c for c in out if c]


def shell_commands(block: Block) -> list[list[str]]:
    """Each simple command of a shell block, continuation lines joined."""
    return [c for line in block.text.replace("\\\n", " ").splitlines() for c in split_line(line)]


# --------------------------------------------------------------------------- what exists


def subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    return action.choices


FLAGS = {flag for p in [build_parser(), *subparsers().values()] for a in p._actions for flag in a.option_strings}
# ... and the flags of the scripts the pages run (benchmarks/, docs/): `--load 1` names one of benchmarks'
SCRIPT_FLAGS = {m.group(1) for folder in ("benchmarks", "docs") for path in (ROOT / folder).rglob("*.py")
                for m in re.finditer(r'add_argument\(\s*"(--[\w-]+)"', path.read_text())}
SECTION_KEYS: dict[str, set[str]] = {
    "study": {f.name for f in dataclasses.fields(StudySection)},
    "search": set(SEARCHABLE),
    **{s: {k.split(".", 1)[1] for k, _, _ in config_fields(TicketConfig) if k.startswith(s + ".")}
       for s in ENGINE_SECTIONS},
}
KEYS = set().union(*SECTION_KEYS.values(), {k for k, _, _ in config_fields(TicketConfig) if "." not in k})


def parse_command(argv: list[str]) -> str | None:
    """Why `ltstudy ARGV` does not parse, or None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def check_command(argv: list[str]) -> str | None:
    """Why a shell command of a page names something that does not exist, or None."""
    if argv and argv[0] == "srun":
        argv = argv[1:]
    if not argv or ("=" in argv[0] and not argv[0].startswith("-")):  # (VAR=value command ...)
        rest = [a for a in argv if "=" not in a or a.startswith("-")]
        return check_command(rest) if rest and rest != argv else None
    program = argv[0].rsplit("/", 1)[-1]
    if "/" in argv[0] and not argv[0].startswith((".", "/")) and not (ROOT / argv[0]).exists():
        return f"no {argv[0]} in the repository"
    if program == "ltstudy":
        # (argparse also takes a flag's prefix, --n-trial for --n-trials: a page spells each one out)
        inexact = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in FLAGS]
        return f"no flag {', '.join(inexact)}" if inexact else parse_command(argv[1:])
    if program in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        script = ROOT / argv[1]
        if not script.is_file():
            return f"no script {argv[1]}"
        source = script.read_text()
        missing = [a for a in argv[2:] if a.startswith("--") and f'"{a.split("=")[0]}"' not in source]
        return f"{argv[1]} takes no {', '.join(missing)}" if missing else None
    if program == "pip" and "install" in argv:
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        for arg in argv:
            m = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
            unknown = [e for e in (m.group(1).split(",") if m else []) if e not in pyproject["optional-dependencies"]]
            if unknown:
                return f"pyproject.toml has no extra {', '.join(unknown)}"
    return None


def check_toml(doc: dict) -> str | None:
    """Why a TOML block is not a study file or a part of one, or None."""
    for section, table in doc.items():
        if section in KEYS and not isinstance(table, dict):
            continue  # (top-level seed/device/plugins of `ltstudy ticket --config`)
        if section not in SECTION_KEYS:
            return f"no section [{section}]"
        for key, value in table.items():
            if key not in SECTION_KEYS[section]:
                return f"[{section}] has no key {key!r}"
            if section == "search":
                try:
                    _parse_param(key, value)
                except Exception as exc:
                    return f"[search] {key}: {exc}"
    if "name" in doc.get("study", {}):
        try:
            parse_study(doc)
        except Exception as exc:
            return f"not a valid study file: {exc}"
    return None


def check_inline(code: str) -> str | None:
    """Why a piece of inline code names a command, flag or setting that does not exist, or None."""
    words = code.split()
    if words[0] == "ltstudy" and len(words) > 1:
        if len(words) == 2:  # (`ltstudy export`: the command, named)
            return None if words[1] in subparsers() or (words[1].startswith("-") and words[1] in FLAGS) else \
                f"no command {words[1]!r}"
        return parse_command(shlex.split(code)[1:])
    if words[0] in ("pip", "python", "python3"):
        return check_command(shlex.split(code))
    if re.fullmatch(r"--[a-z][a-z0-9-]*(=\S*)?", words[0]):
        flag = words[0].split("=")[0]
        return None if flag in FLAGS | SCRIPT_FLAGS else f"no command or script has {flag}"
    m = re.fullmatch(r"\[(\w+)\](?: (\w+)(?: = .+)?)?", code)
    if m:
        section, key = m.groups()
        if section not in SECTION_KEYS:
            return f"no section [{section}]"
        return None if key is None or key in SECTION_KEYS[section] else f"[{section}] has no key {key!r}"
    m = re.fullmatch(r"(\w+) = .+", code)
    if m and m.group(1) not in KEYS | RANGE_KEYS:
        return f"no setting {m.group(1)!r}"
    return None


# --------------------------------------------------------------------------- checks of every page


def test_every_code_block_has_a_language_the_suite_knows_or_a_known_directive():
    bad = [f"{b.where}: ```{b.info}" for b in ALL
           if (b.directive not in DIRECTIVES if b.directive else b.lang not in LANGUAGES or b.extra)]
    assert not bad, "give each block bash, python, toml or text, and `norun: REASON` only:\n" + "\n".join(bad)


def test_a_block_that_does_not_run_says_why():
    assert not [b.where for b in ALL if b.norun == ""]
    assert not [b.where for b in ALL if b.lang == "text" and b.norun is not None]  # (output never runs)


def test_every_command_in_a_page_names_a_real_command_and_real_flags():
    bad = [f"{b.where}: {shlex.join(argv)}: {why}" for b in ALL if b.lang == "bash"
           for argv in shell_commands(b) if (why := check_command(argv))]
    assert not bad, "\n".join(bad)


def test_every_toml_block_is_a_study_file_or_a_part_of_one():
    bad = [f"{b.where}: {why}" for b in ALL if b.lang == "toml" and b.norun is None
           if (why := check_toml(tomllib.loads(b.text)))]
    assert not bad, "\n".join(bad)


def test_inline_code_names_only_commands_flags_and_settings_that_exist():
    bad = [f"{page.relative_to(ROOT)}: `{code}`: {why}" for page in PAGES for code in inline_code(page)
           if (why := check_inline(code))]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_command_a_flag_and_a_setting_that_do_not_exist():
    assert check_command(["ltstudy", "run", "studies/quickstart.toml", "--n-trialz", "3"])
    assert check_command(["ltstudy", "sweep", "studies/quickstart.toml"])
    assert check_command(["python", "benchmarks/train_speed.py", "--fast"])
    assert check_command(["pip", "install", "-e", ".[dashbord]"])
    assert check_command(["ltstudy", "run", "studies/quickstart.toml", "--n-trial", "3"])  # (a prefix argparse takes)
    assert check_inline("--epochs") and check_inline("[study] trials") and check_inline("prune_ratio = 0.2")
    assert check_inline("ltstudy plot")
    assert check_toml({"train": {"epochs": 3}}) and check_toml({"search": {"prune_rate": {"low": 0.5}}})
    assert check_toml({"study": {"name": "x"}, "search": {"rounds": 0}})  # a whole study file is loaded
    assert not check_command(["ltstudy", "run", "studies/quickstart.toml", "--n-trials", "3"])
    assert not check_inline("[study] epsilon") and not check_inline("--more")


def test_every_setting_says_what_it_does_so_the_site_can_list_it():
    fields = [(f"study.{f.name}", f) for f in dataclasses.fields(StudySection)]
    fields += [(key, f) for key, f, _ in config_fields(TicketConfig)]
    assert not [key for key, f in fields if not f.metadata.get("help")]


def test_a_literalinclude_names_a_file_that_exists():
    missing = [f"{b.where}: {b.argument}" for b in ALL if b.directive == "literalinclude"
               if not (b.page.parent / b.argument).is_file()]
    assert not missing


def test_every_command_has_its_section_in_the_command_reference():
    documented = {b.argument for b in blocks(ROOT / "docs" / "commands.md") if b.directive == "ltstudy-help"}
    assert documented == {"ltstudy", *subparsers()}


def test_every_objective_a_page_shows_exists():
    named = {m.group(1) for page in PAGES for m in re.finditer(r'objectives = \[([^\]]*)\]', page.read_text())}
    for names in named:
        for spec in re.findall(r'"([^"]+)"', names):
            assert spec.split(":")[0] in OBJECTIVES, spec


def test_the_readmes_links_lead_to_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)", readme) if not t.startswith(("http://", "https://"))]
    assert links and not [t for t in links if not (ROOT / t).exists()]


def test_the_readme_is_at_most_about_1500_words():
    assert len((ROOT / "README.md").read_text().split()) <= 1500


def test_the_readme_starts_with_the_two_commands_that_set_everything_up():
    first = blocks(ROOT / "README.md")[:2]
    lines = (ROOT / "README.md").read_text().splitlines()
    assert all(not line.startswith("## ") for line in lines[:first[1].line])  # nothing comes before them
    install, tests = (shell_commands(b) for b in first)
    assert [c[0] for c in install] == ["python3", ".venv/bin/pip", ".venv/bin/ltstudy"]
    assert install[1][1:] == ["install", "-e", "."] and install[2][1:] == ["run", "studies/quickstart.toml"]
    assert tests == [["bash", ".ci/run"]]
    assert re.search(r"^\S*tox\s*$", (ROOT / ".ci" / "run").read_text(), re.M)  # .ci/run ends by running tox
    env_list = re.search(r"^env_list\s*=\s*(.+)$", (ROOT / "tox.ini").read_text(), re.M).group(1)
    assert {e.strip() for e in env_list.split(",")} == {"py", "lint", "docs"}


def test_the_docs_environment_installs_the_docs_extra_and_builds_with_warnings_as_errors_offline():
    tox = (ROOT / "tox.ini").read_text()
    section = tox.split("[testenv:docs]", 1)[1].split("\n[", 1)[0]
    deps = re.search(r"^deps\s*=\s*\n((?:[ \t]+\S.*\n)+)", section, re.M).group(1).split()
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]
    assert deps == extra
    command = re.search(r"^commands\s*=\s*(.+)$", section, re.M).group(1).split()
    assert command[0] == "sphinx-build" and {"-W", "--keep-going", "-n"} <= set(command)
    extensions = re.search(r"^extensions = \[(.*?)\]", (ROOT / "docs" / "conf.py").read_text(), re.M | re.S).group(1)
    assert "intersphinx" not in extensions  # (no network when it builds)


# --------------------------------------------------------------------------- running the examples


@contextlib.contextmanager
def restored_process_state():
    """Whatever a command or an example changes in this process (signal handlers, registries, sys.path)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    tables = [(r, dict(r._entries)) for r in (registry.DATASETS, registry.MODELS, registry.REINITS,
                                                registry.MASKS, registry.SCOPES, registry.CONTROLS, OBJECTIVES)]
    loaded, path, modules = dict(registry._LOADED), list(sys.path), set(sys.modules)
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        for r, entries in tables:
            r._entries = entries
        registry._LOADED.clear()
        registry._LOADED.update(loaded)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name.startswith(("myplugins", "ltstudy_plugin_")):
                del sys.modules[name]


def run_ltstudy(argv: list[str], cwd: Path) -> tuple[int, str]:
    """`ltstudy ARGV` in `cwd`: in this process, or (with --jobs, which forks workers) in a subprocess."""
    if "--jobs" in argv:
        proc = subprocess.run([sys.executable, "-m", "ltstudy.cli", *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=600)
        return proc.returncode, proc.stdout + proc.stderr
    out = io.StringIO()
    with restored_process_state(), pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        isolate(mp, cwd)
        # The default store, mlflow/mlflow.db here, named absolutely: MLflow keeps one engine per URI in a process,
        # and a relative one would stay connected to the first folder's file.
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cwd.resolve() / 'mlflow' / 'mlflow.db'}")
        code = cli.main(argv)
    return code, out.getvalue()


def run_block(block: Block, root: Path, namespace: dict) -> None:
    if block.lang == "python":
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
            isolate(mp, root)
            exec(compile(block.text, block.where, "exec"), namespace)
        return
    cwd = root
    for argv in shell_commands(block):
        if argv[0] == "cd":
            cwd = cwd / argv[1]
            continue
        assert argv[0] == "ltstudy", f"{block.where}: the suite runs only ltstudy and cd: mark the block norun"
        code, output = run_ltstudy(argv[1:], cwd)
        assert code == 0, f"{block.where}: {shlex.join(argv)} exited {code}:\n{output[-3000:]}"


@pytest.fixture(scope="module")
def small_quickstart(tmp_path_factory) -> Path:
    """A folder like a clone's after `ltstudy run studies/quickstart.toml`, the quickstart made small."""
    root = tmp_path_factory.mktemp("docs-examples")
    shutil.copytree(ROOT / "studies", root / "studies")
    shutil.copytree(ROOT / "docs" / "examples", root / "docs" / "examples")
    doc = tomllib.loads((ROOT / "studies" / "quickstart.toml").read_text())
    for section, values in SMALL.items():
        doc[section].update(values)
    (root / "studies" / "quickstart.toml").write_text(to_toml(doc))
    for folder in (root, root / "docs" / "examples"):
        seed_mlflow_db(tmp_path_factory, folder / "mlflow" / "mlflow.db")
    code, output = run_ltstudy(["run", "studies/quickstart.toml"], root)
    assert code == 0, output
    return root


RUNNABLE = [page for page in PAGES if any(b.lang in ("bash", "python") and b.norun is None for b in blocks(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_the_examples_of_a_page_run(page, small_quickstart, tmp_path):
    root = tmp_path / "clone"
    shutil.copytree(small_quickstart, root)
    namespace: dict = {"__name__": "__main__"}
    for block in blocks(page):
        if block.lang in ("bash", "python") and block.norun is None:
            run_block(block, root, namespace)


def test_the_readmes_pareto_output_has_the_columns_pareto_prints(small_quickstart):
    readme = blocks(ROOT / "README.md")
    (i,) = [i for i, b in enumerate(readme) if ["ltstudy", "pareto", "studies/quickstart.toml"] in shell_commands(b)]
    shown = readme[i + 1]
    assert shown.lang == "text"
    code, output = run_ltstudy(["pareto", "studies/quickstart.toml"], small_quickstart)
    assert code == 0, output
    headers = [line.split() for line in shown.text.splitlines() if re.match(r"^(trial|density)\s+\w", line)]
    printed = [line.split() for line in output.splitlines()]
    assert len(headers) == 2 and all(h in printed for h in headers), output  # (the columns; widths follow values)
