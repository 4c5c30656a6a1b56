"""Real scale-out infrastructure for tests: redis-server, Scrapyd, demo sites and worker crawls.

Everything runs as subprocesses on loopback with its own directory under the test's tmp_path, is
awaited by polling a condition with a deadline (never a fixed sleep), and is stopped by its own
pid. A missing tool skips locally but fails in CI (``CI`` set), so CI cannot go green by
silently not testing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PROJECT = ROOT / "example_project"
BIN = Path(sys.executable).parent
T = TypeVar("T")

#: Short timeouts so a killed worker's leases and failed rows come back within the test.
FAST_DELIVERY = {
    "SDI_RETRY_BACKOFF_BASE": "0.05",
    "SDI_RETRY_BACKOFF_MAX": "0.3",
    "SDI_RETRY_TIMES": "3",
    "SDI_UNLOCK_DELAY": "0.3",
    "SDI_TIMEOUT": "2",
    "SDI_LEASE_TIMEOUT": "3",
}


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Things with a ``stop()`` to stop at teardown, last started first."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop()


def started(cleanup: list[Any], thing: Any) -> Any:
    """``thing.start()``, with ``thing`` stopped at the test's teardown."""
    cleanup.append(thing)
    return thing.start()


def require(*, modules: Iterable[str] = (), executables: Iterable[str] = ()) -> None:
    """Skip when a tool is missing, except in CI, where a missing tool is a failure."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    missing += [e for e in executables if _which(e) is None]
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (see docs/scaling.md, 'Running the tests')"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _which(name: str) -> str | None:
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A port free right now; callers retry on a lost race (the server exits early)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM the process (its group when it leads one), SIGKILL if it hangs, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


def kill_9(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL: a crash with no clean-up at all."""
    _signal(proc, signal.SIGKILL)
    proc.wait()


