"""The round cache: what a ticket search reuses, that reuse never changes a number, and damage handling.

Entries are keyed by everything that determines them: the dense round (the
engine's code, the data read, model, training, seed), θ_k (+ k and the dense
entry's digest) and each pruning round (+ every pruning setting except how
many rounds follow, and its parent entry's digest). A stored prefix is loaded
instead of trained (reused, 0 computed iterations); a damaged entry is ignored
with a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import queue
import re
import signal
import time
from pathlib import Path

import optuna
import pytest
import torch

import ltstudy.engine.cache as cache_module
from ltstudy import cli
from ltstudy.engine.cache import RoundCache, human_bytes
from ltstudy.engine.hashing import digest as content_key
from ltstudy.engine.rounds import RoundResult
from ltstudy.engine.ticket import TicketSearch
from ltstudy.study.storage import open_storage
from tests.ft_helpers import Runs, sqlite_tracking, write_study

VOLATILE = ("wall_seconds", "reused", "computed_iterations")


def numbers(rounds: list[RoundResult]) -> list[dict]:
    """Everything a round reports except how it was obtained (and how long that took)."""
    return [{k: v for k, v in r.to_dict().items() if k not in VOLATILE} for r in rounds]


@pytest.fixture
def cache(tmp_path: Path) -> RoundCache:
    return RoundCache(tmp_path / "cache")


@pytest.fixture
def search(digits, tiny_cfg):
    """TicketSearch on the shared digits with tiny_cfg overrides (dotted keys), optionally with a cache."""

    def make(cache: RoundCache | None = None, **overrides) -> TicketSearch:
        return TicketSearch(tiny_cfg(overrides), data=digits, cache=cache)

    return make


K20 = {"prune.rewind_iter": 20, "prune.rounds": 2}


# --------------------------------------------------------------------------- reuse across searches


def test_a_second_identical_search_trains_nothing_and_reports_the_same_numbers(search, cache):
    first = search(cache, **K20).run().rounds
    assert [r.reused for r in first] == [False, False, False]
    assert [r.computed_iterations for r in first] == [60, 40, 40]

    second = search(cache, **K20).run().rounds
    assert [r.reused for r in second] == [True, True, True]
    assert [r.computed_iterations for r in second] == [0, 0, 0]
    assert numbers(second) == numbers(first)


def test_the_cache_never_changes_a_number(search, cache):
    uncached = search(None, **K20).run().rounds
    cold = search(cache, **K20).run().rounds
    warm = search(cache, **K20).run().rounds
    assert numbers(cold) == numbers(uncached) == numbers(warm)
    assert cache.stats().entries == 4  # dense, θ_k, round 1, round 2


def test_a_longer_search_reuses_the_shorter_ones_rounds(search, cache):
    search(cache, **{**K20, "prune.rounds": 1}).run()
    longer = search(cache, **{**K20, "prune.rounds": 3}).run().rounds
    assert [r.reused for r in longer] == [True, True, False, False]
    assert [r.computed_iterations for r in longer] == [0, 0, 40, 40]
    assert numbers(longer) == numbers(search(None, **{**K20, "prune.rounds": 3}).run().rounds)


def test_a_shorter_search_is_entirely_reused_from_a_longer_one(search, cache):
    search(cache, **{**K20, "prune.rounds": 3}).run()
    shorter = search(cache, **{**K20, "prune.rounds": 1}).run().rounds
    assert [r.reused for r in shorter] == [True, True]


def test_another_k_reuses_the_dense_round_and_replays_theta_k(search, cache):
    search(cache, **K20).run()
    other = search(cache, **{**K20, "prune.rewind_iter": 40}).run().rounds
    assert [r.reused for r in other] == [True, False, False]
    # Round 1 pays for replaying the first 40 iterations to rebuild θ_40, plus its own 60 - 40.
    assert [r.computed_iterations for r in other] == [0, 20 + 40, 20]
    assert numbers(other) == numbers(search(None, **{**K20, "prune.rewind_iter": 40}).run().rounds)
    # The replayed θ_k is stored: a third search with k = 40 replays nothing.
    again = search(cache, **{**K20, "prune.rewind_iter": 40, "prune.rounds": 3}).run().rounds
    assert [r.computed_iterations for r in again] == [0, 0, 0, 20]


def test_other_pruning_settings_reuse_only_the_dense_round(search, cache):
    search(cache, **K20).run()
    other = search(cache, **{**K20, "prune.prune_rate": 0.5}).run().rounds
    assert [r.reused for r in other] == [True, False, False]
    assert numbers(other) == numbers(search(None, **{**K20, "prune.prune_rate": 0.5}).run().rounds)


def test_other_training_settings_or_seeds_reuse_nothing(search, cache):
    search(cache, **K20).run()
    assert not any(r.reused for r in search(cache, **{**K20, "seed": 1}).run().rounds)
    assert not any(r.reused for r in search(cache, **{**K20, "train.lr": 0.05}).run().rounds)


def test_keys_cover_what_determines_an_entry_and_nothing_else(search):
    base = search(None, **K20)
    more_rounds = search(None, **{**K20, "prune.rounds": 4})
    other_k = search(None, **{**K20, "prune.rewind_iter": 40})
    other_p = search(None, **{**K20, "prune.prune_rate": 0.5})
    assert more_rounds.round_key(1) == base.round_key(1) and more_rounds.round_key(2) == base.round_key(2)
    assert other_k.dense_key == base.dense_key and other_p.dense_key == base.dense_key
    assert other_k.theta_k_key != base.theta_k_key and other_k.round_key(1) != base.round_key(1)
    assert other_p.theta_k_key == base.theta_k_key and other_p.round_key(1) != base.round_key(1)
    assert len({base.round_key(r) for r in range(3)}) == 3


# --------------------------------------------------------------------------- damaged entries


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a cache entry" * 1000)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _valid_checksum_bad_payload(path: Path) -> None:
    payload = b"this is not a torch file"
    path.write_bytes(cache_module._header(hashlib.sha256(payload).hexdigest(), path.stem) + payload)


def _flipped_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


DAMAGE = [_truncate, _garbage, _empty, _valid_checksum_bad_payload, _flipped_byte]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_round_entry_is_ignored_with_a_warning_and_recomputed(search, cache, caplog, damage):
    first = search(cache, **K20).run().rounds
    victim = sorted(cache.root.glob("*/*.pt"), key=lambda p: p.stat().st_mtime)[-1]  # round 2, written last
    damage(victim)
    with caplog.at_level(logging.WARNING, logger="ltstudy.engine.cache"):
        again = search(cache, **K20).run().rounds
    assert [r.reused for r in again] == [True, True, False]
    assert numbers(again) == numbers(first)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and victim.name in warnings[0] and "damaged" in warnings[0]
    assert cache.load(victim.stem) is not None  # rewritten whole


@pytest.mark.parametrize("damage", [_truncate, _garbage], ids=["truncate", "garbage"])
def test_a_damaged_dense_entry_is_retrained(search, cache, caplog, damage):
    first = search(cache, **{"prune.rounds": 0}).run().rounds
    damage(cache._path(search(None, **K20).dense_key))
    with caplog.at_level(logging.WARNING, logger="ltstudy.engine.cache"):
        again = search(cache, **{"prune.rounds": 0}).run().rounds
    assert [r.reused for r in again] == [False]
    assert numbers(again) == numbers(first)
    assert any("damaged" in r.getMessage() for r in caplog.records)


def _swap(a: Path, b: Path) -> None:
    """Two whole, valid entries trade places (a copy or a sync gone wrong): each passes its checksum."""
    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(raw_b)
    b.write_bytes(raw_a)


def test_an_entry_under_another_key_is_damaged_though_its_checksum_holds(cache, caplog):
    keys = [content_key("first"), content_key("second")]
    for i, key in enumerate(keys):
        cache.save(key, {"value": i})
    _swap(*(cache._path(k) for k in keys))
    with caplog.at_level(logging.WARNING, logger="ltstudy.engine.cache"):
        assert [cache.digest(k) for k in keys] == [None, None]
        assert [cache.load(k) for k in keys] == [None, None]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # one per entry, however often it is read
    assert f"holds the entry of another key, {keys[1]!r}" in warnings[0]
    cache.save(keys[0], {"value": 0})  # recomputed: it replaces the damaged file
    assert cache.load(keys[0]) == {"value": 0}


def _by_age(cache: RoundCache) -> list[Path]:
    return sorted(cache.root.glob("*/*.pt"), key=lambda p: p.stat().st_mtime)


def _swap_dense_and_round(cache: RoundCache, search) -> None:
    _swap(cache._path(search(None, **K20).dense_key), _by_age(cache)[-1])


def _folder_in_place_of_the_dense_entry(cache: RoundCache, search) -> None:
    path = cache._path(search(None, **K20).dense_key)
    path.unlink()
    (path / "something").mkdir(parents=True)


@pytest.mark.parametrize("damage", [_swap_dense_and_round, _folder_in_place_of_the_dense_entry],
                         ids=["dense and round 2 swapped", "a folder in place of the dense entry"])
def test_a_search_over_misplaced_entries_recomputes_them_with_the_uncached_numbers(search, cache, caplog, damage):
    """(Swapped entries made every trial fail with KeyError: 'theta0', and a folder made every trial fail, until
    `cache clear`.)"""
    first = search(cache, **K20).run().rounds
    damage(cache, search)
    with caplog.at_level(logging.WARNING, logger="ltstudy.engine.cache"):
        again = search(cache, **K20).run().rounds
    assert numbers(again) == numbers(first)
    assert not again[0].reused
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert [r.reused for r in search(cache, **K20).run().rounds] == [True, True, True]  # rewritten whole


def test_a_damaged_entry_is_never_deleted_so_a_replacement_written_meanwhile_survives(cache, monkeypatch):
    """A reader that finds damage used to unlink the file, taking a valid entry another worker had just renamed in."""
    key = content_key("entry")
    cache.save(key, {"value": 1})
    path = cache._path(key)
    _garbage(path)
    real = Path.read_bytes

    def read_then_replaced(self):
        raw = real(self)
        if self == path:  # another worker renames its whole entry into place right after our read
            RoundCache(cache.root).save(key, {"value": 2})
        return raw

    monkeypatch.setattr(Path, "read_bytes", read_then_replaced)
    assert cache.load(key) is None  # we read the damaged bytes
    monkeypatch.setattr(Path, "read_bytes", real)
    assert cache.load(key) == {"value": 2}


def test_temporary_files_of_a_dead_writer_are_removed_and_a_live_writers_are_kept(cache):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = cache_module._host()
    folder = cache.root / "ab"
    folder.mkdir(parents=True)
    orphan = folder / f".{'ab' * 16}.pt.{host}.{dead.stdout.strip()}.0123abcd.tmp"
    live = folder / f".{'ab' * 16}.pt.{host}.{os.getpid()}.4567abcd.tmp"
    for tmp in (orphan, live):
        tmp.write_bytes(b"half an entry")
    assert cache.stats().temp_files == 2
    cache.save(content_key("x"), {"x": 1})
    assert not orphan.exists() and live.exists()


def test_a_temporary_file_whose_writer_pid_now_names_another_process_is_removed(cache):
    """The pid in a dead writer's file may belong to a later process: the start time written beside it tells."""
    from ltstudy.engine.processes import start_time

    host = cache_module._host()
    folder = cache.root / "ab"
    folder.mkdir(parents=True)
    now = start_time(os.getpid())
    if now is None:
        pytest.skip("no /proc: a pid's start time cannot be read here")
    recycled = folder / f".{'ab' * 16}.pt.{host}.{os.getpid()}-{int(now) + 1}.0123abcd.tmp"
    mine = folder / f".{'ab' * 16}.pt.{host}.{os.getpid()}-{now}.4567abcd.tmp"
    for tmp in (recycled, mine):
        tmp.write_bytes(b"half an entry")
    cache.save(content_key("x"), {"x": 1})
    assert not recycled.exists() and mine.exists()


