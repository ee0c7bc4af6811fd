"""The Optuna journal: what is a record, what survives damage at its end, and what a full disk leaves.

Storage-level tests (no training): the study's records are written by Optuna
itself through ltstudy's storage. A full disk is made two ways, neither of
which needs a mount: an injected ENOSPC at the journal's own write call, and
a file-size limit (RLIMIT_FSIZE) on a subprocess, where the kernel refuses
writes with EFBIG exactly where a full disk would refuse them with ENOSPC
(a write that fits partly is cut short, the rest refused).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ltstudy.engine.errors import ConfigError, DiskFull
from ltstudy.study.journal import JournalWarning, SafeJournalBackend, check_journal, mend_journal
from ltstudy.study.journal_records import is_record, salvage
from ltstudy.study.session import existing_study
from ltstudy.study.storage import open_storage

TORN = b'{"op_code":6,"worker_id":"a-1","trial_id":1,"sta'  # a writer killed mid-write


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def small_study(journal: Path) -> optuna.Study:
    """A study with attributes, one finished trial and one RUNNING, written through ltstudy's storage."""
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    study.set_user_attr("settings", {"lr": 0.1})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    study.ask()
    return study


def records(journal: Path) -> list[dict]:
    data = journal.read_bytes()
    assert data.endswith(b"\n"), "the journal ends in a torn line"
    assert all(is_record(line) for line in data.splitlines(keepends=True))
    return [json.loads(line) for line in data.splitlines()]


def beside(journal: Path) -> list[str]:
    """What is in the journal's folder besides it (copies set aside, backups, leftovers)."""
    return sorted(p.name for p in journal.parent.iterdir() if p != journal)


# --------------------------------------------------------------------------- what a record is


def test_every_record_optuna_writes_is_a_record(tmp_path: Path):
    journal = tmp_path / "o.journal"
    storage = open_storage(f"journal:{journal}")
    study = optuna.create_study(study_name="a", storage=storage)
    study.set_user_attr("nested", {"x": [1, {"op_code": 3}]})
    storage.set_study_system_attr(study._study_id, "s", 1)
    study.enqueue_trial({"x": 0.5, "c": "b"}, user_attrs={"k": 1})

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        trial.suggest_int("i", 1, 9, log=True)
        trial.suggest_categorical("c", ["a", "b", None])
        trial.suggest_float("d", 0, 1, step=0.1)
        trial.report(0.3, 0)
        trial.report(float("nan"), 1)
        trial.set_user_attr("n", None)
        storage.set_trial_system_attr(trial._trial_id, "seen", True)
        if trial.number == 2:
            raise ValueError("a failed trial")
        return float("nan") if trial.number == 3 else x

    study.optimize(objective, n_trials=5, catch=(ValueError,))
    multi = optuna.create_study(study_name="m", storage=storage, directions=["minimize", "maximize"])
    multi.optimize(lambda t: (t.suggest_float("y", -1, 1), 2.0), n_trials=2)
    other = optuna.create_study(study_name="b", storage=storage)
    other.add_trial(optuna.trial.create_trial(params={"x": 2}, distributions={"x": optuna.distributions.IntDistribution(
        0, 3)}, value=1.0, intermediate_values={0: 1.0, 3: 2.0}, user_attrs={"a": 1}))
    other.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    other.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    other.tell(other.ask(), state=TrialState.PRUNED)
    optuna.delete_study(study_name="b", storage=storage)

    written = records(journal)  # (every line passes)
    assert sorted({r["op_code"] for r in written}) == list(range(10))  # every kind Optuna replays


@pytest.mark.parametrize("line", [
    b'{"hello": 1}', b'{"op_code":"six"}', b'{"op_code":6}', b'{"op_code":99,"worker_id":"w"}', b"[1]", b"null",
    b'{"op_code":6,"worker_id":"w","trial_id":0,"state":1,"values":[1]}',  # finished, without its time
    b'{"op_code":6,"worker_id":"w","trial_id":0,"state":"done","values":null}',
    b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[7]}',
    b'{"op_code":2,"worker_id":"w","study_id":0,"user_attr":{"a":1,"b":2}}',
    b'{"op_code":5,"worker_id":"w","trial_id":0,"param_name":"c","param_value_internal":7,"distribution":'
    b'"{\\"name\\": \\"CategoricalDistribution\\", \\"attributes\\": {\\"choices\\": [\\"a\\"]}}"}',
    b"[" * 100_000,
], ids=lambda line: line[:40].decode())
def test_json_that_optunas_replay_could_not_apply_is_no_record(line: bytes):
    assert not is_record(line + b"\n")


