#!/usr/bin/env python3
"""The one developer entry point of scrapy_sdi; needs only Python 3.10+ and the standard library.

    python3 dev.py test [pytest args]   set up .venv if needed, then run the test suite
    python3 dev.py matrix [NAME...]     the smoke tests on the oldest and newest Python and Scrapy
    python3 dev.py demo [--keep]        crawl the demo site into a local reference SDI API

Setup creates ``.venv`` (``python -m venv``) when it is missing and installs what the command
needs: ``demo`` the project alone (``pip install -e .``), ``test`` with its test extra
(``pip install -e ".[test]"``: selenium, scrapyd, schemathesis... minutes on a fresh machine).
``.venv/.dev-install-stamp`` records a hash of setup.cfg/pyproject.toml and the extras installed
with them, so ``test`` after ``demo`` installs the test extra, ``demo`` after ``test`` installs
nothing, and a change to the metadata installs again.

``matrix`` runs the tests marked ``smoke`` (a delivery crawl under the fault mix, the commands,
the reference server and its fixture) in one virtualenv per entry of ``MATRIX`` under
``.venvs/``, each with its Python (found in ``~/.pyenv/versions`` or as ``pythonX.Y`` on PATH)
and its Scrapy, the project installed with its ``smoke`` extra. A missing Python is skipped
with one line, or fails with that line when ``CI`` is set.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-install-stamp"
INSTALL_INPUTS = ("setup.cfg", "pyproject.toml", "setup.py")
EXAMPLE_PROJECT = ROOT / "example_project"
MIN_PYTHON = (3, 10)
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
SERVER_LINE = re.compile(r"SDI reference server listening on (https?://\S+)")
SITE_LINE = re.compile(r"Demo site listening on (https?://\S+)")
DEMO_USER = "demo"
#: Served by the demo's reference server, so the crawl shows results being filtered out.
DEMO_FILTERS = {
    "version": "demo-1",
    "filters": [
        {"id": 1, "field": "filename", "kind": "glob", "pattern": "*.tmp"},
        {"id": 2, "field": "url", "kind": "regex", "pattern": "/private/"},
    ],
}
SHOWN_ROWS = 10
MATRIX_VENVS = ROOT / ".venvs"
#: name -> (Python, Scrapy requirement): the oldest supported pair and the newest one. The
#: default suite (``dev.py test``) runs on .venv's Python with the newest Scrapy.
MATRIX = {
    "py310-scrapy214": ("3.10", "scrapy==2.14.*"),
    "py313-scrapylatest": ("3.13", "scrapy"),
}

USAGE = """\
usage: python3 dev.py test [pytest args]
       python3 dev.py matrix [NAME...]
       python3 dev.py demo [--keep]

  test   create/update .venv (the project with its test extra), then run pytest
         with the given arguments
  matrix run the smoke tests (pytest -m smoke) on each Python/Scrapy pair below,
         each in its own .venvs/NAME (created/updated as needed); NAME picks some:
{matrix}
  demo   create/update .venv (the project alone), start the reference SDI server
         and the demo site, crawl the site with
         example_project's "files" spider, then show what the API received
         (--keep leaves the temporary directory with the databases and logs)