# --------------------------------------------------------------------------- no stale or mixed entry, ever


def test_a_change_in_the_engine_code_never_hits_an_old_entry(search, cache, monkeypatch):
    import ltstudy.engine.ticket

    search(cache, **K20).run()
    monkeypatch.setattr(ltstudy.engine.ticket, "engine_digest", lambda: "a-line-of-the-engine-changed")
    again = search(cache, **K20).run().rounds
    assert not any(r.reused for r in again)


def test_another_data_file_under_the_same_dataset_name_never_hits_an_old_entry(tmp_path, write_idx_set,
                                                                               no_system_fashion, fresh_data_cache):
    from ltstudy.engine.config import TicketConfig

    data_dir = tmp_path / "data"
    write_idx_set(data_dir, n_train=120, n_test=20, seed=0)
    cfg = TicketConfig.from_dict({"device": "cpu", "data": {"name": "fashion-mnist", "root": str(data_dir),
                                                            "val_size": 20},
                                  "train": {"iterations": 10, "eval_every": 5, "batch_size": 20},
                                  "prune": {"rounds": 1}})
    cache = RoundCache(tmp_path / "cache")
    TicketSearch(cfg, cache=cache).run()
    assert all(r.reused for r in TicketSearch(cfg, cache=cache).run().rounds)
    write_idx_set(data_dir, n_train=120, n_test=20, seed=1)  # the same name, other images
    fresh_data_cache_clear()
    assert not any(r.reused for r in TicketSearch(cfg, cache=cache).run().rounds)


