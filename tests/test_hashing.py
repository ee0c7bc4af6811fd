"""The keys' code digests: every module of the engine, code and not prose, and the code of users' plugins."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import ltstudy.engine
from ltstudy.engine.hashing import digest, files_digest, module_digest, source_digest


def engine_copy(tmp_path: Path) -> Path:
    root = tmp_path / "engine"
    shutil.copytree(Path(ltstudy.engine.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def digest_of(root: Path) -> str:
    return files_digest(root.rglob("*.py"), root)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path.name}: the test needs updating"
    path.write_text(text.replace(old, new, 1))


def test_rewording_a_help_text_a_docstring_or_a_comment_keeps_the_engine_digest(tmp_path):
    root = engine_copy(tmp_path)
    before = digest_of(root)
    edit(root / "config.py", 'help="peak learning rate"', 'help="the peak learning rate, after warmup"')
    edit(root / "training.py", '"""Learning rate for the step taken at', '"""The learning rate of the step at')
    edit(root / "pruning.py", "# Magnitude scores;", "# Scores by magnitude;")
    assert digest_of(root) == before


def test_a_change_to_what_the_code_computes_changes_the_engine_digest(tmp_path):
    root = engine_copy(tmp_path)
    before = digest_of(root)
    edit(root / "pruning.py", "math.floor(rate * remaining + 0.5)", "math.floor(rate * remaining + 0.4999)")
    assert digest_of(root) != before


def test_every_module_of_the_engine_counts_subpackages_included(tmp_path):
    root = engine_copy(tmp_path)
    before = digest_of(root)
    edit(root / "packing" / "_layers.py", "else torch.relu_(h)", "else torch.relu(h)")
    assert digest_of(root) != before
    assert {"packing/_layers.py", "reinit/rewind.py", "models/lenet_300_100.py"} <= {
        p.relative_to(root).as_posix() for p in root.rglob("*.py")}


def test_a_new_module_changes_the_engine_digest(tmp_path):
    root = engine_copy(tmp_path)
    before = digest_of(root)
    (root / "masks" / "extra.py").write_text("X = 1\n")
    assert digest_of(root) != before


def test_the_source_digest_ignores_prose_and_not_code():
    code = textwrap.dedent('''
        lr: float = setting(1.2e-3, help="what it does")

        def f(x):
            """Doubles."""
            return 2 * x  # twice
    ''')
    assert source_digest(code) == source_digest(code.replace("Doubles.", "Twice x.").replace("# twice", "# 2x")
                                                .replace('help="what it does"', 'help="doubles x"'))
    assert source_digest(code) != source_digest(code.replace("2 * x", "3 * x"))
    assert source_digest(code) != source_digest(code.replace("1.2e-3", "1.3e-3"))


def test_a_plugin_module_is_digested_by_its_own_code_and_the_engine_by_the_engine_digest(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "plugin_for_digest.py").write_text("def build(a, b, c):\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("plugin_for_digest")
    first = module_digest(module.build)
    assert first and module_digest(ltstudy.engine.pruning.prune) == ""
    (tmp_path / "plugin_for_digest.py").write_text("def build(a, b, c):\n    return b\n")
    del sys.modules["plugin_for_digest"]
    importlib.invalidate_caches()
    module = importlib.import_module("plugin_for_digest")
    assert module_digest(module.build) != first


def test_one_key_recipe_for_every_key():
    assert digest("a", 1, [2, 3]) == digest("a", 1, [2, 3]) != digest("a", 1, [3, 2])
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})  # key order never matters
    assert len(digest("x", size=16)) == 16
