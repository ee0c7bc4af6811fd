"""Fuzz the command line with 500+ hostile inputs, each a real `ltstudy` subprocess (outside CI: about half an hour).

    PYTHONPATH=. python -m tests.fuzz_cli [--n 540] [--seed 0] [--timeout 120] [--jobs 2]

Study-file mutations and flag sets over run, worker, ticket, stability, pareto, compare, report,
export, studies, repair and cache (tests/hostile.py, the generators the suite's in-process fuzz,
tests/test_fuzz.py, draws from). Each input runs in a fresh empty folder that is also $HOME; an
accepted input runs to its end (a tiny study trains one trial in seconds). The answer must be a
result, or one line with exit 2 that created nothing, never a traceback. Prints the counts by
outcome and command, then every problem with its input; exits 1 if there was any.

It lives in tests/ beside the generators it shares with the suite, under a name pytest does not
collect (a test_*.py file would put half an hour into CI); benchmarks/ measures speed, not this.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests import hostile
from tests.study_helpers import study_doc, to_toml

PROBLEMS = ("traceback", "refusal not one line", "refusal created files", "other exit code")


@dataclass
class Outcome:
    case: hostile.Case
    kind: str  # "result", "refused", "failed in one line", "timeout", or one of PROBLEMS
    code: int | None
    err: str
    created: list[str]
    seconds: float


def environment(home: str) -> dict[str, str]:
    """The user's environment with `home` as $HOME (`~/x` lands in the folder checked), no store or cache set, and
    matplotlib's own font cache kept outside it (importing matplotlib writes one to ~/.cache when there is none)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LTSTUDY_CACHE_DIR")}
    env.update(HOME=home, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "ltstudy-fuzz-matplotlib"))
    return env


def tree(root: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def ltstudy(argv: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ltstudy.cli", *argv], cwd=cwd, env=environment(cwd),
                          capture_output=True, text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)


def finished_study(root: Path) -> tuple[str, dict]:
    """A finished one-trial study in `root` for the read-only commands: its file and content."""
    from tests.study_helpers import Stores

    stores = Stores(root)
    doc = study_doc(stores, study={"n_trials": 1, "cache_dir": str(root / "cache")},
                    search={"prune_rate": [0.2, 0.5], "rewind_iter": [0, 20], "scope": "layerwise",
                            "reinit": "rewind", "rounds": 1})
    path = root / "study.toml"
    path.write_text(to_toml(doc))
    done = ltstudy(["run", str(path), "--quiet"], str(root), 600)
    if done.returncode != 0:
        raise SystemExit(f"the study the read-only commands read did not run:\n{done.stderr}")
    return str(path), doc


def classify(case: hostile.Case, study: str, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="ltstudy-fuzz-") as tmp:
        if case.study is not None:
            Path(tmp, "study.toml").write_text(case.study, encoding="utf-8")
        before = tree(tmp)
        t0 = time.monotonic()
        try:
            done = ltstudy(hostile.resolve(case, study), tmp, timeout)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            kind = "traceback" if "Traceback" in err else "timeout"
            return Outcome(case, kind, None, err, [], time.monotonic() - t0)
        seconds = time.monotonic() - t0
        created = sorted(set(tree(tmp)) - set(before))
    err, code = done.stderr, done.returncode
    lines = [line for line in err.splitlines() if ": warning: " not in line]
    if "Traceback" in err:
        kind = "traceback"
    elif code == 2:
        kind = "refused" if len(lines) == 1 and ": error: " in lines[0] else "refusal not one line"
        if kind == "refused" and created:
            kind = "refusal created files"
    elif code == 0:
        kind = "result"
    elif code in (1, 130) and len(lines) == 1:
        kind = "failed in one line"
    else:
        kind = "other exit code"
    return Outcome(case, kind, code, err, created, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=540, help="hostile inputs (default: 540)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one input may run (default: 120)")
    parser.add_argument("--jobs", type=int, default=2, help="inputs run at once (default: 2)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ltstudy-fuzz-study-") as root:
        study, doc = finished_study(Path(root))
        cases = [hostile.draw(rng, doc) for _ in range(args.n)]
        outcomes: list[Outcome] = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for i, outcome in enumerate(pool.map(lambda c: classify(c, study, args.timeout), cases), 1):
                outcomes.append(outcome)
                if outcome.kind in PROBLEMS:
                    print(f"[{i}/{args.n}] {outcome.kind}: {outcome.case.describe()}", flush=True)
                elif i % 50 == 0:
                    print(f"[{i}/{args.n}] {time.monotonic() - t0:.0f} s", flush=True)
    report(outcomes, time.monotonic() - t0)
    return 1 if any(o.kind in PROBLEMS for o in outcomes) else 0


def report(outcomes: list[Outcome], seconds: float) -> None:
    studies = sum(o.case.study is not None for o in outcomes)
    print(f"\n{len(outcomes)} hostile inputs ({studies} study-file mutations, {len(outcomes) - studies} flag sets) "
          f"in {seconds / 60:.1f} min")
    kinds = collections.Counter(o.kind for o in outcomes)
    for kind, n in kinds.most_common():
        print(f"  {kind:24} {n}")
    by = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by[o.case.argv[0]][o.kind] += 1
    print("by command:")
    for command in sorted(by):
        print(f"  {command:10} " + ", ".join(f"{n} {k}" for k, n in by[command].most_common()))
    for o in outcomes:
        if o.kind == "timeout":
            print(f"timeout (accepted, still running after {o.seconds:.0f} s): {o.case.describe()}")
    for o in outcomes:
        if o.kind in PROBLEMS:
            print(f"\n=== {o.kind} (exit {o.code}): {o.case.describe(400)}")
            if o.created:
                print(f"created: {o.created}")
            print(o.err[-3000:])


if __name__ == "__main__":
    sys.exit(main())
