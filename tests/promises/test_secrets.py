"""Secrets never shown: no password leaves through command output, logs, stats, audit lines or pages.

A long random password is searched for in everything a run shows. Short ones (``p``, ``1``,
``api``) occur in any text by chance, and a mask that replaces them in text gives them away
(``htt***://``), so for them the promise is stronger: nothing shown depends on the password. The
same runs with another password of the same length print the same, once the ports and temporary
directories that differ between the two runs are made equal.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from scrapy_sdi.buffer import REJECTED
from scrapy_sdi.buffer_postgres import PostgresBuffer
from tests.support.commands import fill, sdi, settings_for, urls
from tests.support.crawl import FAST_RETRIES, run_crawl
from tests.support.dashboard import Dashboard, fetch, run_dashboard_cli

SHORT_PASSWORDS = ("p", "api", "http", "1", "sdi")
#: Nothing listens there: the API is unreachable.
UNREACHABLE = "http://127.0.0.1:9/api/v1"


def _with_userinfo(api_url: str, username: str, password: str) -> str:
    """The API URL with the credentials inside it, as some users write it."""
    scheme, rest = api_url.split("://", 1)
    return f"{scheme}://{username}:{password}@{rest}"


def _runs(server, tmp_path: Path, password: str, refusing) -> dict[str, str]:
    """What the cheap actions print with ``password``: right, refused by the API, in the URL, unreachable."""
    settings = settings_for(server, tmp_path, SDI_PASSWORD=password)
    fill(tmp_path / "buffer.db", "alpha", urls(3))
    cases = {
        "check": settings,
        "refused": {**settings, "SDI_API_URL": refusing.url},
        "userinfo": {
            **settings,
            "SDI_API_URL": _with_userinfo(server.url, server.username, password),
        },
        "unreachable": {**settings, "SDI_API_URL": UNREACHABLE},
    }
    shown = {name: _shown(sdi(tmp_path, "check", settings=s)) for name, s in cases.items()}
    shown["settings"] = _shown(sdi(tmp_path, "settings", settings=cases["userinfo"]))
    shown["flush"] = _shown(sdi(tmp_path, "flush", settings=settings))
    return {name: _normalised(text, tmp_path) for name, text in shown.items()}


def _shown(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _normalised(text: str, tmp_path: Path) -> str:
    """Ports and the run's own directory differ between two runs; nothing else may."""
    text = text.replace(str(tmp_path), "TMP")
    text = re.sub(r"(127\.0\.0\.1):\d+", r"\1:PORT", text)
    return re.sub(r"version '[^']*'", "version V", text)  # each server's filter version is its own


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_nothing_a_command_prints_depends_on_a_short_password(
    password, sdi_server_factory, tmp_path
):
    twin = "Z" * len(password)
    refusing = sdi_server_factory()  # its own random password: every login is refused
    shown = [
        _runs(sdi_server_factory(password=pw), tmp_path / name, pw, refusing)
        for name, pw in (
            ("one", password),
            ("two", twin),
        )  # names of one length: column widths match
    ]
    first = shown[0]
    assert first["check"].startswith("exit 0") and "login refused" in first["refused"], (
        first
    )  # the password was used
    assert "3 delivered" in first["flush"] and "carries credentials" in first["userinfo"], first
    for case in first:
        assert first[case] == shown[1][case], case