"""


class DevError(Exception):
    """A failure worth one clear line, not a traceback."""


# --- environment ------------------------------------------------------------------------


def venv_python(venv: Path | None = None) -> Path:
    """The Python of ``venv``, .venv unless another is given."""
    venv = venv or VENV
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in INSTALL_INPUTS:
        path = ROOT / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def read_stamp() -> tuple[str, frozenset[str]] | None:
    """The digest and the extras of the last install, or None when nothing was installed."""
    try:
        text = STAMP.read_text().strip()
    except OSError:
        return None
    try:
        data = json.loads(text)
        return str(data["digest"]), frozenset(data["extras"])
    except (ValueError, KeyError, TypeError):
        return text, frozenset({"test"})  # a stamp of the dev.py that always installed ".[test]"


def write_stamp(digest: str, extras: frozenset[str]) -> None:
    STAMP.write_text(json.dumps({"digest": digest, "extras": sorted(extras)}) + "\n")


def extras_to_install(
    stamp: tuple[str, frozenset[str]] | None, digest: str, wanted: frozenset[str]
) -> frozenset[str] | None:
    """The extras to install now (with the project), or None when .venv has what is wanted.

    What was installed for the current metadata is kept: ``test`` after ``demo`` installs
    ``.[test]``, ``demo`` after ``test`` nothing. Changed metadata installs only what is wanted.
    """
    if stamp is None or stamp[0] != digest:
        return wanted
    if wanted <= stamp[1]:
        return None
    return stamp[1] | wanted


def ensure_env(extras: frozenset[str] = frozenset()) -> Path:
    """Create .venv when missing; install the project with ``extras`` unless already there."""
    if sys.version_info < MIN_PYTHON:
        needed = ".".join(map(str, MIN_PYTHON))
        raise DevError(f"Python {needed}+ is needed, this is {sys.version.split()[0]}")
    python = venv_python()
    if not python.exists():
        print("dev.py: creating .venv (python -m venv)", flush=True)
        if subprocess.call([sys.executable, "-m", "venv", str(VENV)]) != 0:
            raise DevError("python -m venv failed (on Debian/Ubuntu: apt install python3-venv)")
    digest = _inputs_digest()
    install = extras_to_install(read_stamp(), digest, extras)
    if install is not None:
        target = f".[{','.join(sorted(install))}]" if install else "."
        what = f"and its {', '.join(sorted(install))} extra" if install else "and its dependencies"
        shown = f'"{target}"' if install else target
        _pip_install(
            python,
            ["-e", target],
            f"installing scrapy_sdi {what} into .venv (pip install -e {shown})",
        )
        write_stamp(digest, install)
    return python


def _pip_install(python: Path, arguments: list[str], doing: str, env_name: str = "") -> None:
    """``pip install`` quietly into ``python``'s venv, saying what and how long: pip's own output is
    for errors only. ``env_name`` names a matrix environment in every line."""
    where = f"{env_name}: " if env_name else ""
    print(f"dev.py: {where}{doing}...", flush=True)
    started = time.monotonic()
    cmd = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *arguments,
    ]
    if subprocess.call(cmd, cwd=ROOT) != 0:
        raise DevError(f"{where}pip install failed; see its output above")
    print(f"dev.py: {where}installed in {time.monotonic() - started:.0f} s", flush=True)


# --- processes --------------------------------------------------------------------------


def _wait(proc: subprocess.Popen) -> int:
    """Wait for a child that shares our terminal: on Ctrl-C it stops by itself; twice kills it."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            return proc.wait(STOP_TIMEOUT)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            proc.kill()
            raise KeyboardInterrupt from None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _start_server(
    procs: list[subprocess.Popen],
    name: str,
    cmd: list[str],
    line: re.Pattern,
    log: Path,
) -> str:
    """Start a server, wait for its "listening on URL" line on stdout, return the URL."""
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True, errors="replace"
        )
    procs.append(proc)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps draining stdout so the server never blocks on a full pipe
        with proc.stdout:
            for text in proc.stdout:
                lines.put(text)
        lines.put(None)

    threading.Thread(target=pump, name=f"{name} stdout", daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            text = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise DevError(
                f"the {name} did not say it was listening within {STARTUP_TIMEOUT:.0f}s;"
                f" its log:\n{_tail(log)}"
            ) from None
        if text is None:
            proc.wait()
            raise DevError(
                f"the {name} exited with code {proc.returncode} before listening;"
                f" its log:\n{_tail(log)}"
            )
        match = line.search(text)
        if match:
            return match.group(1)


def _run_crawl(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the crawl, echoing its log as it comes (it shows no secret); return its exit code and log."""
    proc = subprocess.Popen(
        cmd,
        cwd=EXAMPLE_PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    captured: list[str] = []
    interrupted = False
    try:
        while True:
            try:
                for text in proc.stdout:
                    captured.append(text)
                    sys.stdout.write(text)
                break
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                print(
                    "\ndev.py: letting the crawl shut down cleanly (Ctrl-C again to force)",
                    flush=True,
                )
        code = _wait(proc)
    finally:
        proc.stdout.close()
        _stop(proc)
    if interrupted:
        raise KeyboardInterrupt
    return code, "".join(captured)


# --- reporting --------------------------------------------------------------------------


def _get_json(url: str, token: str | None = None, body: dict | None = None) -> object:
    headers = {"Accept": "application/json"}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read().decode("utf-8"))


def fetch_received(api_url: str, password: str) -> list[dict]:
    """What the reference server stored: GET <host>/_admin/results (logging in if asked to)."""
    parts = urlsplit(api_url)
    admin_url = f"{parts.scheme}://{parts.netloc}/_admin/results"
    try:
        data = _get_json(admin_url)
    except urllib.error.HTTPError as error:
        if error.code != 401:
            raise
        login = {"username": DEMO_USER, "password": password}
        token = _get_json(api_url.rstrip("/") + "/auth/token", body=login)["access_token"]
        data = _get_json(admin_url, token=token)
    if isinstance(data, dict):
        data = data.get("results", next((v for v in data.values() if isinstance(v, list)), []))
    if not isinstance(data, list):
        raise DevError(f"{admin_url} did not answer a list of results")
    return [row for row in data if isinstance(row, dict)]


def print_received(results: list[dict]) -> None:
    print(f"\nThe SDI API received {len(results)} result(s)", end="")
    print(f"; the first {SHOWN_ROWS}:" if len(results) > SHOWN_ROWS else ":" if results else ".")
    rows = [(str(r.get("url", "")), str(r.get("filename", ""))) for r in results[:SHOWN_ROWS]]
    if rows:
        width = max(len("URL"), *(len(url) for url, _ in rows))
        print(f"  {'URL':<{width}}  FILENAME")
        for url, filename in rows:
            print(f"  {url:<{width}}  {filename}")


def parse_stats(log: str) -> dict[str, object]:
    """All stats from the last "Dumping Scrapy stats:" block of a crawl log (pprint format)."""
    start = log.rfind("Dumping Scrapy stats:")
    if start < 0:
        return {}
    block = []
    for line in log[start:].splitlines()[1:]:
        if not line.startswith(("{", " ")):
            break
        block.append(line)
    body = "\n".join(block).strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    stats: dict[str, object] = {}
    for entry in re.split(r",\n (?=['\"])", body):
        match = re.match(r"""(['"])(.+?)\1:\s(.*)""", entry.strip(), re.S)
        if match:
            raw = " ".join(match.group(3).split())
            try:
                stats[match.group(2)] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                stats[match.group(2)] = raw
    return stats


def print_stats(stats: dict[str, object]) -> None:
    sdi = {key: value for key, value in stats.items() if key.startswith("sdi/")}
    print(
        f"\nItems scraped by the crawl: {stats.get('item_scraped_count', 0)}, "
        f"dropped: {stats.get('item_dropped_count', 0)}"
    )
    if not sdi:
        print("No sdi/ stats in the crawl's stats dump (is scrapy_sdi.SDIPipeline enabled?)")
        return
    print("Delivery stats of the crawl (sdi/*):")
    width = max(len(key) for key in sdi)
    for key in sorted(sdi):
        print(f"  {key:<{width}}  {sdi[key]}")


# --- commands ---------------------------------------------------------------------------


def cmd_test(args: list[str]) -> int:
    python = ensure_env(frozenset({"test"}))
    code = _wait(subprocess.Popen([str(python), "-m", "pytest", *args], cwd=ROOT))
    if code == 5:
        print("dev.py: pytest collected no tests; that counts as a failure", file=sys.stderr)
    return code


def cmd_demo(args: list[str]) -> int:
    unknown = [arg for arg in args if arg != "--keep"]
    if unknown:
        raise DevError(f"unknown demo option(s): {' '.join(unknown)}\n{_usage()}")
    python = str(ensure_env())
    tmp = Path(tempfile.mkdtemp(prefix="scrapy-sdi-demo-"))
    password = secrets.token_urlsafe(18)
    procs: list[subprocess.Popen] = []
    try:
        (tmp / "filters.json").write_text(json.dumps(DEMO_FILTERS))
        api_url = _start_server(
            procs,
            "reference server",
            [
                python,
                "-m",
                "scrapy_sdi.testing.server",
                "--port",
                "0",
                "--db",
                str(tmp / "api.db"),
                "--user",
                f"{DEMO_USER}:{password}",
                "--filters",
                str(tmp / "filters.json"),
            ],
            SERVER_LINE,
            tmp / "server.log",
        )
        site_url = _start_server(
            procs,
            "demo site",
            [python, "-m", "scrapy_sdi.testing.demo_site", "--port", "0"],
            SITE_LINE,
            tmp / "demo_site.log",
        )
        print(f"dev.py: SDI API at {api_url} (user {DEMO_USER!r}), demo site at {site_url}")
        patterns = ", ".join(
            f"{f['field']} {f['kind']} {f['pattern']!r}" for f in DEMO_FILTERS["filters"]
        )
        print(f"dev.py: the API's filters drop results matching: {patterns}", flush=True)
        env = dict(os.environ, SDI_API_URL=api_url, SDI_USERNAME=DEMO_USER, SDI_PASSWORD=password)
        code, log = _run_crawl(
            [
                python,
                "-m",
                "scrapy",
                "crawl",
                "files",
                "-s",
                f"SDI_BUFFER_PATH={tmp / 'buffer.db'}",
                "-s",
                f"DEMO_SITE_URL={site_url}",
                "-s",
                "STATS_DUMP=True",
                "-s",
                "LOG_LEVEL=INFO",
            ],
            env,
        )
        try:
            results = fetch_received(api_url, password)
        except (OSError, ValueError, KeyError) as error:
            print(f"\ndev.py: could not read what the API received: {error}", file=sys.stderr)
            results = None
        else:
            print_received(results)
        print_stats(parse_stats(log))
        if code != 0:
            print(f"\ndev.py: the crawl exited with code {code}", file=sys.stderr)
            return code
        return 0 if results else 1
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if "--keep" in args:
            print(f"dev.py: kept {tmp} (api.db, buffer.db, server logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def find_python(version: str) -> Path | None:
    """The newest pyenv build of ``version`` (e.g. "3.10"), else ``python3.10`` on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = []
    for path in pyenv.glob(f"{version}.*/bin/python"):
        match = re.fullmatch(re.escape(version) + r"\.(\d+)", path.parent.parent.name)
        if match:
            builds.append((int(match.group(1)), path))
    if builds:
        return max(builds)[1]
    found = shutil.which(f"python{version}")
    return Path(found) if found else None


def ensure_matrix_env(name: str, python: Path, scrapy: str) -> Path:
    """.venvs/NAME with ``python``, the project with its smoke extra and ``scrapy`` installed."""
    venv = MATRIX_VENVS / name
    target = venv_python(venv)
    if not target.exists():
        print(f"dev.py: {name}: creating .venvs/{name} ({python} -m venv)", flush=True)
        if subprocess.call([str(python), "-m", "venv", str(venv)]) != 0:
            raise DevError(f"{name}: {python} -m venv failed")
    digest = hashlib.sha256((_inputs_digest() + "\0" + scrapy).encode()).hexdigest()
    stamp = venv / ".dev-install-stamp"
    if not stamp.exists() or stamp.read_text().strip() != digest:
        _pip_install(
            target,
            ["-e", ".[smoke]", scrapy],
            f'installing scrapy_sdi with its smoke extra and {scrapy} (pip install -e ".[smoke]" "{scrapy}")',
            env_name=name,
        )
        stamp.write_text(digest + "\n")
    return target


def smoke_files() -> list[str]:
    """The test files that mark tests smoke: only they are collected, since the others may import
    what the smoke extra leaves out (selenium, hypothesis, scrapyd...)."""
    tests = sorted((ROOT / "tests").rglob("test_*.py"))
    return [
        str(path.relative_to(ROOT)) for path in tests if "pytest.mark.smoke" in path.read_text()
    ]


def cmd_matrix(args: list[str]) -> int:
    unknown = [arg for arg in args if arg not in MATRIX]
    if unknown:
        raise DevError(
            f"unknown matrix entry(ies): {' '.join(unknown)} (known: {', '.join(MATRIX)})"
        )
    failed = []
    for name in args or list(MATRIX):
        version, scrapy = MATRIX[name]
        python = find_python(version)
        if python is None:
            line = f"{name}: no Python {version} (looked in ~/.pyenv/versions and for python{version} on PATH)"
            if os.environ.get("CI"):
                raise DevError(line)
            print(f"dev.py: skipping {line}", flush=True)
            continue
        started = time.monotonic()
        target = ensure_matrix_env(name, python, scrapy)
        print(f"dev.py: {name}: pytest -m smoke", flush=True)
        pytest = [str(target), "-m", "pytest", "-m", "smoke", "-q", *smoke_files()]
        code = _wait(subprocess.Popen(pytest, cwd=ROOT))
        print(
            f"dev.py: {name}: {'passed' if code == 0 else f'failed (pytest exit code {code})'}"
            f" in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if code != 0:
            failed.append(name)
    if failed:
        raise DevError(f"matrix: failed on {', '.join(failed)}")
    return 0


COMMANDS = {"test": cmd_test, "matrix": cmd_matrix, "demo": cmd_demo}


def _usage() -> str:
    return USAGE.format(
        matrix="\n".join(
            f"           {name:<20} Python {version}, {scrapy}"
            for name, (version, scrapy) in MATRIX.items()
        )
    )


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(_usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except DevError as error:
        print(f"dev.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndev.py: interrupted", file=sys.stderr)
        return 130
    except (OSError, urllib.error.URLError) as error:
        print(f"dev.py: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
