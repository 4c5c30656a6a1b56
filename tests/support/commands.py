"""Run ``scrapy sdi <action>`` as users do (a subprocess, settings via ``-s``) and fill its buffers.

Every run goes through :func:`sdi`, which also asserts that a given password never reaches stdout
or stderr and that nothing ends in a traceback. A :class:`Store` is where a command's buffer
lives: a SQLite file, or a database of the tests' private PostgreSQL server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from scrapy_sdi.buffer import PENDING, Buffer, Row, SQLiteBuffer
from scrapy_sdi.mapping import encode_result, new_result_id
from tests.support.crawl import ROOT
from tests.support.postgres import PASSWORD as POSTGRES_PASSWORD

if TYPE_CHECKING:
    from pathlib import Path

#: Retries short enough that ``scrapy sdi flush`` against a failing server ends in seconds.
FAST = {"SDI_RETRY_BACKOFF_BASE": "0.02", "SDI_RETRY_BACKOFF_MAX": "0.2", "SDI_UNLOCK_DELAY": "0.2"}


def command_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without its SDI_ settings, so only ``-s`` and ``extra`` count."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SDI_") and k != "SCRAPY_SETTINGS_MODULE"
    }
    env.pop("DEFAULT_LOCAL_DATABASE_PATH", None)
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def sdi_command(*args: str, settings: dict[str, str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "scrapy", "sdi", *args]
    for name, value in (settings or {}).items():
        command += ["-s", f"{name}={value}"]
    return command


def sdi(
    cwd: Path,
    *args: str,
    settings: dict[str, str] | None = None,
    secret: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        sdi_command(*args, settings=settings),
        cwd=cwd,
        env=env or command_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for hidden in (secret, POSTGRES_PASSWORD):  # the test database's password, always
        if hidden:
            assert hidden not in proc.stdout + proc.stderr, (
                f"the password was printed by sdi {args}"
            )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def settings_for(server: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    """``-s`` settings for the server, a buffer in ``tmp_path`` and fast retries."""
    return {**server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **FAST, **extra}


def fill(
    path: Path | Buffer,
    crawler: str,
    urls: list[str],
    state: str = PENDING,
    reason: str | None = None,
) -> list[str]:
    """Buffer results as the pipeline does (in the file at ``path``, or an open buffer it closes);
    return their ids."""
    buffer = path if isinstance(path, Buffer) else SQLiteBuffer(path)
    try:
        rows = []
        for url in urls:
            result_id = new_result_id()
            result = {
                "url": url,
                "filename": url.rsplit("/", 1)[-1],
                "referrer": None,
                "description": None,
                "uploader": None,
                "crawled_at": "2026-11-22T18:15:51Z",
                "extra": {"n": len(rows)},
            }
            rows.append(
                Row(result_id, crawler, url, encode_result(result, result_id), state, reason)
            )
        assert all(buffer.enqueue(rows, dedup=False))
        return [row.id for row in rows]
    finally:
        buffer.close()


def urls(n: int, prefix: str = "a") -> list[str]:
    return [f"https://example.com/{prefix}/file{i}.mp3" for i in range(n)]


class Store:
    """Where a command's buffer lives: ``sqlite`` (``buffer.db`` in the test's directory) or
    ``postgres`` (a fresh database, its URL with a password that must never be shown)."""

    def __init__(self, kind: str, tmp_path: Path, url: str = "", password: str = "") -> None:
        self.kind = kind
        self.path = tmp_path / "buffer.db"
        self.url = url
        #: What no command may print (None for a file: it has no password).
        self.secret = password or None
        if kind == "postgres":
            self.settings = {"SDI_BUFFER": "postgres", "SDI_BUFFER_URL": url}
        else:
            self.settings = {"SDI_BUFFER_PATH": str(self.path)}

    def open(self) -> Buffer:
        if self.kind == "postgres":
            from scrapy_sdi.buffer_postgres import PostgresBuffer

            return PostgresBuffer(self.url)
        return SQLiteBuffer(self.path)

    def fill(
        self, crawler: str, urls: list[str], state: str = PENDING, reason: str | None = None
    ) -> list[str]:
        return fill(self.open(), crawler, urls, state, reason)

    def states(self) -> dict[str, str]:
        """Every row's state, by id."""
        buffer = self.open()
        try:
            from scrapy_sdi.buffer import STATES

            return {row["id"]: state for state in STATES for row in buffer.export(state)}
        finally:
            buffer.close()

    def command_settings(self, server: Any, **extra: str) -> dict[str, str]:
        """``-s`` settings for the API ``server``, this buffer and fast retries."""
        return {**server.settings, **self.settings, **FAST, **extra}


def _postgres_subclass() -> type[Buffer]:
    from scrapy_sdi.buffer_postgres import PostgresBuffer

    class TunedPostgresBuffer(PostgresBuffer):
        """A project's own PostgreSQL buffer, named by its dotted path in SDI_BUFFER."""

    return TunedPostgresBuffer


#: ``SDI_BUFFER = "tests.support.commands.TunedPostgresBuffer"``: a subclass is a PostgreSQL buffer too.
TunedPostgresBuffer = _postgres_subclass()