def test_the_record_glued_after_a_torn_fragment_is_found_even_when_the_fragment_nests_a_record_start():
    record = b'{"op_code":8,"worker_id":"w","trial_id":1,"user_attr":{"k":{"op_code":1}}}\n'
    assert salvage(b'{"op_code":8,"worker_id":"w","user_attr":{"x":{"op_code"' + record) == record
    assert salvage(b"\x00\x00\x00" + record) == record
    assert salvage(TORN + b'{"op_code":8,"worker_id":"w"}\n') is None  # (no whole record after it)


# --------------------------------------------------------------------------- JSON that is no record


@pytest.mark.parametrize("junk", [b'{"hello": 1}\n', b'{"op_code":"six"}\n'])
def test_a_json_line_that_is_no_record_in_the_middle_is_refused_in_one_line_and_repair_drops_it(tmp_path: Path,
                                                                                                junk: bytes):
    """(Such a line made every command fail with KeyError 'op_code' or "Should not reach", `repair` included.)"""
    journal = tmp_path / "o.journal"
    small_study(journal)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:3], junk, *lines[3:]]))

    with pytest.raises(ConfigError, match=f"damaged at line 4 of {len(lines) + 1} .* run `ltstudy repair`"):
        open_storage(f"journal:{journal}")
    assert mend_journal(journal) == 1
    assert b"".join(lines) == journal.read_bytes()  # every record, nothing else
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    assert study.user_attrs == {"settings": {"lr": 0.1}} and len(study.trials) == 2


def test_a_replay_failure_is_not_reported_as_a_missing_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from optuna.storages.journal._storage import JournalStorageReplayResult

    url = f"journal:{tmp_path / 'o.journal'}"
    small_study(tmp_path / "o.journal")
    assert existing_study(url, "nope") is None  # a name that is not there: no study

    def apply_logs(self, logs):
        raise KeyError("op_code")  # (what Optuna's replay raised for a record without one)

    monkeypatch.setattr(JournalStorageReplayResult, "apply_logs", apply_logs)
    with pytest.raises(ConfigError, match=r"could not be read \(KeyError: 'op_code'\).*ltstudy repair") as caught:
        existing_study(url, "s")
    assert "no study named" not in str(caught.value)


# --------------------------------------------------------------------------- a record glued after a torn one


def test_a_whole_record_glued_after_a_torn_fragment_at_the_end_is_kept(tmp_path: Path):
    """(The whole last line used to be set aside, the record with it, and the trial was run again.)"""
    journal = tmp_path / "o.journal"
    small_study(journal)
    with open(journal, "ab") as f:
        f.write(TORN)
    intact = journal.read_bytes()[:-len(TORN)]
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal))))
    running = plain.trials[1]
    plain.tell(running.number, 0.25)  # Optuna's own backend glues the trial's end onto the fragment
    glued = journal.read_bytes()[len(intact) + len(TORN):]
    assert glued.endswith(b"\n") and is_record(glued)

    with pytest.warns(JournalWarning, match=rf"ended in {len(TORN)} damaged bytes.*kept the 1 whole record glued "
                                            r"after a torn one, set them aside in o\.journal\.torn-"):
        storage = open_storage(f"journal:{journal}")
    assert journal.read_bytes() == intact + glued
    (aside,) = tmp_path.glob("o.journal.torn-*")
    assert aside.read_bytes() == TORN + glued  # the damaged line as it was
    trial = optuna.load_study(study_name="s", storage=storage).trials[1]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.25


# --------------------------------------------------------------------------- a full disk


