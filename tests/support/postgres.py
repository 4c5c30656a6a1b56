"""A private PostgreSQL cluster for the tests: initdb in a temporary directory, one server per
test session (per xdist worker), a fresh database per test.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user (the
Debian package creates it) and its programs run through ``runuser``. The binaries come from the
Debian ``postgresql`` package, which ``.ci/run`` installs.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The role the tests connect as; trust authentication ignores the password, which is there so
#: that every message can be checked for it.
USER, PASSWORD = "sdi", "pg-Secret-4711"


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: the newest Debian cluster version, else the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl and shutil.which("initdb") else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster: start, stop, restart it, kill its connections, hand out fresh databases."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin = bin_dir
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]

    # -- running the programs ------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), *args, check=check)

    def init(self) -> None:
        self.sockets.mkdir(parents=True)
        if self._as:
            pw = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        self.start_again()
        self.psql(f"CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")

    def start_again(self) -> None:
        """Start the stopped server and wait until it takes connections."""
        self._pg_ctl("-w", "-l", str(self.root / "server.log"), "start")
        self.wait_until_ready()

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut)."""
        self._pg_ctl("-w", "-m", "fast", "stop", check=False)

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is cut, the data stays."""
        self._pg_ctl("-w", "-m", "fast", "-l", str(self.root / "server.log"), "restart")
        self.wait_until_ready()

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = self._run(
                str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} not ready: {ready.stdout}")
            time.sleep(0.05)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def pause(self) -> None:
        """SIGSTOP the postmaster and its children: the server hangs, connections stay open."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        pid = self.postmaster_pid()
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for p in [pid, *map(int, children)]:
            with suppress(ProcessLookupError):  # a backend that was exiting as it was listed
                os.kill(p, sig)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self._run(
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            dbname,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ).stdout.strip()

    def terminate(self, dbname: str) -> int:
        """pg_terminate_backend every connection to ``dbname``; return how many."""
        out = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        return int(out or 0)

    # -- databases -----------------------------------------------------------------------------

    def create_database(self) -> str:
        name = f"sdi_test_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, dbname: str, *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"


def start_server() -> PostgresServer:
    found = bindir()
    if found is None:
        pytest.fail(
            "PostgreSQL's initdb/pg_ctl not found: run .ci/run, which installs the postgresql package",
            pytrace=False,
        )
    root = Path(tempfile.mkdtemp(prefix="sdi-pg-"))
    server = PostgresServer(root, found)
    try:
        server.init()
    except BaseException:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's cluster (per xdist worker)."""
    server = start_server()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


class Database:
    """One fresh database of the session's cluster, and its libpq URL."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.name = server.create_database()
        self.url = server.url(self.name)

    def terminate(self) -> int:
        return self.server.terminate(self.name)

    def wait_connections(self, at_most: int, timeout: float = 10.0) -> None:
        """Wait until at most ``at_most`` sessions are connected (a killed client's backend exits)."""
        deadline = time.monotonic() + timeout
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        while int(self.server.psql(sql) or 0) > at_most:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} still has more than {at_most} connections")
            time.sleep(0.02)


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[Database]:
    """A database of its own for one test, dropped after it."""
    db = Database(postgres_server)
    yield db
    postgres_server.drop_database(db.name)