def _signal(proc: subprocess.Popen[Any], sig: int) -> None:
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _read_first_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    """The first stdout line, without sleeping; fail early if the process exits."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"{what}: no first line within {timeout:g}s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"{what} exited early with {proc.wait()}")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


# -- demo site ------------------------------------------------------------------------------


@dataclass
class DemoSite:
    """``python -m scrapy_sdi.testing.demo_site`` on a free port."""

    categories: int
    files: int
    url: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> DemoSite:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scrapy_sdi.testing.demo_site",
                "--port",
                "0",
                "--categories",
                str(self.categories),
                "--files",
                str(self.files),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        line = _read_first_line(self.proc, 30, "demo site")
        prefix = "Demo site listening on "
        assert line.startswith(prefix), line
        self.url = line[len(prefix) :].strip()
        return self

    def expected_urls(self) -> set[str]:
        from scrapy_sdi.testing.demo_site import expected_files

        return {
            urllib.parse.urljoin(self.url, path)
            for path in expected_files(self.categories, self.files)
        }

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


# -- redis ----------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A private redis-server: loopback, its own dir, no persistence."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 5) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            self.port = free_port()
            log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (kept by the child)
            with log:
                self.proc = subprocess.Popen(
                    [
                        _which("redis-server") or "redis-server",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--dir",
                        str(self.workdir),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--protected-mode",
                        "yes",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if wait_for(self._ready_or_exited, 20, "redis-server to answer PING") == "ready":
                return self
        raise AssertionError(f"redis-server did not start; see {self.workdir / 'redis.log'}")

    def _ready_or_exited(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return "exited"  # most likely the port was taken meanwhile: try another
        try:
            return "ready" if self.client().ping() else None
        except OSError:
            return None
        except Exception as exc:  # redis.ConnectionError is not an OSError
            if type(exc).__name__ in ("ConnectionError", "TimeoutError", "BusyLoadingError"):
                return None
            raise

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        stop_process(self.proc)


# -- Scrapyd --------------------------------------------------------------------------------


@dataclass
class ScrapydServer:
    """A private Scrapyd: its own config, eggs, logs and dbs under ``workdir``, on loopback."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict, repr=False)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir / "scrapyd.log"

    def start(self, attempts: int = 5) -> ScrapydServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            self.port = free_port()
            (self.workdir / "scrapyd.conf").write_text(
                "[scrapyd]\n"
                "bind_address = 127.0.0.1\n"
                f"http_port = {self.port}\n"
                "poll_interval = 0.2\n"
                "max_proc = 8\n"
                f"eggs_dir = {self.workdir / 'eggs'}\n"
                f"logs_dir = {self.workdir / 'logs'}\n"
                f"dbs_dir = {self.workdir / 'dbs'}\n"
                "items_dir =\n"
                "jobs_to_keep = 20\n",
                encoding="utf-8",
            )
            # cwd has the scrapyd.conf; HOME points away from any ~/.scrapyd.conf of the machine
            env = {**os.environ, **self.env, "HOME": str(self.workdir)}
            env.pop("SCRAPY_SETTINGS_MODULE", None)
            log = open(self.log_path, "ab")  # noqa: SIM115 (kept by the child)
            with log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "scrapyd"],
                    cwd=self.workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if wait_for(self._ready_or_exited, 30, "Scrapyd's daemonstatus.json") == "ready":
                return self
        raise AssertionError(f"Scrapyd did not start; see {self.log_path}")

    def _ready_or_exited(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return "exited"
        try:
            return "ready" if self.get("daemonstatus.json")["status"] == "ok" else None
        except (OSError, ValueError):
            return None

    def get(self, endpoint: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + endpoint + query, timeout=10) as response:
            return json.load(response)

    def post(self, endpoint: str, fields: list[tuple[str, str]]) -> dict[str, Any]:
        body = urllib.parse.urlencode(fields).encode()
        with urllib.request.urlopen(self.url + endpoint, data=body, timeout=30) as response:
            answer = json.load(response)
        assert answer.get("status") == "ok", answer
        return answer

    def deploy(
        self, project_dir: Path, project: str, version: str
    ) -> subprocess.CompletedProcess[str]:
        """``scrapyd-deploy``, as a user runs it, from a copy of the project with this target."""
        cfg = project_dir / "scrapy.cfg"
        cfg.write_text(
            cfg.read_text(encoding="utf-8")
            + f"\n[deploy:scaleout]\nurl = {self.url}\nproject = {project}\n",
            encoding="utf-8",
        )
        return subprocess.run(
            [_which("scrapyd-deploy") or "scrapyd-deploy", "scaleout", "-v", version],
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def schedule(
        self, project: str, spider: str, settings: dict[str, str], args: dict[str, str]
    ) -> str:
        fields = [("project", project), ("spider", spider)]
        fields += [("setting", f"{k}={v}") for k, v in settings.items()]
        fields += list(args.items())
        return self.post("schedule.json", fields)["jobid"]

    def job_log(self, project: str, spider: str, job: str) -> str:
        path = self.workdir / "logs" / project / spider / f"{job}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)


def copy_example_project(dest: Path) -> Path:
    """A copy to deploy from: scrapyd-deploy writes setup.py and build files next to scrapy.cfg."""
    shutil.copytree(
        EXAMPLE_PROJECT,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", ".scrapy", "*.egg-info", "build"),
    )
    return dest


# -- workers --------------------------------------------------------------------------------


@dataclass
class Worker:
    """One ``scrapy crawl redis_files`` process of the example project, with its own buffer."""

    name: str
    workdir: Path
    settings: dict[str, str]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    runs: int = 0
    #: Where the process runs: the example project, or a copy of it a test may delete.
    cwd: Path = EXAMPLE_PROJECT

    @property
    def buffer_path(self) -> Path:
        return Path(self.settings["SDI_BUFFER_PATH"])

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.runs}.log"

    @property
    def stats_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.runs}.stats.json"

    def start(self, **override: str) -> Worker:
        self.runs += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = {
            "EXTENSIONS": json.dumps(
                {"tests.support.statsdump.StatsDump": 0, "scrapy_sdi.SDIStatus": 500}
            ),
            "STATS_DUMP_PATH": str(self.stats_path),
            "TELNETCONSOLE_ENABLED": "False",
            "LOG_LEVEL": "INFO",
            **self.settings,
            **override,
        }
        command = [sys.executable, "-m", "scrapy", "crawl", "redis_files"]
        for key, value in settings.items():
            command += ["-s", f"{key}={value}"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        for name in (
            "SCRAPY_SETTINGS_MODULE",
            "SDI_API_URL",
            "SDI_USERNAME",
            "SDI_PASSWORD",
            "SDI_BUFFER_PATH",
        ):
            env.pop(name, None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}

    def stop(self) -> None:
        stop_process(self.proc)


def buffer_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of an SDI buffer file (id, url, state), read beside a live writer (WAL)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [
            dict(row) for row in conn.execute("SELECT id, url, state FROM results ORDER BY rowid")
        ]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def assert_each_url_once(stored: list[dict[str, Any]]) -> set[str]:
    """No URL stored twice (under any id); return the stored URLs."""
    by_url = Counter(r["url"] for r in stored)
    twice = sorted(url for url, n in by_url.items() if n > 1)
    assert not twice, f"{len(twice)} URLs stored more than once, e.g. {twice[:3]}"
    return set(by_url)


def host_of(url: str) -> str:
    return urlsplit(url).netloc