def _assert_hidden(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, text[-3000:]


def test_no_command_shows_a_long_password(sdi_server_factory, tmp_path):
    secret = secrets.token_urlsafe(24)
    server = sdi_server_factory(password=secret)
    settings = settings_for(server, tmp_path)
    rejected = fill(tmp_path / "buffer.db", "beta", urls(2, "r"), REJECTED, "bad url")
    fill(tmp_path / "buffer.db", "alpha", urls(5))
    actions = (
        ("check",),
        ("check", "--json", "-L", "DEBUG"),
        ("settings",),
        ("settings", "--json"),
        ("buffer",),
        ("buffer", "--json"),
        ("flush", "-L", "DEBUG"),
        ("status", "--url", urls(5)[0]),
        ("status", "--crawler", "alpha", "--json"),
        ("export", "--state", "rejected"),
        ("export", "--state", "delivered", "--format", "csv"),
        ("requeue", "--state", "rejected", "--id", rejected[0]),
        ("metrics",),
        ("metrics", "--output", str(tmp_path / "sdi.prom"), "-L", "DEBUG"),
    )
    for action in actions:
        assert sdi(tmp_path, *action, settings=settings, secret=secret).returncode == 0, action
    _assert_hidden(secret, (tmp_path / "sdi.prom").read_text())
    refused = sdi_server_factory()
    fill(tmp_path / "buffer.db", "alpha", urls(2, "later"))
    for api_url in (refused.url, UNREACHABLE, _with_userinfo(server.url, server.username, secret)):
        for action in (
            ("check",),
            ("flush", "--timeout", "2", "-L", "DEBUG"),
            ("status", "--url", urls(1)[0]),
        ):
            assert (
                sdi(
                    tmp_path, *action, settings={**settings, "SDI_API_URL": api_url}, secret=secret
                ).returncode
                == 1
            )


DASHBOARD_APIS = {
    "right": lambda server, factory: server.url,
    "refused": lambda server, factory: factory().url,  # a server with a password of its own
    "unreachable": lambda server, factory: UNREACHABLE,
}


@pytest.mark.parametrize("api", DASHBOARD_APIS)
def test_no_dashboard_page_shows_a_long_password(api, sdi_server_factory, tmp_path):
    secret = secrets.token_urlsafe(24)
    server = sdi_server_factory(password=secret)
    path = tmp_path / "buffer.db"
    rejected = fill(path, "beta", urls(2, "r"), REJECTED, "bad url")
    fill(path, "alpha", urls(3))
    assert (
        sdi(tmp_path, "flush", settings=settings_for(server, tmp_path), secret=secret).returncode
        == 0
    )
    env = {"SDI_USERNAME": server.username, "SDI_PASSWORD": secret}
    dashboard = Dashboard(
        path, tmp_path, "--api-url", DASHBOARD_APIS[api](server, sdi_server_factory), env=env
    )
    try:
        pages = (
            "/",
            "/api/overview",
            "/throughput",
            "/rows?state=rejected",
            "/remote",
            f"/row?id={rejected[0]}",
            "/export?state=rejected&format=csv",
            "/export?state=delivered&format=jsonl",
            "/metrics",
        )
        bodies = [fetch(dashboard.url + page)[2].decode("utf-8", "replace") for page in pages]
    finally:
        dashboard.stop()
    _assert_hidden(secret, *bodies, dashboard.stderr())
    # the remote statuses page logged in with the password, or showed why it could not
    expected = {"right": "received", "refused": "login refused", "unreachable": "lookup failed"}[
        api
    ]
    assert expected in bodies[4], bodies[4]


def test_the_dashboard_refuses_a_password_in_its_api_url_without_showing_it(sdi_server, tmp_path):
    path = tmp_path / "buffer.db"
    fill(path, "alpha", urls(1))
    api_url = _with_userinfo(sdi_server.url, sdi_server.username, sdi_server.password)
    (proc,) = run_dashboard_cli(
        tmp_path, ("--buffer", str(path), "--api-url", api_url, "--port", "0")
    )
    assert proc.returncode == 1 and "carries credentials" in proc.stderr, proc.stderr
    _assert_hidden(sdi_server.password, proc.stdout, proc.stderr)


CRAWLS = {
    "delivered": lambda server: {"LOG_LEVEL": "DEBUG", "SDI_STATUS_ON_CLOSE": True},
    "refused": lambda server: {},  # the server has a password of its own
    "userinfo": lambda server: {
        "SDI_API_URL": _with_userinfo(server.url, server.username, server.password)
    },
    "unreachable": lambda server: {"SDI_API_URL": UNREACHABLE},
}


@pytest.mark.parametrize("case", CRAWLS)
def test_a_crawl_shows_no_password_in_its_log_stats_or_audit_log(
    case, sdi_server_factory, tmp_path
):
    secret = secrets.token_urlsafe(24)
    server = sdi_server_factory(password=None if case == "refused" else secret)
    audit = tmp_path / "audit.jsonl"
    settings = {
        **server.settings,
        "SDI_PASSWORD": secret,
        **CRAWLS[case](server),
        **FAST_RETRIES,
        "SDI_CLOSE_TIMEOUT": 2,
        "SDI_BUFFER_PATH": str(tmp_path / "b.db"),
        "SDI_AUDIT_LOG": str(audit),
    }
    result = run_crawl(tmp_path, settings, {"n": 30})
    if case == "delivered":
        assert result.stats["sdi/items_delivered"] == 30, result.log[-3000:]
    if case == "userinfo":  # refused at start, the URL shown masked
        assert f"{server.username}:***@" in result.log and "carries credentials" in result.log, (
            result.log[-3000:]
        )
    _assert_hidden(
        secret, result.log, json.dumps(result.stats), audit.read_text() if audit.exists() else ""
    )


def _database_runs(sdi_server, postgres_db, tmp_path: Path, password: str) -> dict[str, str]:
    """What the actions on a PostgreSQL buffer print with ``password`` in SDI_BUFFER_URL:
    reachable (trust authentication takes any password), and unreachable."""
    from tests.support.postgres import _free_port

    tmp_path.mkdir()
    server = postgres_db.server
    name = server.create_database()  # each run its own buffer, filled alike
    fill(PostgresBuffer(server.url(name)), "alpha", urls(2))
    url = f"postgresql://sdi:{password}@127.0.0.1:{server.port}/{name}"
    down = f"postgresql://sdi:{password}@127.0.0.1:{_free_port()}/{name}"
    shown = {}
    for case, target in (("up", url), ("down", down)):
        settings = {**sdi_server.settings, "SDI_BUFFER": "postgres", "SDI_BUFFER_URL": target}
        for action in (("check",), ("buffer",), ("settings",), ("flush", "--timeout", "2")):
            proc = sdi(tmp_path, *action, settings=settings)
            text = _normalised(_shown(proc), tmp_path)
            text = re.sub(r"port \d+", "port PORT", text)
            text = re.sub(r"oldest pending +\S+", "oldest pending AGE", text)
            shown[f"{case} {action[0]}"] = re.sub(r"sdi_test_\d+", "DB", text)
    server.drop_database(name)
    return shown


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_nothing_a_command_prints_depends_on_a_short_database_password(
    password, sdi_server, postgres_db, tmp_path
):
    twin = "Z" * len(password)
    first, second = (
        _database_runs(sdi_server, postgres_db, tmp_path / name, pw)
        for name, pw in (("one", password), ("two", twin))
    )
    assert "reachable, PostgreSQL" in first["up check"] and "unreachable" in first["down check"]
    assert "2 delivered" in first["up flush"], first["up flush"]
    for case in first:
        assert first[case] == second[case], case


def test_no_command_shows_a_long_database_password(sdi_server, postgres_db, tmp_path):
    secret = secrets.token_urlsafe(24)
    server = postgres_db.server
    url = f"postgresql://sdi:{secret}@127.0.0.1:{server.port}/{postgres_db.name}"
    rejected = fill(PostgresBuffer(url), "beta", urls(2, "r"), REJECTED, "bad url")
    fill(PostgresBuffer(url), "alpha", urls(5))
    settings = {**sdi_server.settings, "SDI_BUFFER": "postgres", "SDI_BUFFER_URL": url}
    actions = (
        ("check", "--json", "-L", "DEBUG"),
        ("settings", "--json"),
        ("buffer", "--json"),
        ("flush", "-L", "DEBUG"),
        ("export", "--state", "rejected"),
        ("requeue", "--state", "rejected", "--id", rejected[0]),
        ("metrics", "--output", str(tmp_path / "sdi.prom"), "-L", "DEBUG"),
    )
    for action in actions:
        assert sdi(tmp_path, *action, settings=settings, secret=secret).returncode == 0, action
    _assert_hidden(secret, (tmp_path / "sdi.prom").read_text())
    for bad in (
        url.replace(f":{server.port}/", ":1/"),  # nothing listens there
        url.replace(secret, secret + "%zz"),  # the driver's message would quote the password
        url + "?sslmode=require",  # the server has no TLS
    ):
        for action in (("check",), ("buffer",), ("flush", "-L", "DEBUG")):
            proc = sdi(
                tmp_path, *action, settings={**settings, "SDI_BUFFER_URL": bad}, secret=secret
            )
            assert proc.returncode == 1, (action, proc.stdout, proc.stderr)
            if "%zz" in bad:
                assert "cannot be read by libpq" in proc.stdout + proc.stderr, proc.stdout
    dashboard = Dashboard(url, tmp_path)
    try:
        bodies = [fetch(dashboard.url + page)[2].decode() for page in ("/", "/rows", "/metrics")]
    finally:
        dashboard.stop()
    _assert_hidden(secret, *bodies, dashboard.stderr())
