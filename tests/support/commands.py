"""Run ``scrapy sdi <action>`` as users do (a subprocess, settings via ``-s``) and fill its buffers.

Every run goes through :func:`sdi`, which also asserts that a given password never reaches stdout
or stderr and that nothing ends in a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from scrapy_sdi.buffer import PENDING, Row, SQLiteBuffer
from scrapy_sdi.mapping import encode_result, new_result_id
from tests.support.crawl import ROOT

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
    if secret:
        assert secret not in proc.stdout + proc.stderr, f"the password was printed by sdi {args}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def settings_for(server: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    """``-s`` settings for the server, a buffer in ``tmp_path`` and fast retries."""
    return {**server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **FAST, **extra}


def fill(
    path: Path, crawler: str, urls: list[str], state: str = PENDING, reason: str | None = None
) -> list[str]:
    """Buffer results as the pipeline does; return their ids."""
    buffer = SQLiteBuffer(path)
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
