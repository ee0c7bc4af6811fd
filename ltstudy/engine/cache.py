"""A content-addressed store of ticket-search state: the cross-trial cache and the checkpoints.

Every entry is keyed by a hash of everything that determines it (see
`ticket.TicketSearch` for the keys): the dense round, θ_k, each pruning
round's trained weights and masks, and each control level. Keys carry a
digest of the engine's own code, of the code of any user plugin the run uses
(hashing.py) and of the data actually read, so a code change or another file
under the same dataset name never hits an old entry;
and entries derived from another (θ_k and round r from the dense round, round
r from round r-1) carry their parent's content digest in their key, so a
search never combines one run's masks with another run's θ_k.

Safe for concurrent workers, on a local or shared filesystem: an entry is
written to a unique temporary file and renamed into place (atomic on POSIX),
so readers see a whole entry or none. Each file starts with a SHA-256 of its
payload and the key it was stored under: an entry that is not whole, or that
is another key's (files swapped or copied), or anything else in its place (a
folder), is damaged. A damaged entry is ignored with one warning (never
deleted: another worker may be replacing it at that moment) and overwritten
when recomputed. The key lives in the header, outside the payload, so an
entry's content digest (which its children's keys carry) is the payload's alone.
Temporary files of killed writers are removed once their writer is gone.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, DiskFull
from .processes import alive, start_time

log = logging.getLogger(__name__)

_MAGIC = b"LTSCACHE3\n"
_DIGEST_END = len(_MAGIC) + 65  # magic, 64 hex digits of SHA-256, newline; then the key and a newline
DEFAULT_CACHE_DIR = ".ltstudy/cache"
CACHE_VERSION = 5  # 4: code digests of the syntax tree and of users' plugins, model signatures; 5: configs by identity
# A cache file: an entry <hex key>.pt, or a writer's temporary file, in the folder named by the key's first two
# hex digits.
_OURS = re.compile(r"^(?P<dir>[0-9a-f]{2})/\.?(?P=dir)[0-9a-f]+\.pt(\..+\.tmp)?$")
# A writer's temporary file: .<entry>.<host>.<pid>-<its start time>.<random>.tmp (no start time where there is
# no /proc, and in the files of writers from before it was recorded).
_TMP = re.compile(r"^\.(?P<name>.+\.pt)\.(?P<host>[^.]+)\.(?P<pid>\d+)(-(?P<started>\d+))?\.[0-9a-f]{8}\.tmp$")
_STALE_TMP_SECONDS = 24 * 3600  # a temp file this old is a dead writer's, whatever host wrote it


@dataclass
class CacheStats:
    entries: int
    bytes: int
    oldest: float | None  # modification times (seconds since the epoch)
    newest: float | None
    temp_files: int


class RoundCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._swept = False
        self._warned: set[Path] = set()  # damaged entries already warned about (once each, until rewritten)

    def __repr__(self) -> str:
        return f"RoundCache({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    # ------------------------------------------------------------------ write

    def save(self, key: str, entry: dict[str, Any]) -> str:
        """Store `entry` atomically under `key`; returns its content digest."""
        import torch

        self._sweep_dead_writers()
        buf = io.BytesIO()
        torch.save(entry, buf)
        payload = buf.getvalue()
        digest = hashlib.sha256(payload).hexdigest()
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{_host()}.{_writer()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(_header(digest, key) + payload)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.replace(tmp, path)
            except IsADirectoryError:  # a folder where the entry belongs: damage in the cache's own tree
                shutil.rmtree(path, ignore_errors=True)
                os.replace(tmp, path)
        except BaseException as exc:
            _unlink(tmp)
            DiskFull.check(exc, f"the training cache {self.root}")
            raise
        self._warned.discard(path)
        return digest

    # ------------------------------------------------------------------ read

    def digest(self, key: str) -> str | None:
        """The content digest an entry declares (its header only), or None when there is no such entry."""
        path = self._path(key)
        head = self._read(path, len(_header("0" * 64, key)))
        if head is None:
            return None
        try:
            return _declared(head, key)
        except ValueError as exc:
            self._damaged(path, str(exc))
            return None

    def load(self, key: str, digest: str | None = None) -> dict[str, Any] | None:
        """The entry under `key`, or None when it is missing, damaged, or not the one with `digest`."""
        import torch

        path = self._path(key)
        raw = self._read(path)
        if raw is None:
            return None
        try:
            declared = _declared(raw, key)
            payload = raw[len(_header(declared, key)):]
            if hashlib.sha256(payload).hexdigest() != declared:
                raise ValueError("checksum mismatch (truncated or corrupted)")
            if digest is not None and declared != digest:
                return None  # replaced by another worker's entry since its digest was read: not the one asked for
            entry = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            if not isinstance(entry, dict):
                raise ValueError(f"it holds a {type(entry).__name__}, not an entry")
            return entry
        except Exception as exc:  # any damage: ignore it; the recomputed entry will replace it
            self._damaged(path, str(exc))
            return None

    def _read(self, path: Path, size: int | None = None) -> bytes | None:
        """The file's bytes (its first `size`), or None when there is no entry or it cannot be read (damage)."""
        try:
            if size is None:
                return path.read_bytes()
            with open(path, "rb") as fh:
                return fh.read(size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._damaged(path, f"unreadable: {exc}")
            return None

    def _damaged(self, path: Path, why: str) -> None:
        if path not in self._warned:  # (a search reads an entry's header, then the entry: one warning)
            self._warned.add(path)
            log.warning("cache entry %s is damaged (%s); ignoring it and recomputing", path, why)

    # ------------------------------------------------------------------ housekeeping

    def _entries(self) -> list[Path]:
        return [p for p in self.root.glob("??/*.pt") if _OURS.match(f"{p.parent.name}/{p.name}")] \
            if self.root.is_dir() else []

    def _temp_files(self) -> list[Path]:
        return [p for p in self.root.glob("??/.*.tmp") if _OURS.match(f"{p.parent.name}/{p.name}")] \
            if self.root.is_dir() else []

    def _sweep_dead_writers(self) -> None:
        """Remove temporary files whose writer is gone (once per cache object)."""
        if self._swept:
            return
        self._swept = True
        now = time.time()
        for tmp in self._temp_files():
            m = _TMP.match(tmp.name)
            try:
                age = now - tmp.stat().st_mtime
            except OSError:
                continue
            same_host_dead = m is not None and m["host"] == _host() and not alive(int(m["pid"]), m["started"])
            if same_host_dead or age > _STALE_TMP_SECONDS:
                _unlink(tmp)

    def stats(self) -> CacheStats:
        sizes, times = [], []
        for p in self._entries():
            try:
                st = p.stat()
            except OSError:
                continue
            sizes.append(st.st_size)
            times.append(st.st_mtime)
        return CacheStats(len(sizes), sum(sizes), min(times, default=None), max(times, default=None),
                          len(self._temp_files()))

    def clear(self, older_than: float | None = None) -> tuple[int, int]:
        """Delete every entry, or those last written more than `older_than` seconds ago; (entries, bytes)."""
        self._swept = False
        self._sweep_dead_writers()
        if older_than is None:  # (only what the cache wrote: a folder of yours given by mistake loses nothing else)
            entries, temps = self._entries(), self._temp_files()
            n, size = len(entries), sum(_size(p) for p in entries)
            for p in entries + temps:
                _unlink(p)
            for sub in {p.parent for p in entries + temps}:
                try:
                    sub.rmdir()
                except OSError:  # (not empty: something else is in it, or a writer just added an entry)
                    pass
            return n, size
        cutoff, n, size = time.time() - older_than, 0, 0
        for p in self._entries():
            try:
                st = p.stat()
            except OSError:
                continue
            if st.st_mtime < cutoff:
                _unlink(p)
                n, size = n + 1, size + st.st_size
        return n, size


def _header(digest: str, key: str) -> bytes:
    return _MAGIC + digest.encode() + b"\n" + key.encode() + b"\n"


def _declared(raw: bytes, key: str) -> str:
    """The payload digest a file's header declares for `key`; ValueError when the header is not one for `key`."""
    if not raw.startswith(_MAGIC) or raw[_DIGEST_END - 1:_DIGEST_END] != b"\n":
        raise ValueError("no valid header")
    declared = raw[len(_MAGIC):_DIGEST_END - 1].decode("ascii", "replace")
    stored = raw[_DIGEST_END:_DIGEST_END + len(key.encode()) + 1]
    if stored != key.encode() + b"\n":
        other = raw[_DIGEST_END:_DIGEST_END + 80].split(b"\n", 1)[0].decode("ascii", "replace")
        raise ValueError(f"it holds the entry of another key, {other!r}" if other else "no valid header")
    return declared


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _writer() -> str:
    """This process as a temporary file names its writer: pid and start time (a pid alone may be reused)."""
    pid = os.getpid()
    started = start_time(pid)
    return f"{pid}-{started}" if started else str(pid)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    """'30m', '12h', '7d', '2w' -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"--older-than must look like 30m, 12h, 7d or 2w, got {text!r}")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def human_age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f} {unit}"
    return f"{seconds:.0f} s"
