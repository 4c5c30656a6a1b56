"""The dashboard as users run it: ``python -m scrapy_sdi.dashboard`` in a subprocess, over HTTP."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

from tests.support.crawl import ROOT

if TYPE_CHECKING:
    from pathlib import Path

LISTENING = re.compile(r"SDI dashboard listening on (http://\S+)")


class Dashboard:
    """The dashboard over ``buffer`` (a file, or a PostgreSQL URL, given as $SDI_BUFFER_URL),
    started on a free port; ``url`` is where it listens."""

    def __init__(
        self, buffer: Path | str, workdir: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        postgres = str(buffer).startswith(("postgresql://", "postgres://"))
        command = [
            sys.executable,
            "-m",
            "scrapy_sdi.dashboard",
            *(() if postgres else ("--buffer", str(buffer))),
            "--port",
            "0",
            *args,
        ]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        for name in ("SDI_API_URL", "SDI_USERNAME", "SDI_PASSWORD", "SDI_BUFFER_URL"):
            if env is None or name not in env:
                full_env.pop(name, None)
        if postgres:
            full_env["SDI_BUFFER_URL"] = str(buffer)
        self.stderr_path = workdir / f"dashboard-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        self.url = self._wait_for_url().rstrip("/")

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.stop()
                    raise AssertionError("the dashboard printed no listening line")
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    self.process.wait()
                    raise AssertionError("the dashboard exited: " + self.stderr_path.read_text())
                line += chunk
        match = LISTENING.search(line.decode())
        assert match, line
        return match.group(1)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


def fetch(url: str, *, data: dict | None = None, headers: dict[str, str] | None = None):
    """(status, headers, body) of one request; no exception for 4xx/5xx, no redirect following."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    body = None if data is None else urllib.parse.urlencode(data, doseq=True).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def run_dashboard_cli(
    tmp_path: Path, *commands: tuple[str, ...], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several dashboard command lines at once (each start imports Scrapy) and wait for all."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "SDI_BUFFER_URL"},
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scrapy_sdi.dashboard", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for args in commands
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results
