"""Random interleavings against the promises: one buffer file, crawl processes killed and restarted.

hypothesis drives real crawl processes (``tests/support/pipeline_worker.py``: the real
SDIPipeline on a real SQLite file) and the reference server over loopback through random
sequences of: results arriving (new URLs and URLs seen before), the delivery loop working, the
API failing, omitting results, storing and then dropping the answer, rejecting some results,
tokens revoked, the API's filters changing, the process killed with SIGKILL and restarted on the
same file, and rejected rows requeued. After every step, and once the API is healthy again and a
last process has drained the buffer:

* no URL is stored twice by the API;
* no stored result matches the filters that were current when it was sent;
* every result that arrived is stored once, or kept as filtered or rejected: none is lost;
* the buffer's figures add up: every URL buffered for delivery is delivered, rejected or
  filtered when it was about to be sent, and nothing is left pending.

The default run is short; ``--long`` runs many more and longer sequences.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from scrapy_sdi.testing.pytest_plugin import SDIServerProcess
from tests.support.crawl import ROOT

HOSTS = ("a.example.com", "b.example.com", "c.example.org")
EXTENSIONS = ("mp3", "tmp")
#: The filters a step may switch on, each matched by the oracle below (not by scrapy_sdi's matcher).
CANDIDATE_FILTERS = (
    {"id": 1, "field": "url", "kind": "domain", "pattern": "a.example.com"},
    {"id": 2, "field": "filename", "kind": "glob", "pattern": "*.tmp"},
    {"id": 3, "field": "url", "kind": "regex", "pattern": "/f/[0-9]*3/"},
)
REJECTED_PATTERN = r"/f/[0-9]*7/"
HEALTHY = {
    "fail_rate": 0.0,
    "omit_rate": 0.0,
    "drop_after_rate": 0.0,
    "rate_limit_rate": 0.0,
    "reject_url_pattern": None,
    "retry_after": 0.1,
}
STEP_TIMEOUT = 60.0


def result_url(i: int) -> str:
    return f"https://{HOSTS[i % len(HOSTS)]}/f/{i}/file{i}.{EXTENSIONS[(i // 3) % 2]}"


def excluded(filters: list[dict[str, Any]], url: str) -> bool:
    """The contract's meaning of the candidate filters, written independently of scrapy_sdi."""
    filename = urlsplit(url).path.rsplit("/", 1)[-1]
    host = (urlsplit(url).hostname or "").lower()
    matches = {
        "domain": lambda pattern: host == pattern or host.endswith("." + pattern),
        "glob": lambda pattern: fnmatch.fnmatchcase(filename.lower(), pattern.lower()),
        "regex": lambda pattern: re.search(pattern, url) is not None,
    }
    return any(matches[f["kind"]](f["pattern"]) for f in filters if f["kind"] in matches)


class Worker:
    """One crawl process on the shared buffer file, answering one JSON line per command."""

    def __init__(self, settings_: dict[str, Any], log: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        self.log = log
        with open(log, "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.pipeline_worker", json.dumps(settings_)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=log.parent,
                env=env,
            )
        self.read()  # ready

    def read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(STEP_TIMEOUT)
            raise AssertionError(
                f"the worker died (exit {self.proc.returncode}); see {self.log}:\n{self.log.read_text()[-3000:]}"
            )
        answer = json.loads(line)
        assert "error" not in answer, f"{answer['error']}; see {self.log}"
        return answer

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.read()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STEP_TIMEOUT)


@pytest.fixture(scope="module")
def machine_server(tmp_path_factory):
    server = SDIServerProcess(tmp_path_factory.mktemp("sm-server")).start()
    yield server
    server.stop()


