"""Every fault the reference server can inject, alone and all mixed: every result stored exactly once.

The scenarios are independent (a server and a buffer each), so they run side by side: a crawl
spends most of its few seconds waiting, and one after the other they would cost the suite a
minute. Each scenario also proves that its fault really hit (a status seen, a counter of the
server), so a fault that silently stopped firing cannot make the suite pass on a quiet server.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.harness import (
    PIPELINE_OPEN_LINE,
    Crawl,
    crawl_settings,
    failed_attempts,
    result_urls,
    stored_figures,
    wait_until,
)

#: Seconds the server holds its answers in the slow episodes: beyond SLOW_TIMEOUT.
SLOW_LATENCY = 2.0
#: SDI_TIMEOUT of the scenarios with slow answers.
SLOW_TIMEOUT = 1


@dataclass
class Scenario:
    fault: str
    setting: str
    server: dict[str, Any]  # fault flags of the reference server
    proof: Callable[
        [dict[str, Any], dict[str, Any]], None
    ]  # (server stats, crawl stats): the fault hit
    settings: dict[str, Any] = field(default_factory=dict)  # extra crawl settings
    during: Callable[[Any, Crawl, int], None] | None = None  # drives the fault while the crawl runs
    gates: int = 0  # parts of the results ``during`` holds back until its faults are set up


# --- faults driven while a crawl runs --------------------------------------------------------


def revoke_tokens_twice(server, crawl: Crawl, n: int) -> None:
    """Revoke every token (the client must log in again), then only access tokens (a refresh does).

    Each revocation opens a gate (two gates): the results behind it are surely left to meet the
    revoked tokens, however fast the earlier ones were delivered.
    """
    assert crawl.wait_for_line(PIPELINE_OPEN_LINE), "the crawl ended before its pipeline opened"
    before = server.stats()
    server.revoke_tokens()
    crawl.open_gate()
    wait_until(
        lambda: server.stats()["logins"] > before["logins"], "a new login after the revocation"
    )
    before = server.stats()
    server.revoke_tokens(access_only=True)
    crawl.open_gate()
    wait_until(
        lambda: server.stats()["refreshes"] > before["refreshes"],
        "a refresh after the access tokens were revoked",
    )


def answer_too_late_for_a_while(server, crawl: Crawl, n: int, *, until_resent: bool = True) -> None:
    """Hold every answer beyond SDI_TIMEOUT until a batch timed out (the crawl's audit log says so)
    and, ``until_resent``, a batch stored before its answer was late came back (answered duplicate).

    Waiting for the timeout alone is not enough on a loaded machine: the batches that timed out
    may all have been given up before the server read them, so nothing stored was resent. Among
    the other faults, a token used up during the episode is refused too late to be renewed, so
    nothing more is stored until it ends: there only the timeout is waited for.
    """
    latency = server.options.get("latency", 0.0)
    assert crawl.wait_for_line(PIPELINE_OPEN_LINE), "the crawl ended before its pipeline opened"
    server.set_faults(latency=SLOW_LATENCY)
    crawl.open_gate()  # one gate: the results behind it meet the slow answers
    try:
        wait_until(
            lambda: failed_attempts(crawl.audit(), "no answer within"), "a batch that timed out"
        )
        if until_resent:
            wait_until(
                lambda: server.stats()["duplicates"] > 0,
                "a batch stored, answered too late, and resent",
            )
    finally:
        server.set_faults(latency=latency)


def revoke_and_slow(server, crawl: Crawl, n: int) -> None:
    revoke_tokens_twice(server, crawl, n)
    answer_too_late_for_a_while(server, crawl, n, until_resent=False)


# --- proofs that a fault hit -----------------------------------------------------------------


def _crawler_results(server_stats: dict[str, Any]) -> dict[str, int]:
    return server_stats["requests"].get("/api/v1/crawler-results", {})


def answered(status: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def proof(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
        assert stats.get(f"sdi/response_status_count/{status}", 0) > 0, (
            f"the crawl never got a {status}"
        )
        assert stats["sdi/batches_failed"] > 0

    return proof


def dropped(duplicates: bool) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def proof(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
        assert server_stats["batches"].get("dropped", 0) > 0, "no connection was dropped"
        assert stats["sdi/batches_failed"] > 0
        if duplicates:  # stored, then dropped: the resend is answered duplicate
            assert server_stats["duplicates"] > 0

    return proof


def omitted(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
    assert server_stats["omitted"] > 0, "no result was left out of an answer"


def token_renewed(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
    assert _crawler_results(server_stats).get("401", 0) > 0, "no batch was refused for its token"
    assert server_stats["refreshes"] > 0 and stats.get("sdi/auth/refreshes", 0) > 0


def tokens_revoked(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
    assert server_stats["refresh_failures"] > 0, "the revoked refresh token was never tried"
    assert server_stats["logins"] >= 2 and server_stats["refreshes"] > 0


def timed_out(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
    assert stats["sdi/batches_failed"] > 0
    assert server_stats["duplicates"] > 0, (
        "a batch stored but answered too late must come back as duplicate"
    )


def garbled(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
    assert server_stats["garbled"] >= 4, "every kind of broken answer at least once"
    assert stats["sdi/batches_failed"] > 0


def everything(server_stats: dict[str, Any], stats: dict[str, Any]) -> None:
    # each fault's own proof is in its own scenario; the mix must show many of them at once
    requests = _crawler_results(server_stats)
    kinds = [
        status for status in ("503", "429", "401", "413", "dropped") if requests.get(status, 0)
    ]
    kinds += [name for name in ("omitted", "garbled") if server_stats[name]]
    assert len(kinds) >= 4, f"only {kinds} were seen"
    assert stats["sdi/batches_failed"] > 0 and stats["sdi/retries"] > 0
    assert stats.get("sdi/auth/refreshes", 0) + stats.get("sdi/auth/logins", 0) > 1


SCENARIOS = [
    Scenario(
        "API error 5xx",
        "`fail_rate` 0.3 (503)",
        {"fail_rate": 0.3, "retry_after": 0.05},
        answered("503"),
    ),
    Scenario(
        "throttled: 429 with Retry-After",
        "`rate_limit_rate` 0.3, Retry-After 0.2 s",
        {"rate_limit_rate": 0.3, "retry_after": 0.2},
        answered("429"),
    ),
    Scenario(
        "connection dropped before storing",
        "`drop_before_rate` 0.3",
        {"drop_before_rate": 0.3},
        dropped(False),
    ),
    Scenario(
        "connection dropped after storing",
        "`drop_after_rate` 0.3",
        {"drop_after_rate": 0.3},
        dropped(True),
    ),
    Scenario(
        "results missing from the answer", "`omit_rate` 0.1 per result", {"omit_rate": 0.1}, omitted
    ),
    Scenario("token used up", "`token_max_uses` 5", {"token_max_uses": 5}, token_renewed),
    Scenario(
        "token expired",
        "`token_lifetime` 0.3 s (answers delayed 0.1 s)",
        {"token_lifetime": 0.3, "latency": 0.1},
        token_renewed,
    ),
    Scenario(
        "tokens revoked",
        "all tokens, then access tokens only, as delivery starts",
        {"latency": 0.1},
        tokens_revoked,
        during=revoke_tokens_twice,
        gates=2,
    ),
    Scenario(
        "answers slower than `SDI_TIMEOUT`",
        f"answers held {SLOW_LATENCY:g} s > `SDI_TIMEOUT` {SLOW_TIMEOUT} s until a batch timed out",
        {},
        timed_out,
        settings={"SDI_TIMEOUT": SLOW_TIMEOUT},
        during=answer_too_late_for_a_while,
        gates=1,
    ),
    Scenario(
        "garbled answers",
        "`garble_rate` 0.4 (stored, then a broken 200)",
        {"garble_rate": 0.4},
        garbled,
    ),
    Scenario(
        "all of the above mixed",
        "5xx 0.2, 429 0.1, drops 0.1 + 0.1, omit 0.1, garble 0.1, token 15 uses, 413 above 40 results,"
        " revocations, a slow episode; batches of 100",
        {
            "fail_rate": 0.2,
            "rate_limit_rate": 0.1,
            "retry_after": 0.2,
            "drop_before_rate": 0.1,
            "drop_after_rate": 0.1,
            "omit_rate": 0.1,
            "garble_rate": 0.1,
            "token_max_uses": 15,
            "max_results": 40,
        },
        everything,
        settings={"SDI_TIMEOUT": SLOW_TIMEOUT, "SDI_BATCH_SIZE": 100},
        during=revoke_and_slow,
        gates=3,
    ),
]


def test_each_server_fault_alone_and_all_mixed_store_every_result_exactly_once(
    form,
    sdi_server_factory,
    crawls,
    rng,
    tmp_path,
    reliability_report,
):
    """A fault may make the client send a result twice (at-least-once), never store it twice or lose it."""
    n = form.results
    rows = {s.fault: reliability_report.row(form, s.fault, s.setting) for s in SCENARIOS}
    failures: list[str] = []
    for run in range(form.runs):
        started = []
        for number, scenario in enumerate(SCENARIOS):
            seed = rng.randrange(2**31)
            server = sdi_server_factory(seed=seed, **scenario.server)
            workdir = tmp_path / f"run{run}-scenario{number}"
            settings = crawl_settings(
                server,
                workdir / "buffer.db",
                SDI_AUDIT_LOG=str(workdir / "audit.jsonl"),
                **scenario.settings,
            )
            started.append(
                (
                    scenario,
                    seed,
                    server,
                    crawls.start(workdir, settings, {"n": n}, gates=scenario.gates),
                )
            )
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            driving = [
                (s, seed, pool.submit(s.during, server, crawl, n))
                for s, seed, server, crawl in started
                if s.during
            ]
        for scenario, seed, future in driving:
            if future.exception() is not None:
                failures.append(
                    f"{scenario.fault} (run {run}, server seed {seed}): {future.exception()}"
                )
        for scenario, seed, server, crawl in started:
            result = crawl.finish()
            figures = stored_figures(server, result_urls(n))
            rows[scenario.fault].add(figures)
            try:
                assert result.returncode == 0, result.log[-3000:]
                assert "Traceback" not in result.log, result.log[-3000:]
                assert figures.exactly_once, figures.describe()
                assert result.stats["sdi/items_buffered"] == n
                assert (
                    result.stats["sdi/items_delivered"] == n
                )  # each row acknowledged once, by its outcome
                assert result.stats["sdi/pending_at_close"] == 0
                scenario.proof(server.stats(), result.stats)
            except AssertionError as exc:
                failures.append(f"{scenario.fault} (run {run}, server seed {seed}): {exc}")
            server.stop()
    assert not failures, "\n\n".join(failures)