def fresh_data_cache_clear() -> None:
    import ltstudy.engine.data

    ltstudy.engine.data._load_cached.cache_clear()


def test_rounds_are_tied_to_the_exact_dense_entry_they_came_from(search, cache):
    """A GPU worker racing on the same dense round writes other bits: its rounds and θ_k never mix with ours."""
    search(cache, **K20).run()
    dense = cache._path(search(None, **K20).dense_key)
    entry = cache.load(dense.stem)
    entry["state"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in entry["state"].items()}
    cache.save(dense.stem, entry)  # another worker's dense round replaced ours
    again = search(cache, **K20).run().rounds
    assert [r.reused for r in again] == [True, False, False]  # its rounds are not ours
    assert again[1].computed_iterations == 40 + 20  # θ_20 is replayed, not taken from the other run


def _run_search(root: str, cfg_dict: dict, out) -> None:
    import traceback

    import torch as _torch

    from ltstudy.engine.config import TicketConfig

    try:
        _torch.set_num_threads(1)
        rounds = TicketSearch(TicketConfig.from_dict(cfg_dict), cache=RoundCache(root)).run().rounds
        out.put(("ok", [{k: v for k, v in r.to_dict().items() if k not in VOLATILE} for r in rounds]))
    except BaseException:  # the parent fails at once with the reason, instead of waiting out its timeout
        out.put(("error", traceback.format_exc()))


