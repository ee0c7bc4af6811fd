"""A content-addressed store of ticket-search state: the cross-trial cache and the checkpoints.

Every entry is keyed by a hash of everything that determines it (see
`ticket.TicketSearch` for the keys): the dense round, θ_k, and each pruning
round's trained weights and masks. A trial whose prefix of rounds is stored
loads it instead of training; a retried trial resumes from its last finished
round the same way, since its settings hash to the same keys.

Safe for concurrent workers, on a local or shared filesystem: an entry is
written to a unique temporary file and renamed into place (atomic on POSIX), so
readers see a whole entry or none. Each file carries a SHA-256 of its payload;
a corrupt or partial entry is discarded with a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_MAGIC = b"LTSCACHE1\n"
DEFAULT_CACHE_DIR = ".ltstudy/cache"


def content_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class RoundCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RoundCache({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def save(self, key: str, entry: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(entry, buf)
        payload = buf.getvalue()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s unreadable (%s); recomputing", path, exc)
            return None
        try:
            if not raw.startswith(_MAGIC):
                raise ValueError("bad header")
            digest, payload = raw[len(_MAGIC):len(_MAGIC) + 64], raw[len(_MAGIC) + 65:]
            if hashlib.sha256(payload).hexdigest().encode() != digest:
                raise ValueError("checksum mismatch (truncated or corrupted)")
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:  # any damage: discard and recompute
            log.warning("cache entry %s is corrupt (%s); discarding it and recomputing", path, exc)
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def stats(self) -> tuple[int, int]:
        """(entries, bytes)."""
        if not self.root.is_dir():
            return 0, 0
        files = [p for p in self.root.glob("*/*.pt")]
        return len(files), sum(p.stat().st_size for p in files)

    def clear(self) -> tuple[int, int]:
        n, size = self.stats()
        if self.root.is_dir():
            for sub in self.root.iterdir():
                if sub.is_dir() and len(sub.name) == 2:
                    shutil.rmtree(sub, ignore_errors=True)
        return n, size


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"
