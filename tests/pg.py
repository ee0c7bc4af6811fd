"""A private PostgreSQL server for the tests (a pytest plugin: `pytest_plugins = ["tests.pg"]`).

`pg_server` (session) runs initdb into a fresh temporary folder with
scram-sha-256 password authentication for the superuser `lt` (so a wrong
password is really refused), starts the server on 127.0.0.1 at a free port
with its socket in the same folder, and always stops it and deletes the folder
afterwards. `pg` (per test) hands out fresh databases on it, so tests never
share tables. Without PostgreSQL's server binaries the tests that use them are
skipped. As root, initdb and pg_ctl run as the `postgres` user (initdb refuses
root), which then owns the folder.

PYTEST_DONT_REWRITE (test modules import it before pytest registers it as a plugin).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "lt"
_counter = itertools.count()


def _bindir() -> Path | None:
    """The newest PostgreSQL server bin folder (Debian layout), or the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    port: int
    password: str
    root: Path

    host: str = "127.0.0.1"
    bindir: Path | None = None
    opts: str = ""

    def restart(self) -> None:
        """Stop the server (fast: every connection is cut, as in a crash or a failover) and start it again."""
        data = self.root / "data"
        subprocess.run(_as_postgres([str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=60, check=True)
        subprocess.run(_as_postgres([str(self.bindir / "pg_ctl"), "-D", str(data), "-l",
                                     str(self.root / "server.log"), "-w", "-t", "60", "-o", self.opts, "start"]),
                       capture_output=True, timeout=90, check=True)

    def url(self, db: str = "postgres", password: str | None = None, port: int | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{USER}:{pw}@{self.host}:{port or self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=USER, password=self.password, dbname=db,
                               autocommit=True, connect_timeout=10)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    # (/usr/sbin is not on every root PATH: a clean `env -i` shell has none of it)
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin") or "runuser"
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package")
    if os.geteuid() == 0:
        try:
            pw_entry = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, but there is no `postgres` user to run initdb as")
    # As root, somewhere the postgres user can reach (TMPDIR may be private to root).
    root = Path(tempfile.mkdtemp(prefix="ltstudy-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    data, log = root / "data", root / "server.log"
    password = "pw-" + secrets.token_hex(12)
    port = free_port()
    started = False
    try:
        (root / "pwfile").write_text(password + "\n")
        if os.geteuid() == 0:
            for path in (root, root / "pwfile"):
                os.chown(path, pw_entry.pw_uid, pw_entry.pw_gid)
        root.chmod(0o700)
        init = subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", USER,
                                            f"--pwfile={root / 'pwfile'}", "--auth=scram-sha-256", "-E", "UTF8",
                                            "--no-sync", "--no-instructions"]), capture_output=True, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.decode()[-2000:]}")
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c max_connections=300 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        proc = subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                            "-t", "60", "-o", opts, "start"]), capture_output=True, timeout=90)
        started = True
        if proc.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({proc.returncode}): {proc.stderr.decode()}\n{tail}")
        yield PgServer(port=port, password=password, root=root, bindir=bindir, opts=opts)
    finally:
        if started:
            subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg(pg_server: PgServer) -> PgServer:
    """The session's server; call `pg.create_database()` for a database of this test's own."""
    return pg_server
