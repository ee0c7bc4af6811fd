"""The one JSON writer of every record ltstudy writes (tickets, --json outputs, MLflow artifacts): strict JSON.

Python's `json` writes NaN and infinities as the bare tokens NaN and Infinity,
which are not JSON (RFC 8259): JavaScript's JSON.parse, jq and most other
readers refuse the file. A number that does not exist (a round not measured, a
ratio over zero) is written as null instead; `allow_nan=False` then guarantees
no such token slips through.
"""

from __future__ import annotations

import json
import math
from typing import IO, Any


def plain(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf) replaced by None, in any nesting of dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps`, strict (see the module docstring); keyword arguments as json's (indent, default, ...)."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)


def dump(obj: Any, fh: IO[str], **kwargs: Any) -> None:
    fh.write(dumps(obj, **kwargs))
