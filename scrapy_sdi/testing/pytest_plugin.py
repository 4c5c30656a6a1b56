"""pytest fixtures that run the reference SDI server as a subprocess.

A subprocess, not an in-process Site, so tests can stop, kill and restart the server while the
client under test keeps its own reactor, exactly as against a real remote API.
``SDIServerProcess`` holds the logic and works outside pytest too (the demo script uses it).

Fixtures: ``sdi_server`` (one default server per test) and ``sdi_server_factory``
(``sdi_server_factory(fail_rate=0.2, filters=[...])`` starts servers with extra options).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import selectors
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

logger = logging.getLogger(__name__)

_LISTENING = "SDI reference server listening on "
# Run server.py by path (it imports only the stdlib, Twisted and orjson):
# ``-m scrapy_sdi.testing.server`` would first import scrapy_sdi/__init__, hence Scrapy, adding
# ~0.5 s to every start.
_SERVER_SCRIPT = str(Path(__file__).resolve().with_name("server.py"))


class SDIServerError(RuntimeError):
    """The server did not start, or an admin call failed."""


class SDIServerProcess:
    """One reference server subprocess: start, stop, restart on the same port and db, admin calls.

    ``options`` become CLI flags (``fail_rate=0.2`` → ``--fail-rate 0.2``); ``filters`` may be
    a list of filter objects (written to a JSON file next to the db).
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        username: str = "sdi-test",
        password: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sdi-server-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.workdir / "sdi.db"
        self.log_path = self.workdir / "server.log"
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.host = host
        self.port = port
        self.options = options
        self.startup_timeout = startup_timeout
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<SDIServerProcess {self.url or 'not started'} user={self.username!r}>"

    def __enter__(self) -> SDIServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # lifecycle

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def admin_url(self) -> str:
        return self.url.rsplit("/api/", 1)[0] + "/_admin"

    @property
    def settings(self) -> dict[str, str]:
        """The Scrapy settings that point the pipeline at this server."""
        return {
            "SDI_API_URL": self.url,
            "SDI_USERNAME": self.username,
            "SDI_PASSWORD": self.password,
        }

    def start(self) -> SDIServerProcess:
        """Start (or restart, on the same port and db) and wait for the listening line."""
        if self.running:
            raise SDIServerError("the server is already running")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        self.url = self._wait_for_url()
        self.port = int(self.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        logger.info("SDI reference server started at %(url)s", {"url": self.url})
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (SIGTERM: the reactor stops cleanly) and wait; kill if it hangs."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._close()

    def pause(self) -> None:
        """SIGSTOP: the API hangs; connections open, but nothing is read, stored or answered.

        ``kill`` then ``start`` is an API that crashed before it read the requests it was sent.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def _close(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def _command(self) -> list[str]:
        command = [
            sys.executable,
            _SERVER_SCRIPT,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
            "--user",
            f"{self.username}:{self.password}",
        ]
        for name, value in self.options.items():
            if value is None:
                continue
            if name == "filters" and not isinstance(value, (str, Path)):
                path = self.workdir / "filters.json"
                path.write_text(json.dumps(value), encoding="utf-8")
                value = path
            command += ["--" + name.replace("_", "-"), str(value)]
        return command

    def _wait_for_url(self) -> str:
        """Read stdout until the listening line, without sleeping; fail early if it exits."""
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.kill()
                    raise SDIServerError(f"no listening line within {self.startup_timeout}s")
                chunk = os.read(self._process.stdout.fileno(), 4096)
                if not chunk:
                    self._process.wait()
                    self._close()
                    raise SDIServerError(
                        f"the server exited early; see {self.log_path}:\n"
                        + self.log_path.read_text(errors="replace")[-2000:]
                    )
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode("utf-8")
        if not line.startswith(_LISTENING):
            self.kill()
            raise SDIServerError(f"unexpected first line from the server: {line!r}")
        return line[len(_LISTENING) :].strip()

    # admin API

    def results(self) -> list[dict[str, Any]]:
        """Every stored result, in the order stored."""
        return self._admin("GET", "results")["results"]

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "stats")

    def received(self) -> list[dict[str, Any]]:
        """Each ``POST crawler-results`` as it arrived: ``at`` (server time), ``status``,
        ``content_encoding``, ``wire_bytes``, ``body_bytes`` and ``body_sha256`` (decompressed)."""
        return self._admin("GET", "received")["received"]

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change fault switches at runtime, e.g. ``set_faults(fail_rate=0.2)``."""
        return self._admin("POST", "faults", faults)

    def set_filters(self, filters: list[dict[str, Any]], version: str | None = None) -> str:
        """Replace the filters; returns the new version."""
        body: Any = filters if version is None else {"version": version, "filters": filters}
        return self._admin("POST", "filters", body)["version"]

    def revoke_tokens(self, access_only: bool = False) -> None:
        """Revoke every token; ``access_only`` keeps refresh tokens valid."""
        self._admin("POST", "revoke", {"access_only": access_only})

    def set_status(self, url: str, code: int) -> int:
        """Change the status code of the results stored for ``url``."""
        return self._admin("POST", "status", {"url": url, "status_code": code})["updated"]

    def _tls_context(self) -> ssl.SSLContext | None:
        """Admin calls over https trust the server's own certificate, whoever issued it."""
        cert = self.options.get("tls_cert")
        if not cert:
            return None
        context = ssl.create_default_context(cafile=str(cert))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def _admin(self, method: str, name: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            f"{self.admin_url}/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(
                request, timeout=30, context=self._tls_context()
            ) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise SDIServerError(f"{method} /_admin/{name}: {exc.code} {exc.read()!r}") from None


@pytest.fixture
def sdi_server(tmp_path: Path) -> Iterator[SDIServerProcess]:
    """A fresh reference server with its own db and generated credentials."""
    server = SDIServerProcess(tmp_path / "sdi-server").start()
    yield server
    server.stop()


@pytest.fixture
def sdi_server_factory(tmp_path: Path) -> Iterator[Callable[..., SDIServerProcess]]:
    """Start servers with extra options: ``sdi_server_factory(fail_rate=0.2)``."""
    servers: list[SDIServerProcess] = []

    def start(**options: Any) -> SDIServerProcess:
        server = SDIServerProcess(tmp_path / f"sdi-server-{len(servers)}", **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
