"""The reference server over real loopback HTTP: every contract row, the fault switches, admin."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from scrapy_sdi.testing.pytest_plugin import SDIServerError, SDIServerProcess
from scrapy_sdi.testing.server import Faults, ServerConfig, build_site

#: the reference server and its fixture, on every Python and Scrapy of `python3 dev.py matrix`
pytestmark = pytest.mark.smoke


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: Any


def call(
    server: SDIServerProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One request to BASE + path; ``raw`` sends those bytes instead of ``body`` as JSON."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if raw is None and body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        headers.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, parts.path + path, body=raw, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 304:
        assert response.getheader("Content-Type") == "application/json"
    return Reply(response.status, response.headers, json.loads(data) if data else None)


def login(server: SDIServerProcess) -> dict[str, Any]:
    reply = call(
        server, "POST", "/auth/token", {"username": server.username, "password": server.password}
    )
    assert reply.status == 200, reply.body
    return reply.body


def token(server: SDIServerProcess) -> str:
    return login(server)["access_token"]


def result(rid: str, url: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "url": url or f"https://example.com/{rid}.mp3",
        "filename": f"{rid}.mp3",
        **fields,
    }


def submit(
    server: SDIServerProcess,
    results: list[dict[str, Any]],
    access: str | None = None,
    crawler: str = "MyCrawler",
) -> Reply:
    return call(
        server,
        "POST",
        "/crawler-results",
        {"crawler": crawler, "results": results},
        token=access or token(server),
    )


def outcomes(reply: Reply) -> list[tuple[str, str]]:
    assert reply.status == 200, reply.body
    return [(entry["id"], entry["status"]) for entry in reply.body["results"]]


def stored_ids(server: SDIServerProcess) -> list[str]:
    return [row["id"] for row in server.results()]


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SDIServerProcess]:
    """One server shared by the tests that store nothing and flip no switch (starts cost ~0.6 s)."""
    with SDIServerProcess(tmp_path_factory.mktemp("quiet")) as server:
        yield server


# --- authentication -----------------------------------------------------------------------------


def test_health_needs_no_auth(quiet_server: SDIServerProcess) -> None:
    reply = call(quiet_server, "GET", "/health")
    assert reply.status == 200
    assert reply.body["status"] == "ok"
    assert isinstance(reply.body["version"], str)


def test_login_returns_bearer_tokens(sdi_server: SDIServerProcess) -> None:
    tokens = login(sdi_server)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["access_token"] != tokens["refresh_token"]


@pytest.mark.parametrize(
    "body, status, error",
    [
        ({"username": "sdi-test", "password": "wrong"}, 401, "invalid_credentials"),
        ({"username": "nobody", "password": "x"}, 401, "invalid_credentials"),
        ({"username": "sdi-test"}, 400, None),
        ([], 400, None),
    ],
)
def test_login_failures(
    quiet_server: SDIServerProcess, body: Any, status: int, error: str | None
) -> None:
    reply = call(quiet_server, "POST", "/auth/token", body)
    assert reply.status == status
    assert isinstance(reply.body["error"], str)
    if error:
        assert reply.body["error"] == error


def test_refresh_rotates_tokens(sdi_server: SDIServerProcess) -> None:
    first = login(sdi_server)
    reply = call(sdi_server, "POST", "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert reply.status == 200
    assert reply.body["refresh_token"] != first["refresh_token"]
    assert call(sdi_server, "GET", "/status-codes", token=reply.body["access_token"]).status == 200
    again = call(sdi_server, "POST", "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert (again.status, again.body) == (401, {"error": "invalid_refresh_token"})
    assert sdi_server.stats()["refreshes"] == 1


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/filters"),
        ("GET", "/status-codes"),
        ("POST", "/crawler-results"),
        ("POST", "/crawler-results/status"),
    ],
)
@pytest.mark.parametrize("access", [None, "not-a-token"])
def test_bearer_required(
    quiet_server: SDIServerProcess, method: str, path: str, access: str | None
) -> None:
    reply = call(quiet_server, method, path, {} if method == "POST" else None, token=access)
    assert (reply.status, reply.body) == (401, {"error": "unauthorized"})


def test_token_max_uses(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(token_max_uses=2)
    access = token(sdi_server)
    assert call(sdi_server, "GET", "/status-codes", token=access).status == 200
    assert call(sdi_server, "GET", "/status-codes", token=access).status == 200
    reply = call(sdi_server, "GET", "/status-codes", token=access)
    assert (reply.status, reply.body) == (401, {"error": "token_expired"})


def test_token_lifetime(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(token_lifetime=0)
    tokens = login(server)
    assert tokens["expires_in"] == 0
    reply = call(server, "GET", "/status-codes", token=tokens["access_token"])
    assert (reply.status, reply.body) == (401, {"error": "token_expired"})


def test_revoke_ends_every_token(sdi_server: SDIServerProcess) -> None:
    tokens = login(sdi_server)
    sdi_server.revoke_tokens()
    assert call(sdi_server, "GET", "/filters", token=tokens["access_token"]).status == 401
    reply = call(sdi_server, "POST", "/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert (reply.status, reply.body["error"]) == (401, "invalid_refresh_token")
    assert call(sdi_server, "GET", "/filters", token=token(sdi_server)).status == 200


# --- routing ------------------------------------------------------------------------------------


def test_unknown_path_is_json_404(quiet_server: SDIServerProcess) -> None:
    reply = call(quiet_server, "GET", "/nope")
    assert (reply.status, reply.body) == (404, {"error": "not_found"})


def test_wrong_method_is_json_405(quiet_server: SDIServerProcess) -> None:
    reply = call(quiet_server, "DELETE", "/crawler-results")
    assert (reply.status, reply.body) == (405, {"error": "method_not_allowed"})
    assert reply.headers["Allow"] == "POST"


# --- filters ------------------------------------------------------------------------------------

FILTERS = [
    {"id": 1, "field": "url", "kind": "domain", "pattern": "example.org"},
    {"id": 2, "field": "filename", "kind": "glob", "pattern": "*.tmp"},
]


def test_filters_from_file_and_etag(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(filters=FILTERS)
    access = token(server)
    reply = call(server, "GET", "/filters", token=access)
    assert reply.status == 200
    assert reply.body["filters"] == FILTERS
    version = reply.body["version"]
    assert reply.headers["ETag"] == f'"{version}"'
    for sent in (version, f'"{version}"', f'W/"{version}", "other"'):
        unchanged = call(server, "GET", "/filters", token=access, headers={"If-None-Match": sent})
        assert (unchanged.status, unchanged.body) == (304, None)
    stale = call(server, "GET", "/filters", token=access, headers={"If-None-Match": '"old"'})
    assert stale.status == 200


def test_versioned_filters_file(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(filters={"version": "v7", "filters": FILTERS})
    reply = call(server, "GET", "/filters", token=token(server))
    assert (reply.body["version"], reply.body["filters"]) == ("v7", FILTERS)


def test_set_filters_bumps_version(sdi_server: SDIServerProcess) -> None:
    access = token(sdi_server)
    before = call(sdi_server, "GET", "/filters", token=access).body["version"]
    version = sdi_server.set_filters(FILTERS[:1])
    assert version != before
    reply = call(sdi_server, "GET", "/filters", token=access, headers={"If-None-Match": before})
    assert (reply.status, reply.body) == (200, {"version": version, "filters": FILTERS[:1]})
    assert sdi_server.set_filters(FILTERS[:1]) != version


# --- submitting ---------------------------------------------------------------------------------


def test_accepted_then_duplicate(sdi_server: SDIServerProcess) -> None:
    access = token(sdi_server)
    full = result(
        "a",
        referrer="https://google.com",
        description=None,
        uploader="Bot",
        crawled_at="2026-11-22T18:15:51Z",
        extra={"size": 3},
    )
    assert outcomes(submit(sdi_server, [full, result("b")], access)) == [
        ("a", "accepted"),
        ("b", "accepted"),
    ]
    assert outcomes(submit(sdi_server, [full, result("c")], access)) == [
        ("a", "duplicate"),
        ("c", "accepted"),
    ]
    rows = sdi_server.results()
    assert [row["id"] for row in rows] == ["a", "b", "c"]
    assert rows[0] | {"submitted_at": None} == {
        **full,
        "crawler": "MyCrawler",
        "status_code": 0,
        "submitted_at": None,
    }
    stats = sdi_server.stats()
    assert (stats["accepted"], stats["duplicates"]) == (3, 1)


def test_same_id_twice_in_one_batch(sdi_server: SDIServerProcess) -> None:
    reply = submit(sdi_server, [result("a"), result("a")])
    assert outcomes(reply) == [("a", "accepted"), ("a", "duplicate")]
    assert stored_ids(sdi_server) == ["a"]


def test_gzip_body(sdi_server: SDIServerProcess) -> None:
    raw = gzip.compress(json.dumps({"crawler": "C", "results": [result("z")]}).encode())
    reply = call(
        sdi_server,
        "POST",
        "/crawler-results",
        raw=raw,
        token=token(sdi_server),
        headers={"Content-Encoding": "gzip"},
    )
    assert outcomes(reply) == [("z", "accepted")]


def test_invalid_gzip_is_400(quiet_server: SDIServerProcess) -> None:
    reply = call(
        quiet_server,
        "POST",
        "/crawler-results",
        raw=b"not gzip",
        token=token(quiet_server),
        headers={"Content-Encoding": "gzip"},
    )
    assert reply.status == 400


def test_byte_limit_applies_after_gunzip(
    sdi_server_factory: Callable[..., SDIServerProcess],
) -> None:
    server = sdi_server_factory(max_bytes=2000)
    body = {"crawler": "C", "results": [result("a", extra={"pad": "x" * 5000})]}
    raw = gzip.compress(json.dumps(body).encode())
    assert len(raw) < 2000
    reply = call(
        server,
        "POST",
        "/crawler-results",
        raw=raw,
        token=token(server),
        headers={"Content-Encoding": "gzip"},
    )
    assert (reply.status, reply.body) == (413, {"error": "too_large", "max_results": 1000})
    assert server.results() == []


def test_a_proxy_body_limit_answers_413_as_html_on_the_bytes_as_sent(
    sdi_server_factory: Callable[..., SDIServerProcess],
) -> None:
    server = sdi_server_factory(proxy_max_bytes=3000)
    access = token(server)
    assert submit(server, [result("a")], access).status == 200
    big = json.dumps({"crawler": "C", "results": [result("b", extra={"pad": "x" * 5000})]}).encode()
    request = urllib.request.Request(
        server.url + "/crawler-results",
        data=big,
        method="POST",
        headers={"Authorization": f"Bearer {access}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 413 and refused.value.headers["Content-Type"] == "text/html"
    assert b"<html>" in refused.value.read()  # no JSON, so no max_results
    packed = gzip.compress(big)  # the proxy counts the bytes as sent: compressed, this one passes
    assert (
        call(
            server,
            "POST",
            "/crawler-results",
            raw=packed,
            token=access,
            headers={"Content-Encoding": "gzip"},
        ).status
        == 200
    )
    received = server.received()
    assert [(r["status"], r["content_encoding"]) for r in received] == [
        ("200", None),
        ("413", None),
        ("200", "gzip"),
    ]
    assert received[1]["wire_bytes"] == len(big) and received[2]["wire_bytes"] == len(packed)
    assert received[2]["body_bytes"] == len(big)
    assert received[2]["body_sha256"] == hashlib.sha256(big).hexdigest()
    assert received[0]["at"] <= received[1]["at"] <= received[2]["at"]
    assert stored_ids(server) == ["a", "b"]


def test_too_many_results_is_413(sdi_server: SDIServerProcess) -> None:
    reply = submit(sdi_server, [result(str(n)) for n in range(1001)])
    assert (reply.status, reply.body) == (413, {"error": "too_large", "max_results": 1000})
    assert outcomes(submit(sdi_server, [result(str(n)) for n in range(1000)]))[-1] == (
        "999",
        "accepted",
    )


def test_default_byte_limit_is_5mb(sdi_server: SDIServerProcess) -> None:
    reply = submit(sdi_server, [result("big", extra={"pad": "x" * (5 * 1024 * 1024)})])
    assert (reply.status, reply.body["error"]) == (413, "too_large")


def test_max_results_setting(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(max_results=2)
    reply = submit(server, [result("a"), result("b"), result("c")])
    assert (reply.status, reply.body) == (413, {"error": "too_large", "max_results": 2})


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        {"results": [result("a")]},
        {"crawler": 5, "results": [result("a")]},
        {"crawler": "C", "results": []},
        {"crawler": "C", "results": {"id": "a"}},
        {"crawler": "C", "results": ["a"]},
        {"crawler": "C", "results": [result("")]},
        {"crawler": "C", "results": [result("x" * 129)]},
        {"crawler": "C", "results": [{"id": "a", "filename": "f"}]},
        {"crawler": "C", "results": [{"id": "a", "url": "u", "filename": 3}]},
        {"crawler": "C", "results": [result("a", referrer=1)]},
        {"crawler": "C", "results": [result("a", description=[])]},
        {"crawler": "C", "results": [result("a", uploader={})]},
        {"crawler": "C", "results": [result("a", extra=[])]},
        {"crawler": "C", "results": [result("ok"), {"id": 7, "url": "u", "filename": "f"}]},
    ],
)
def test_malformed_batch_is_400(quiet_server: SDIServerProcess, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = call(quiet_server, "POST", "/crawler-results", raw=raw, token=token(quiet_server))
    assert reply.status == 400
    assert set(reply.body) == {"error"} and reply.body["error"]
    assert quiet_server.results() == []


def test_id_of_128_chars_is_fine(sdi_server: SDIServerProcess) -> None:
    assert outcomes(submit(sdi_server, [result("x" * 128)])) == [("x" * 128, "accepted")]


# --- status lookups -----------------------------------------------------------------------------


def test_status_by_urls(sdi_server: SDIServerProcess) -> None:
    access = token(sdi_server)
    submit(sdi_server, [result("a", "https://e.com/a")], access)
    assert sdi_server.set_status("https://e.com/a", 2) == 1
    reply = call(
        sdi_server,
        "POST",
        "/crawler-results/status",
        {"urls": ["https://e.com/a", "https://e.com/none"]},
        token=access,
    )
    assert reply.status == 200
    known, unknown = reply.body["results"]
    assert known | {"submitted_at": None} == {
        "url": "https://e.com/a",
        "status_code": 2,
        "status": "under_review",
        "description": "Queued for analyst review",
        "crawler": "MyCrawler",
        "submitted_at": None,
    }
    assert known["submitted_at"].endswith("Z")
    assert unknown == {"url": "https://e.com/none", "status_code": None, "status": "not_found"}


def test_status_by_urls_limit(quiet_server: SDIServerProcess) -> None:
    access = token(quiet_server)
    urls = [f"https://e.com/{n}" for n in range(1001)]
    reply = call(quiet_server, "POST", "/crawler-results/status", {"urls": urls}, token=access)
    assert reply.status == 400
    reply = call(
        quiet_server, "POST", "/crawler-results/status", {"urls": urls[:1000]}, token=access
    )
    assert len(reply.body["results"]) == 1000


def test_status_by_crawlers(sdi_server: SDIServerProcess) -> None:
    access = token(sdi_server)
    submit(sdi_server, [result("a", "https://e.com/a"), result("b")], access, crawler="One")
    sdi_server.set_status("https://e.com/a", 3)
    reply = call(
        sdi_server, "POST", "/crawler-results/status", {"crawlers": ["One", "Other"]}, token=access
    )
    assert reply.body == {
        "crawlers": [
            {"crawler": "One", "total": 2, "by_status": {"received": 1, "confirmed": 1}},
            {"crawler": "Other", "total": 0, "by_status": {}},
        ]
    }


@pytest.mark.parametrize("body", [{}, {"urls": "x"}, {"crawlers": [1]}, []])
def test_status_lookup_malformed(quiet_server: SDIServerProcess, body: Any) -> None:
    reply = call(quiet_server, "POST", "/crawler-results/status", body, token=token(quiet_server))
    assert reply.status == 400


def test_status_codes(quiet_server: SDIServerProcess) -> None:
    reply = call(quiet_server, "GET", "/status-codes", token=token(quiet_server))
    codes = reply.body["codes"]
    assert [(c["code"], c["name"]) for c in codes][:3] == [
        (0, "received"),
        (1, "processing"),
        (2, "under_review"),
    ]
    assert all(c["description"] for c in codes)


# --- restarts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_restart_keeps_results(sdi_server: SDIServerProcess, how: str) -> None:
    old = token(sdi_server)
    submit(sdi_server, [result("a")], old)
    url = sdi_server.url
    getattr(sdi_server, how)()
    assert not sdi_server.running
    sdi_server.start()
    assert sdi_server.url == url
    assert stored_ids(sdi_server) == ["a"]
    assert call(sdi_server, "GET", "/filters", token=old).status == 401
    assert outcomes(submit(sdi_server, [result("a")])) == [("a", "duplicate")]


def test_module_command_line(tmp_path: Path) -> None:
    """The documented ``python -m`` form prints exactly the listening line, then serves."""
    command = [
        sys.executable,
        "-m",
        "scrapy_sdi.testing.server",
        "--port",
        "0",
        "--db",
        str(tmp_path / "db"),
        "--user",
        "a:b",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(
                r"SDI reference server listening on (http://127\.0\.0\.1:\d+/api/v1)\n", line
            )
            assert match, line
            with urllib.request.urlopen(match.group(1) + "/health", timeout=10) as response:
                assert json.load(response)["status"] == "ok"
        finally:
            process.terminate()
        assert process.wait(10) == 0


def test_bad_option_fails_start(tmp_path: Path) -> None:
    server = SDIServerProcess(tmp_path, fail_rate=2)
    with pytest.raises(SDIServerError, match="exited early"):
        server.start()
    assert not server.running


# --- fault switches -----------------------------------------------------------------------------


def test_fail_rate(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(fail_rate=1, retry_after=3)
    reply = submit(server, [result("a")])
    assert (reply.status, reply.headers["Retry-After"]) == (503, "3")
    assert server.results() == []
    assert server.stats()["batches"] == {"503": 1}


def test_rate_limit(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(rate_limit_rate=1, retry_after=0.5)
    reply = submit(sdi_server, [result("a")])
    assert (reply.status, reply.headers["Retry-After"]) == (429, "0.5")
    assert sdi_server.results() == []


def test_random_faults_spare_other_calls(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(fail_rate=1, drop_before_rate=1)
    access = token(sdi_server)
    for method, path, body in [
        ("GET", "/health", None),
        ("GET", "/filters", None),
        ("GET", "/status-codes", None),
        ("POST", "/crawler-results/status", {"urls": ["u"]}),
    ]:
        assert call(sdi_server, method, path, body, token=access).status == 200


def test_fail_rate_is_a_fraction(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(fail_rate=0.5, seed=1)
    access = token(server)
    statuses = [submit(server, [result(str(n))], access).status for n in range(40)]
    assert 5 < statuses.count(503) < 35
    assert len(server.results()) == statuses.count(200)


def test_same_seed_same_faults(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    runs = []
    for _ in range(2):
        server = sdi_server_factory(fail_rate=0.5, seed=42)
        access = token(server)
        runs.append([submit(server, [result(str(n))], access).status for n in range(12)])
    assert runs[0] == runs[1]


def test_drop_before(sdi_server: SDIServerProcess) -> None:
    access = token(sdi_server)
    sdi_server.set_faults(drop_before_rate=1)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        submit(sdi_server, [result("a")], access)
    assert sdi_server.results() == []
    assert sdi_server.stats()["batches"] == {"dropped": 1}


def test_drop_after(sdi_server: SDIServerProcess) -> None:
    access = token(sdi_server)
    sdi_server.set_faults(drop_after_rate=1)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        submit(sdi_server, [result("a")], access)
    assert stored_ids(sdi_server) == ["a"]
    sdi_server.set_faults(drop_after_rate=0)
    assert outcomes(submit(sdi_server, [result("a")], access)) == [("a", "duplicate")]


def test_omit_stores_only_what_it_answers(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(omit_rate=0.5, seed=3)
    reply = submit(sdi_server, [result(str(n)) for n in range(40)])
    answered = [rid for rid, status in outcomes(reply)]
    assert 0 < len(answered) < 40
    assert stored_ids(sdi_server) == answered
    assert sdi_server.stats()["omitted"] == 40 - len(answered)


def test_reject_url_pattern(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(reject_url_pattern=r"/bad/")
    reply = submit(server, [result("a", "https://e.com/bad/a"), result("b")])
    rejected, accepted = reply.body["results"]
    assert (rejected["id"], rejected["status"]) == ("a", "rejected")
    assert rejected["reason"]
    assert (accepted["id"], accepted["status"]) == ("b", "accepted")
    assert stored_ids(server) == ["b"]
    assert server.stats()["rejected"] == 1


def test_a_result_already_accepted_stays_duplicate_when_its_url_is_rejected_later(
    sdi_server: SDIServerProcess,
) -> None:
    """The contract: resending an id the server accepted answers duplicate, whatever else."""
    access = token(sdi_server)
    assert outcomes(submit(sdi_server, [result("a", "https://e.com/bad/a")], access)) == [
        ("a", "accepted")
    ]
    sdi_server.set_faults(reject_url_pattern=r"/bad/")
    reply = submit(sdi_server, [result("a", "https://e.com/bad/a")], access)
    assert outcomes(reply) == [("a", "duplicate")]
    assert stored_ids(sdi_server) == ["a"]


def test_bad_request_url_pattern(sdi_server_factory: Callable[..., SDIServerProcess]) -> None:
    server = sdi_server_factory(bad_request_url_pattern="poison")
    access = token(server)
    reply = submit(server, [result("a"), result("p", "https://e.com/poison"), result("b")], access)
    assert reply.status == 400 and reply.body["error"]
    assert server.results() == []
    assert outcomes(submit(server, [result("a"), result("b")], access)) == [
        ("a", "accepted"),
        ("b", "accepted"),
    ]


def test_latency(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(latency=0.3)
    started = time.monotonic()
    assert call(sdi_server, "GET", "/health").status == 200
    assert time.monotonic() - started >= 0.3


def test_latency_does_not_block_the_reactor(sdi_server: SDIServerProcess) -> None:
    """Two delayed answers overlap: a blocking delay would serialize them (>= 2 s)."""
    sdi_server.set_faults(latency=1)
    parts = urlsplit(sdi_server.url)
    connections = [
        http.client.HTTPConnection(parts.hostname, parts.port, timeout=10) for _ in range(2)
    ]
    started = time.monotonic()
    for connection in connections:
        connection.request("GET", parts.path + "/health")
    assert [c.getresponse().status for c in connections] == [200, 200]
    assert 1 <= time.monotonic() - started < 1.8
    for connection in connections:
        connection.close()


def test_latency_spares_the_admin_api(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(latency=5)
    started = time.monotonic()
    assert sdi_server.results() == []
    assert time.monotonic() - started < 2


def test_admin_bodies_ignore_the_byte_limit(sdi_server: SDIServerProcess) -> None:
    sdi_server.set_faults(max_bytes=100)
    filters = [
        {"id": n, "field": "url", "kind": "domain", "pattern": f"d{n}.example"} for n in range(50)
    ]
    sdi_server.set_filters(filters)
    reply = call(sdi_server, "GET", "/filters", token=token(sdi_server))
    assert len(reply.body["filters"]) == 50


# --- admin API ----------------------------------------------------------------------------------


def test_stats_count_requests_and_logins(sdi_server: SDIServerProcess) -> None:
    login(sdi_server)
    call(sdi_server, "POST", "/auth/token", {"username": "x", "password": "y"})
    submit(sdi_server, [result("a")])
    stats = sdi_server.stats()
    assert stats["logins"] == 2 and stats["login_failures"] == 1
    assert stats["requests"]["/api/v1/auth/token"] == {"200": 2, "401": 1}
    assert stats["batches"] == {"200": 1}


def test_set_faults_validates(sdi_server: SDIServerProcess) -> None:
    with pytest.raises(SDIServerError, match="400"):
        sdi_server.set_faults(fail_rate=1.5)
    with pytest.raises(SDIServerError, match="unknown"):
        sdi_server.set_faults(no_such_fault=1)
    with pytest.raises(SDIServerError, match="400"):
        sdi_server.set_faults(reject_url_pattern="(")
    assert sdi_server.set_faults(token_max_uses=15, fail_rate=0.2)["token_max_uses"] == 15


def test_set_status_of_unknown_url(sdi_server: SDIServerProcess) -> None:
    with pytest.raises(SDIServerError, match="404"):
        sdi_server.set_status("https://e.com/none", 2)
    submit(sdi_server, [result("a", "https://e.com/a")])
    with pytest.raises(SDIServerError, match="400"):
        sdi_server.set_status("https://e.com/a", 99)


def test_fixture_settings(sdi_server: SDIServerProcess) -> None:
    assert sdi_server.settings == {
        "SDI_API_URL": sdi_server.url,
        "SDI_USERNAME": sdi_server.username,
        "SDI_PASSWORD": sdi_server.password,
    }
    assert sdi_server.url.endswith("/api/v1")
    assert sdi_server.db_path.exists()
    assert sdi_server.password not in repr(sdi_server)


# --- embedded in-process ------------------------------------------------------------------------


def _result(deferred: Any) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def test_build_site_in_process_with_a_fake_clock(tmp_path: Path) -> None:
    """``build_site`` embeds the server; a fake clock makes token expiry exact."""
    clock = Clock()
    config = ServerConfig(
        db_path=str(tmp_path / "db"), users={"u": "p"}, faults=Faults(token_lifetime=60)
    )
    site = build_site(config, clock=clock)
    stub = StubTreq(site.resource)
    base = "http://sdi.invalid/api/v1"

    def request(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = stub.request(method, base + path, **kwargs)
        stub.flush()
        response = _result(response)
        return response.code, _result(response.json())

    status, tokens = request("POST", "/auth/token", json={"username": "u", "password": "p"})
    assert (status, tokens["expires_in"]) == (200, 60)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    assert request("GET", "/status-codes", headers=bearer)[0] == 200
    clock.advance(60)
    assert request("GET", "/status-codes", headers=bearer) == (401, {"error": "token_expired"})
    site.resource.store.close()
