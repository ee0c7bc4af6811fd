"""What counts as a record of Optuna's journal: a line Optuna's replay can apply without failing.

A line that parses as JSON is not yet a record: `{"hello": 1}` made Optuna's
replay fail with KeyError 'op_code', and `{"op_code": "six"}` with "Should not
reach." in every command. Each check below mirrors what Optuna's replay
(`JournalStorageReplayResult`) reads from a record of that kind, so a line
that passes is one it can apply; every record Optuna writes passes
(tests/test_journal.py writes each kind).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from optuna.distributions import json_to_distribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from .optuna_api import JournalOperation

RECORD_START = b'{"op_code":'  # how every record Optuna writes begins (json.dumps, compact separators)


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The record on `line` (newline included or not), or None if Optuna's replay could not apply it."""
    try:
        log = json.loads(line.decode("utf-8"))  # (invalid UTF-8 raises too)
        return log if isinstance(log, dict) and _applicable(log) else None
    except Exception:  # (a missing or malformed field: KeyError, ValueError, TypeError, RecursionError, ...)
        return None


def is_record(line: bytes) -> bool:
    return parse_record(line) is not None


def salvage(line: bytes) -> bytes | None:
    """The whole record glued after a torn fragment on `line` (pass it with its newline), or None.

    A writer killed mid-write leaves a fragment without a newline; a writer that
    does not look (Optuna's own backend) appends its record right after it. The
    leftmost record start whose rest of the line is a record wins (a record may
    hold a nested `{"op_code":` of its own, never an unescaped one in a string).
    """
    at = line.find(RECORD_START, 1)
    while at > 0:
        if is_record(line[at:]):
            return line[at:]
        at = line.find(RECORD_START, at + 1)
    return None


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and all(_number(v) for v in values)


def _when(text: Any) -> bool:
    datetime.fromisoformat(text)  # (raises for anything else, as the replay would)
    return True


@functools.lru_cache(maxsize=4096)
def _distribution(text: str):
    """A searched parameter's distribution (the same few texts on every trial's records: parsed once)."""
    return json_to_distribution(text)


def _one_attr(log: dict, key: str) -> bool:
    return isinstance(log[key], dict) and len(log[key]) == 1


def _study(log: dict) -> bool:
    return _int(log["study_id"])


def _trial(log: dict) -> bool:
    return _int(log["trial_id"])


def _create_study(log: dict) -> bool:
    directions = log["directions"]
    return (isinstance(log["study_name"], str) and isinstance(directions, list) and len(directions) > 0
            and all(_int(d) and StudyDirection(d) is not None for d in directions))


def _create_trial(log: dict) -> bool:
    if not _study(log) or (log["datetime_start"] is not None and not _when(log["datetime_start"])):
        return False
    if "datetime_complete" in log and not _when(log["datetime_complete"]):
        return False
    distributions = {k: _distribution(v) for k, v in log.get("distributions", {}).items()}
    for name, internal in log.get("params", {}).items():
        distributions[name].to_external_repr(internal)
    if "state" in log:
        TrialState(log["state"])
    value, values = log.get("value"), log.get("values")
    if (value is not None and not _number(value)) or (values is not None and not _numbers(values)):
        return False
    if value is not None and values is not None:
        return False  # (a trial has one or the other)
    for key in ("user_attrs", "system_attrs", "intermediate_values"):
        if not isinstance(log.get(key, {}), dict):
            return False
    return all(isinstance(int(step), int) for step in log.get("intermediate_values", {}))


def _set_param(log: dict) -> bool:
    if not (_trial(log) and isinstance(log["param_name"], str) and _number(log["param_value_internal"])):
        return False
    _distribution(log["distribution"]).to_external_repr(log["param_value_internal"])
    return True


def _set_state(log: dict) -> bool:
    state = TrialState(log["state"])
    if not _trial(log) or (log["values"] is not None and not _numbers(log["values"])):
        return False
    if state == TrialState.RUNNING:
        return _when(log["datetime_start"])
    return _when(log["datetime_complete"]) if state.is_finished() else True


_CHECKS: dict[JournalOperation, Callable[[dict], bool]] = {
    JournalOperation.CREATE_STUDY: _create_study,
    JournalOperation.DELETE_STUDY: _study,
    JournalOperation.SET_STUDY_USER_ATTR: lambda log: _study(log) and _one_attr(log, "user_attr"),
    JournalOperation.SET_STUDY_SYSTEM_ATTR: lambda log: _study(log) and _one_attr(log, "system_attr"),
    JournalOperation.CREATE_TRIAL: _create_trial,
    JournalOperation.SET_TRIAL_PARAM: _set_param,
    JournalOperation.SET_TRIAL_STATE_VALUES: _set_state,
    JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE: lambda log: (_trial(log) and _int(log["step"])
                                                                and _number(log["intermediate_value"])),
    JournalOperation.SET_TRIAL_USER_ATTR: lambda log: _trial(log) and _one_attr(log, "user_attr"),
    JournalOperation.SET_TRIAL_SYSTEM_ATTR: lambda log: _trial(log) and _one_attr(log, "system_attr"),
}


def _applicable(log: dict) -> bool:
    op = log["op_code"]
    if not _int(op) or not isinstance(log["worker_id"], str):
        return False
    check = _CHECKS.get(JournalOperation(op))  # (an op code this Optuna does not know raises ValueError)
    return True if check is None else check(log)  # (one the replay skips, e.g. DISCARD_TRIALS)
