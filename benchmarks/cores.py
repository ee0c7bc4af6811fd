"""How a study uses the cores: threads per process under a competing load, and --jobs 2 against --jobs 1.

Two measurements, each with its reference in the same run, on the CLI as a
user runs it (`ltstudy run` in a fresh folder with a new Optuna journal and an
empty MLflow store, made once and copied, since creating a store takes about
2 s once per store; --no-cache so every trial trains):

load  The quickstart (12 trials, digits) idle and while one busy process (a pure
      Python loop) competes for the cores, with the default of one torch thread
      per process, and with two threads per process ([study] threads = 2) for
      comparison. Prints each wall time and the loaded / idle ratio.
jobs  The quickstart's search space as a 12-setting grid (3 p x 2 k x 2 scopes), with --jobs 1 and
      with --jobs 2. Prints settings finished per hour and the ratio, and the workers' start-up:
      the seconds from `ltstudy run` starting to the first trial of each worker.

    python benchmarks/cores.py [--part load|jobs|both] [--load N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _spin() -> None:
    while True:
        pass


_TEMPLATE: list[Path] = []


def empty_store(dest: Path) -> None:
    import shutil

    if not _TEMPLATE:
        from mlflow.tracking import MlflowClient

        folder = Path(tempfile.mkdtemp())
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE.append(folder / "mlflow.db")
    shutil.copyfile(_TEMPLATE[0], dest)


def study_copy(folder: Path, *, grid: bool = False, threads: int = 0) -> Path:
    empty_store(folder / "mlflow.db")
    text = (ROOT / "studies" / "quickstart.toml").read_text()
    text = text.replace('storage = "journal:.ltstudy/optuna.journal"', f'storage = "journal:{folder / "j"}"')
    extra = f'tracking_uri = "sqlite:///{folder / "mlflow.db"}"\n'
    if threads:
        extra += f"threads = {threads}\n"
    text = text.replace("[study]\n", "[study]\n" + extra, 1)
    if grid:
        text = text.replace('sampler = "tpe"', 'sampler = "grid"').replace("n_trials = 12", "n_trials = 12")
        text = text.replace("rewind_iter = [0, 20, 100]", "rewind_iter = [0, 100]")  # 3 p x 2 k x 2 scopes
        assert text.count("rewind_iter = [0, 100]") == 1 and 'scope = ["layerwise", "global"]' in text, \
            "studies/quickstart.toml changed: make the grid 12 settings again"
    path = folder / "study.toml"
    path.write_text(text)
    return path


def run(path: Path, *flags: str) -> float:
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    env.pop("OMP_NUM_THREADS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ltstudy.cli", "run", str(path), "--quiet", "--no-cache", *flags],
                          cwd=path.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ltstudy run failed: {proc.stderr[-2000:]}")
    return wall


def trial_times(folder: Path) -> tuple[list[float], float, int, int]:
    """The trials' start times, sorted, the last one's end (from the journal's timestamps), how many trials
    finished and how many distinct settings they covered (parallel grid workers can both take the last point)."""
    import optuna

    from ltstudy.study.storage import open_storage

    study = optuna.load_study(study_name="quickstart", storage=open_storage(f"journal:{folder / 'j'}"))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    settings = {tuple(sorted(t.params.items())) for t in done}
    return (sorted(t.datetime_start.timestamp() for t in done), max(t.datetime_complete.timestamp() for t in done),
            len(done), len(settings))


def measure_load() -> dict:
    out = {}
    for threads in (0, 2):
        walls = {}
        for loaded in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                path = study_copy(Path(tmp), threads=threads)
                busy = multiprocessing.get_context("fork").Process(target=_spin, daemon=True) if loaded else None
                if busy:
                    busy.start()
                try:
                    walls["loaded" if loaded else "idle"] = run(path)
                finally:
                    if busy:
                        busy.kill()
                        busy.join()
        label = "1 thread per process (default)" if threads == 0 else "2 threads per process"
        out[label] = {**walls, "ratio": walls["loaded"] / walls["idle"]}
    return out


def measure_jobs(load: int = 0) -> dict:
    out: dict = {"load": load}
    busy = [multiprocessing.get_context("fork").Process(target=_spin, daemon=True) for _ in range(load)]
    for b in busy:
        b.start()
    try:
        _measure_jobs(out)
    finally:
        for b in busy:
            b.kill()
            b.join()
    return out


def _measure_jobs(out: dict) -> None:
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            path = study_copy(Path(tmp), grid=True)
            t0 = time.time()
            wall = run(path, "--jobs", str(jobs))
            starts, last_end, n, distinct = trial_times(Path(tmp))
        assert distinct == 12, f"the grid has 12 settings; --jobs {jobs} finished {distinct}"
        phase = last_end - starts[0]
        # (per distinct setting: a duplicate of a grid point is work the study did not need)
        out[f"--jobs {jobs}"] = {"wall": wall, "trials": n, "settings": distinct,
                                 "trials_per_hour": distinct * 3600 / wall,
                                 "first_trials_after": [s - t0 for s in starts[:jobs]],
                                 "trial_phase": phase, "trial_phase_trials_per_hour": distinct * 3600 / phase,
                                 "after_last_trial": wall - (last_end - t0)}
    out["ratio"] = out["--jobs 2"]["trials_per_hour"] / out["--jobs 1"]["trials_per_hour"]
    out["trial_phase_ratio"] = (out["--jobs 2"]["trial_phase_trials_per_hour"] /
                                out["--jobs 1"]["trial_phase_trials_per_hour"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["load", "jobs", "both"], default="both")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--load", type=int, default=0, help="busy processes competing while --part jobs runs")
    args = ap.parse_args(argv)
    result = {}
    if args.part in ("load", "both"):
        result["load"] = measure_load()
        print("quickstart (12 trials, digits, --no-cache): idle against one competing busy process")
        for label, r in result["load"].items():
            print(f"  {label:<32} idle {r['idle']:6.1f} s   loaded {r['loaded']:6.1f} s   loaded / idle "
                  f"{r['ratio']:.2f}x")
    if args.part in ("jobs", "both"):
        result["jobs"] = jobs = measure_jobs(args.load)
        print("12-setting grid (the quickstart's p x k x scope, --no-cache): --jobs 2 against --jobs 1"
              + (f", beside {args.load} busy process(es)" if args.load else ""))
        for label in ("--jobs 1", "--jobs 2"):
            r = jobs[label]
            firsts = ", ".join(f"{s:.1f}" for s in r["first_trials_after"])
            print(f"  {label}  {r['wall']:6.1f} s   {r['trials']} trials ({r['settings']} settings)   "
                  f"{r['trials_per_hour']:7.0f} settings/hour   first trial(s) "
                  f"started {firsts} s after launch; trials ran for {r['trial_phase']:.1f} s "
                  f"({r['trial_phase_trials_per_hour']:.0f} settings/hour); {r['after_last_trial']:.1f} s "
                  f"after the last")
        print(f"  ratio --jobs 2 / --jobs 1: {jobs['ratio']:.2f}x settings per hour for the whole command, "
              f"{jobs['trial_phase_ratio']:.2f}x while trials run")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