def _collect(procs, out, deadline_s: float) -> list:
    """One report per process; a process that dies without reporting fails the test with its exit code."""
    results, deadline = [], time.monotonic() + deadline_s
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            dead = [p.exitcode for p in procs if not p.is_alive() and p.exitcode != 0]
            assert not dead, f"a worker exited with {dead} without reporting"
            missing = len(procs) - len(results)
            assert time.monotonic() < deadline, f"{missing} worker(s) still running after {deadline_s} s"
    return results


def test_two_workers_racing_on_one_search_both_get_the_uncached_numbers(tiny_cfg, tmp_path):
    cfg = tiny_cfg({**K20, "prune.rounds": 3})
    expected = numbers(TicketSearch(cfg).run().rounds)
    # Spawned, not forked: a fork of this process (pytest-xdist's threads, torch's pools) can inherit a held lock
    # and hang; a clean interpreter cannot.
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_run_search, args=(str(tmp_path / "cache"), cfg.to_dict(), out)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        results = _collect(procs, out, deadline_s=300)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [body for kind, body in results if kind == "error"]
    assert not errors, errors[0]
    assert [body for _, body in results] == [expected, expected]
    assert numbers(TicketSearch(cfg, cache=RoundCache(tmp_path / "cache")).run().rounds) == expected


def test_load_of_a_missing_key_is_none_without_a_warning(cache, caplog):
    with caplog.at_level(logging.WARNING):
        assert cache.load(content_key("nothing")) is None
    assert caplog.records == []


# --------------------------------------------------------------------------- concurrent writers and readers


ENTRY_NUMEL = 256 * 1024  # 1 MiB of float32: a torn write would be visible


def _writer(root: str, key: str, ident: int, n: int, go) -> None:
    cache = RoundCache(root)
    go.wait(120)  # every reader is already loading
    for i in range(n):
        value = float(ident * 1000 + i)
        cache.save(key, {"value": value, "tensor": torch.full((ENTRY_NUMEL,), value)})


