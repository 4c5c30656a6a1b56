"""SDIClient against the reference server over real loopback HTTP."""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted
from twisted.internet import defer

from scrapy_sdi.client import SDIClient
from scrapy_sdi.errors import (
    SDIAuthError,
    SDIBadRequest,
    SDIBatchTooLarge,
    SDIError,
    SDINetworkError,
    SDIRateLimited,
    SDIServiceError,
)
from scrapy_sdi.mapping import encode_batch, encode_result


class CountingStats:
    def __init__(self):
        self.values = {}

    def inc_value(self, key, count=1, start=0):
        self.values[key] = self.values.get(key, start) + count


def make_client(server, **kwargs):
    kwargs.setdefault("timeout", 5.0)
    return SDIClient(server.url, server.username, server.password, **kwargs)


def batch(*ids, url="https://files.example.com/a.mp3"):
    results = [
        encode_result(
            {
                "url": url,
                "filename": "a.mp3",
                "referrer": None,
                "description": None,
                "uploader": None,
                "crawled_at": "2026-11-22T18:15:51Z",
                "extra": {},
            },
            i,
        )
        for i in ids
    ]
    return encode_batch("tests", results)


@pytest_twisted.ensureDeferred
async def test_login_and_every_call(sdi_server):
    client = make_client(sdi_server)
    try:
        assert (await client.health())["status"] == "ok"
        await client.login()
        data = await client.filters()
        assert isinstance(data["filters"], list)
        assert await client.filters(data["version"]) is None  # 304 when unchanged
        outcomes = await client.submit(batch("a1", "a2"))
        assert [(o.id, o.status) for o in outcomes] == [("a1", "accepted"), ("a2", "accepted")]
        again = await client.submit(batch("a1"))
        assert [(o.id, o.status) for o in again] == [("a1", "duplicate")]
        status = await client.status_by_urls(
            ["https://files.example.com/a.mp3", "https://nowhere.example/x"]
        )
        assert {s["status"] for s in status} == {"received", "not_found"}
        crawlers = await client.status_by_crawlers(["tests"])
        assert crawlers[0]["crawler"] == "tests" and crawlers[0]["total"] == 2
        codes = await client.status_codes()
        assert any(c["code"] == 0 for c in codes)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_status_lookup_is_chunked_at_1000(sdi_server):
    client = make_client(sdi_server)
    try:
        urls = [f"https://nowhere.example/{i}" for i in range(2500)]
        found = await client.status_by_urls(urls)
        assert len(found) == 2500
        assert sdi_server.stats()["requests"]["/api/v1/crawler-results/status"]["200"] == 3
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_bad_credentials_raise_auth_error_without_the_password(sdi_server):
    client = SDIClient(sdi_server.url, sdi_server.username, "wrong-secret-value", timeout=5)
    try:
        with pytest.raises(SDIAuthError) as info:
            await client.login()
        assert "wrong-secret-value" not in str(info.value)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_401_mid_run_triggers_a_refresh(sdi_server):
    stats = CountingStats()
    client = make_client(sdi_server, stats=stats)
    try:
        await client.login()
        sdi_server.set_faults(token_max_uses=1)
        await client.status_codes()  # the token's one use
        await client.status_codes()  # 401, refresh, resend
        assert stats.values["sdi/auth/refreshes"] == 1
        assert stats.values["sdi/auth/logins"] == 1
        assert sdi_server.stats()["refreshes"] == 1
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_refused_refresh_falls_back_to_login(sdi_server):
    stats = CountingStats()
    client = make_client(sdi_server, stats=stats)
    try:
        await client.login()
        sdi_server.revoke_tokens()  # access and refresh tokens both refused now
        await client.status_codes()
        assert stats.values["sdi/auth/logins"] == 2
        assert stats.values.get("sdi/auth/refreshes", 0) == 0
        assert sdi_server.stats()["refresh_failures"] == 1
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_status_errors_map_to_the_hierarchy(sdi_server_factory):
    server = sdi_server_factory(max_results=2, bad_request_url_pattern="poison")
    client = make_client(server)
    try:
        with pytest.raises(SDIBatchTooLarge) as too_large:
            await client.submit(batch("b1", "b2", "b3"))
        assert too_large.value.max_results == 2
        with pytest.raises(SDIBadRequest):
            await client.submit(batch("p1", url="https://files.example.com/poison.mp3"))
        server.set_faults(rate_limit_rate=1.0, retry_after=7)
        with pytest.raises(SDIRateLimited) as limited:
            await client.submit(batch("c1"))
        assert limited.value.retry_after == 7
        server.set_faults(rate_limit_rate=0.0, fail_rate=1.0)
        with pytest.raises(SDIServiceError) as failed:
            await client.submit(batch("c1"))
        assert failed.value.status == 503 and failed.value.retryable
        server.set_faults(fail_rate=0.0, drop_before_rate=1.0)
        with pytest.raises(SDINetworkError):
            await client.submit(batch("c1"))
        assert all(
            issubclass(e, SDIError)
            for e in (
                SDIBatchTooLarge,
                SDIBadRequest,
                SDIRateLimited,
                SDINetworkError,
                SDIAuthError,
            )
        )
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_timeout_and_refused_connection_are_network_errors(sdi_server_factory):
    server = sdi_server_factory(latency=3)
    client = make_client(server, timeout=0.5)
    try:
        with pytest.raises(SDINetworkError, match="no answer within 0.5s"):
            await client.health()
    finally:
        await client.close()
    server.stop()
    client = make_client(server)
    try:
        with pytest.raises(SDINetworkError):
            await client.health()
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_large_bodies_are_gzipped_and_accepted(sdi_server):
    client = make_client(sdi_server, compression_min_bytes=1000)
    large, small = batch(*(f"g{i}" for i in range(50))), batch("s1")
    assert len(small) < 1000 <= len(large)
    try:
        outcomes = await client.submit(large)
        assert len(outcomes) == 50 and all(o.status == "accepted" for o in outcomes)
        assert [o.status for o in await client.submit(small)] == ["accepted"]
    finally:
        await client.close()
    gzipped, plain = sdi_server.received()
    # the large body went gzip-compressed, and the server unpacked exactly the batch sent
    assert gzipped["content_encoding"] == "gzip" and gzipped["wire_bytes"] < gzipped["body_bytes"]
    assert (gzipped["body_bytes"], gzipped["body_sha256"]) == (
        len(large),
        hashlib.sha256(large).hexdigest(),
    )
    # a body under the threshold goes as it is
    assert plain["content_encoding"] is None and plain["wire_bytes"] == plain["body_bytes"] == len(
        small
    )
    assert plain["body_sha256"] == hashlib.sha256(small).hexdigest()