class _FullDiskOS:
    """An `os` for journal.py whose writes take `room` bytes and then fail as a full disk does."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, bytes(data[:self.room]))
        self.room -= n
        return n


def test_an_append_a_full_disk_cuts_short_leaves_the_journal_as_it_was(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """(Buffered writes were flushed again as the file closed, after the cut: a 4,096-byte torn tail.)"""
    import ltstudy.study.journal as journal_module

    journal = tmp_path / "o.journal"
    small_study(journal)
    before = journal.read_bytes()
    monkeypatch.setattr(journal_module, "os", _FullDiskOS(room=100))
    record = {"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {"big": "x" * 5000}}
    with pytest.raises(DiskFull, match=f"no space left on the device under the storage journal {journal};"):
        SafeJournalBackend(str(journal)).append_logs([record])
    assert journal.read_bytes() == before
    assert beside(journal) == []


def _limited(limit: int):
    """preexec_fn: files this process writes may not grow past `limit` bytes (writes beyond fail with EFBIG)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _python(code: str, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          preexec_fn=_limited(limit), timeout=120)


def test_an_append_refused_by_the_kernel_part_way_leaves_the_journal_as_it_was(tmp_path: Path):
    journal = tmp_path / "o.journal"
    small_study(journal)
    before = journal.read_bytes()
    done = _python(f"""
        from ltstudy.engine.errors import DiskFull
        from ltstudy.study.journal import SafeJournalBackend
        try:
            SafeJournalBackend({str(journal)!r}).append_logs(
                [{{"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {{"big": "x" * 5000}}}}])
        except DiskFull as exc:
            print(exc)
        """, limit=len(before) + 100)  # (100 bytes fit: the kernel writes them, then refuses the rest)
    assert done.stderr == ""
    assert done.stdout.startswith(f"a file under the storage journal {journal} reached the largest size allowed")
    assert journal.read_bytes() == before
    assert beside(journal) == []


@pytest.mark.parametrize("damage", [TORN, b'{"hello": 1}\n'], ids=["torn record", "JSON that is no record"])
def test_a_damaged_tail_on_a_full_disk_is_cut_without_a_copy_and_the_study_reads(tmp_path: Path, damage: bytes):
    """(Setting it aside raised a raw OSError in every command, each leaving an empty .torn-* file.)"""
    journal = tmp_path / "o.journal"
    small_study(journal)
    intact = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(damage)
    done = _python(f"""
        import warnings
        import optuna
        from ltstudy.study.storage import open_storage
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            study = optuna.load_study(study_name="s", storage=open_storage("journal:{journal}"))
        print(len(study.trials))
        print(*[w.message for w in caught], sep="\\n")
        """, limit=0)  # (nothing may grow at all)
    assert done.stderr == ""
    trials, warning = done.stdout.splitlines()
    assert trials == "2"
    assert warning == (f"storage journal {journal} ended in {len(damage)} damaged bytes (a writer killed mid-write, "
                       "or a full disk); dropped them (no room left on the device for a copy) and continued from "
                       "the last complete record")
    assert journal.read_bytes() == intact
    assert beside(journal) == []


def test_repair_on_a_full_disk_stops_in_one_line_and_leaves_the_journal_and_its_folder_as_they_were(
        tmp_path: Path):
    """(Damage in the middle needs a backup and a new file: there is no room for either.)"""
    journal = tmp_path / "o.journal"
    small_study(journal)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:3], TORN + lines[3], *lines[4:]]))
    damaged = journal.read_bytes()
    done = _python(f"""
        from pathlib import Path
        from ltstudy.engine.errors import DiskFull
        from ltstudy.study.journal import mend_journal
        try:
            mend_journal(Path({str(journal)!r}))
        except DiskFull as exc:
            print(exc)
        """, limit=0)
    assert done.stderr == ""
    assert done.stdout.startswith(f"a file under the storage journal {journal} reached the largest size allowed")
    assert journal.read_bytes() == damaged
    assert beside(journal) == []
    assert mend_journal(journal) == 1  # with room again
    assert journal.read_bytes() == b"".join(lines)


def test_repair_cuts_damage_at_the_end_as_opening_does_without_needing_room(tmp_path: Path):
    journal = tmp_path / "o.journal"
    small_study(journal)
    intact = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b"garbage\n" + TORN)
    with pytest.warns(JournalWarning, match="set them aside in"):
        assert mend_journal(journal) == 0  # (nothing rewritten, nothing backed up)
    assert journal.read_bytes() == intact
    assert [p.split("-")[0] for p in beside(journal)] == ["o.journal.torn"]
    check_journal(journal)  # whole now