def _reader(root: str, key: str, ready, stop, out) -> None:
    """Load until told to stop; report (loads, bad): torn, corrupt (warned about) or vanished entries."""
    cache = RoundCache(root)
    bad: list[str] = []
    logging.getLogger("ltstudy.engine.cache").addHandler(_Collect(bad))
    loads, seen = 0, False
    ready.set()
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        entry = cache.load(key)
        if entry is None:
            if seen:
                bad.append("entry vanished after it existed")
            continue
        seen, loads = True, loads + 1
        t = entry["tensor"]
        if t.numel() != ENTRY_NUMEL or not bool((t == entry["value"]).all()):
            bad.append(f"torn entry for value {entry['value']}")
    out.put((loads, bad))


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def test_concurrent_writers_of_one_key_never_produce_a_corrupt_read(tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")  # clean interpreters: see the racing-workers test
    root, key = str(tmp_path / "cache"), content_key("shared")
    out, stop, go = ctx.Queue(), ctx.Event(), ctx.Event()
    ready = [ctx.Event() for _ in range(2)]
    writers = [ctx.Process(target=_writer, args=(root, key, w, 20, go)) for w in range(4)]
    readers = [ctx.Process(target=_reader, args=(root, key, r, stop, out)) for r in ready]
    for p in readers + writers:
        p.start()
    try:
        assert all(r.wait(120) for r in ready), "a reader never started"
        go.set()
        for p in writers:
            p.join(timeout=120)
        assert [p.exitcode for p in writers] == [0, 0, 0, 0]
    finally:
        stop.set()  # the readers report once the writers are done
        go.set()
        results = [out.get(timeout=130) for _ in readers]
        for p in readers + writers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert all(bad == [] for _, bad in results), results
    assert sum(loads for loads, _ in results) > 0
    final = RoundCache(root).load(key)
    assert final is not None and final["value"] in {w * 1000 + 19 for w in range(4)}
    assert RoundCache(root).stats().entries == 1
    assert not list(Path(root).glob("*/.*.tmp")), "temporary files left behind"


# --------------------------------------------------------------------------- in a study, and the cache command


class CachedStudy:
    def __init__(self, root: Path, path: Path, uri: str, code: int):
        self.root, self.path, self.code = root, path, code
        self.cache = RoundCache(root / "shared-cache")
        self.study = optuna.load_study(study_name="ft", storage=open_storage(f"journal:{root / 'optuna.journal'}"))
        self.runs = Runs.of(uri, "ft")


@pytest.fixture(scope="module")
def cached_study(tmp_path_factory) -> CachedStudy:
    """Two trials that differ only in p (grid sampler), sharing a cache folder named in the study file."""
    root = tmp_path_factory.mktemp("cached-study")
    uri = sqlite_tracking(tmp_path_factory, root / "mlflow.db")
    path = write_study(root, sampler="grid", n_trials=2, cache_dir=str(root / "shared-cache"),
                       storage=f"journal:{root / 'optuna.journal'}", tracking_uri=uri,
                       train={"iterations": 60}, search={"prune_rate": [0.2, 0.5], "rewind_iter": 20, "rounds": 2})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("LTSTUDY_CACHE_DIR", raising=False)
        sigterm = signal.getsignal(signal.SIGTERM)  # `ltstudy run` turns SIGTERM into Ctrl-C
        try:
            code = cli.main(["run", str(path), "--quiet"])
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    return CachedStudy(root, path, uri, code)


def test_a_second_trial_with_the_same_dense_settings_trains_no_dense_round(cached_study: CachedStudy):
    assert cached_study.code == 0
    first, second = (t.user_attrs["rounds"] for t in cached_study.study.trials)
    assert [r["reused"] for r in first] == [False, False, False]
    assert [r["computed_iterations"] for r in first] == [60, 40, 40]
    assert [r["reused"] for r in second] == [True, False, False]
    assert [r["computed_iterations"] for r in second] == [0, 40, 40]
    assert second[0]["val_accuracy"] == first[0]["val_accuracy"]
    assert not (cached_study.root / ".ltstudy" / "cache").exists()  # [study].cache_dir was used


def test_every_round_logs_reused_and_computed_iterations_to_mlflow(cached_study: CachedStudy):
    runs = cached_study.runs
    client = runs.client
    for t in cached_study.study.trials:
        run_id = runs.of_trial(t.number).info.run_id
        for key in ("reused", "computed_iterations"):
            assert runs.steps(run_id, key) == [0, 1, 2]
        reused = {m.step: m.value for m in client.get_metric_history(run_id, "reused")}
        computed = {m.step: m.value for m in client.get_metric_history(run_id, "computed_iterations")}
        assert reused == {r["round"]: float(r["reused"]) for r in t.user_attrs["rounds"]}
        assert computed == {r["round"]: float(r["computed_iterations"]) for r in t.user_attrs["rounds"]}


def test_cache_info_reports_entries_size_and_age_and_clear_empties_it(cached_study: CachedStudy, capsys):
    cache, path = cached_study.cache, str(cached_study.path)
    stats = cache.stats()
    assert stats.entries == 6  # dense, θ_20, and rounds 1 and 2 for each of the two prune rates
    assert cli.main(["cache", "info", path]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{cache.root}: 6 entries, {human_bytes(stats.bytes)}")
    assert re.search(r"oldest [\d.]+ (s|min|h|d) ago, newest [\d.]+ (s|min|h|d) ago", out)
    assert cli.main(["cache", "info", "--cache-dir", str(cache.root)]) == 0
    assert "6 entries" in capsys.readouterr().out

    assert cli.main(["cache", "clear", path]) == 0
    assert capsys.readouterr().out.strip() == f"cleared 6 entries ({human_bytes(stats.bytes)}) from {cache.root}"
    assert cache.stats().entries == 0 and cache.stats().bytes == 0
    assert list(cache.root.rglob("*.pt")) == []
    assert cli.main(["cache", "info", path]) == 0
    assert re.search(r": 0 entries, 0 B$", capsys.readouterr().out.strip())


def test_cache_clear_older_than_deletes_only_entries_last_written_before_then(tmp_path, capsys):
    cache = RoundCache(tmp_path / "cache")
    old, new = content_key("old"), content_key("new")
    cache.save(old, {"x": 1})
    cache.save(new, {"x": 2})
    week_ago = time.time() - 8 * 86400
    os.utime(cache._path(old), (week_ago, week_ago))
    assert cli.main(["cache", "clear", "--cache-dir", str(cache.root), "--older-than", "7d"]) == 0
    assert "cleared 1 entries" in capsys.readouterr().out
    assert cache.load(old) is None and cache.load(new) == {"x": 2}
    assert cli.main(["cache", "clear", "--cache-dir", str(cache.root), "--older-than", "a week"]) == 2
    assert "--older-than must look like" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["swapped", "folder"])
def test_a_study_over_misplaced_cache_entries_finishes_every_trial(tmp_path, tmp_path_factory, monkeypatch, capsys,
                                                                   damage):
    """(Every trial of every later run failed, with exit 0 and "0 of 4 finished", until `cache clear`.)"""
    monkeypatch.chdir(tmp_path)
    uri = sqlite_tracking(tmp_path_factory, tmp_path / "mlflow.db")
    path = write_study(tmp_path, sampler="grid", n_trials=2, cache_dir=str(tmp_path / "cache"),
                       storage=f"journal:{tmp_path / 'optuna.journal'}", tracking_uri=uri,
                       search={"prune_rate": [0.2, 0.5], "rewind_iter": 0, "rounds": 1})
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["run", str(path), "--quiet"]) == 0
        cache = RoundCache(tmp_path / "cache")
        dense, *rounds = _by_age(cache)  # (the dense round is written first)
        if damage == "swapped":
            _swap(dense, rounds[0])
        else:
            dense.unlink()
            dense.mkdir()
        capsys.readouterr()
        assert cli.main(["run", str(path), "--quiet", "--study-name", "again"]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    first, again = (optuna.load_study(study_name=name, storage=storage).trials for name in ("ft", "again"))
    assert [t.state.name for t in again] == ["COMPLETE", "COMPLETE"]
    assert [t.values for t in again] == [t.values for t in first]


def test_cache_clear_on_a_folder_of_yours_deletes_only_cache_entries(tmp_path, capsys):
    """A --cache-dir pointed at the wrong folder (a home, say) once lost every folder with a two-letter name."""
    cache = RoundCache(tmp_path)
    key = content_key("entry")
    cache.save(key, {"x": 1})
    mine = [tmp_path / "go" / "main.go", tmp_path / "go" / "model.pt", tmp_path / key[:2] / "notes.txt",
            tmp_path / "ab" / "checkpoint.pt"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    assert cli.main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("cleared 1 entries")
    assert cache.load(key) is None and all(path.read_text() == "mine" for path in mine)


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536 * 1024, 3 * 1024**3)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "3.0 GiB"]