@pytest_twisted.ensureDeferred
async def test_20_concurrent_calls_during_expiry_cause_exactly_one_refresh(sdi_server):
    stats = CountingStats()
    client = make_client(sdi_server, stats=stats)
    try:
        await client.login()
        sdi_server.revoke_tokens(access_only=True)  # every call now meets a 401 first
        answers = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(client.status_codes()) for _ in range(20)]
        )
        assert len(answers) == 20 and all(answers)
        assert stats.values["sdi/auth/refreshes"] == 1
        assert stats.values["sdi/auth/logins"] == 1
        assert sdi_server.stats()["refreshes"] == 1
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_the_aiohttp_transport_speaks_the_same_contract(sdi_server):
    from scrapy_sdi.transport import AiohttpTransport

    stats = CountingStats()
    client = make_client(
        sdi_server, transport=AiohttpTransport(), stats=stats, compression_min_bytes=100
    )
    try:
        outcomes = await client.submit(batch(*(f"h{i}" for i in range(30))))
        assert {o.status for o in outcomes} == {"accepted"} and len(outcomes) == 30
        sdi_server.revoke_tokens(access_only=True)
        assert await client.status_codes()
        assert stats.values["sdi/auth/refreshes"] == 1
        sdi_server.set_faults(rate_limit_rate=1.0, retry_after=3)
        with pytest.raises(SDIRateLimited) as limited:
            await client.submit(batch("h0"))
        assert limited.value.retry_after == 3
    finally:
        await client.close()
    sdi_server.stop()
    client = make_client(sdi_server, transport=AiohttpTransport())
    try:
        with pytest.raises(SDINetworkError):
            await client.health()
    finally:
        await client.close()