def test_random_interleavings_keep_every_promise(machine_server, tmp_path_factory, request):
    long_form = request.config.getoption("--long")
    server = machine_server

    class DeliveryMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.crawler = "sm-" + uuid.uuid4().hex[:10]
            self.dir = tmp_path_factory.mktemp("sm")
            self.buffer_path = self.dir / "buffer.db"
            self.next_i = 0
            self.arrived: set[str] = set()
            self.filters: list[dict[str, Any]] = []
            #: (how many of this crawler's results the API had stored when the filters changed, filters)
            self.epochs: list[tuple[int, list[dict[str, Any]]]] = [(0, [])]
            self.kills = 0
            server.set_faults(**HEALTHY)
            server.set_filters([], version=self.crawler + "-0")
            self.worker = self._start()

        def _start(self) -> Worker:
            return Worker(
                {
                    **server.settings,
                    "SDI_CRAWLER_NAME": self.crawler,
                    "SDI_BUFFER_PATH": str(self.buffer_path),
                    "SDI_BATCH_SIZE": 5,
                    "SDI_CONCURRENT_REQUESTS": 2,
                    "SDI_TIMEOUT": 1.0,
                    "SDI_LEASE_TIMEOUT": 2.0,
                    "SDI_RETRY_BACKOFF_BASE": 0.02,
                    "SDI_RETRY_BACKOFF_MAX": 0.2,
                    "SDI_RETRY_TIMES": 2,
                    "SDI_UNLOCK_DELAY": 0.3,
                    "SDI_FILTERS_REFRESH_INTERVAL": 0,
                    "SDI_CLOSE_TIMEOUT": 30,
                    "SDI_LOG_INTERVAL": 0,
                    "LOG_LEVEL": "WARNING",
                },
                self.dir / "worker.log",
            )

        def stored(self) -> list[dict[str, Any]]:
            return [r for r in server.results() if r["crawler"] == self.crawler]

        # -- steps ----------------------------------------------------------------------------

        @rule(new=st.integers(1, 15), again=st.integers(0, 3))
        def results_arrive(self, new: int, again: int) -> None:
            urls = [result_url(i) for i in range(self.next_i, self.next_i + new)]
            self.next_i += new
            urls += sorted(self.arrived)[:again]  # found again: buffered once at most
            self.arrived.update(urls)
            answer = self.worker.call("arrive", urls=urls)
            assert sum(answer.values()) == len(urls)

        @rule(seconds=st.sampled_from([0.05, 0.2, 0.5]))
        def delivery_works(self, seconds: float) -> None:
            self.worker.call("run", seconds=seconds)

        @rule(
            fail=st.sampled_from([0.0, 0.3]),
            omit=st.sampled_from([0.0, 0.3]),
            drop_after=st.sampled_from([0.0, 0.3]),
            throttle=st.sampled_from([0.0, 0.3]),
            reject=st.booleans(),
        )
        def the_api_misbehaves(
            self, fail: float, omit: float, drop_after: float, throttle: float, reject: bool
        ) -> None:
            server.set_faults(
                fail_rate=fail,
                omit_rate=omit,
                drop_after_rate=drop_after,
                rate_limit_rate=throttle,
                retry_after=0.1,
                reject_url_pattern=REJECTED_PATTERN if reject else None,
            )

        @rule(access_only=st.booleans())
        def tokens_are_revoked(self, access_only: bool) -> None:
            server.revoke_tokens(access_only=access_only)

        @rule(chosen=st.sets(st.sampled_from(range(len(CANDIDATE_FILTERS)))))
        def the_filters_change(self, chosen: set[int]) -> None:
            self.filters = [CANDIDATE_FILTERS[k] for k in sorted(chosen)]
            server.set_filters(self.filters, version=f"{self.crawler}-{len(self.epochs)}")
            self.worker.call(
                "refresh"
            )  # waits for the batches in flight: what is sent next sees them
            self.epochs.append((len(self.stored()), self.filters))

        @rule(after=st.sampled_from([0.0, 0.05, 0.15, 0.3]))
        def the_process_is_killed_and_restarted(self, after: float) -> None:
            self.worker.send("run", seconds=1.0)
            time.sleep(after)  # a random moment of the delivery loop's work: the point of the step
            self.worker.kill()
            self.kills += 1
            self.worker = self._start()

        @rule()
        def rejected_rows_are_requeued(self) -> None:
            self.worker.call("requeue")

        # -- promises -------------------------------------------------------------------------

        @invariant()
        def nothing_stored_twice_nor_sent_while_excluded(self) -> None:
            stored = self.stored()
            urls = Counter(r["url"] for r in stored)
            assert not [u for u, n in urls.items() if n > 1], "stored twice"
            for index, result in enumerate(stored):
                filters = [f for start, f in self.epochs if start <= index][-1]
                assert not excluded(filters, result["url"]), (
                    f"{result['url']} was sent while {filters} excluded it"
                )

        def teardown(self) -> None:
            try:
                server.set_faults(**HEALTHY)
                stats = self.worker.call("close")
                self.worker.proc.wait(STEP_TIMEOUT)
                self.nothing_stored_twice_nor_sent_while_excluded()
                self._every_result_accounted_for(stats)
            finally:
                if self.worker.proc.poll() is None:
                    self.worker.kill()

        def _every_result_accounted_for(self, stats: dict[str, Any]) -> None:
            assert stats.get("sdi/pending_at_close") == 0, stats
            stored = {r["url"] for r in self.stored()}
            with sqlite3.connect(self.buffer_path) as db:
                rows = db.execute(
                    "SELECT url, state FROM results WHERE crawler = ?", (self.crawler,)
                ).fetchall()
            states: dict[str, set[str]] = {}
            for url, state in rows:
                states.setdefault(url, set()).add(state)
            lost = [
                u
                for u in self.arrived
                if u not in stored and not states.get(u, set()) & {"filtered", "rejected"}
            ]
            assert not lost, f"lost: {lost[:5]}"
            left = [u for u, s in states.items() if s & {"pending", "in_flight"}]
            assert not left, f"left undelivered: {left[:5]}"
            delivered = {u for u, s in states.items() if "delivered" in s}
            assert delivered == stored, "what the buffer counts as delivered is what the API stored"
            rejected_stored = [u for u, s in states.items() if "rejected" in s and u in stored]
            assert not rejected_stored

    DeliveryMachine.TestCase.settings = settings(
        max_examples=40 if long_form else int(os.environ.get("SDI_STATE_MACHINE_EXAMPLES", 12)),
        stateful_step_count=30 if long_form else 15,
        deadline=None,
        database=None,
        # a real system is not repeatable enough to shrink: report the first failing sequence as it ran
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    run_state_machine_as_test(DeliveryMachine, settings=DeliveryMachine.TestCase.settings)
