"""Prometheus metrics of a buffer (a file, or a PostgreSQL database), for fleets watched from Prometheus rather than a dashboard.

A Scrapyd host or a container runs many jobs whose dashboards nobody opens; Prometheus scrapes
``/metrics`` of ``scrapy sdi dashboard``, or node_exporter's textfile collector reads the file
``scrapy sdi metrics --output`` writes from cron. Both render the same collector: it reads the
buffer when it is scraped, so no value is older than the scrape, and it lives in a registry of
its own, apart from anything else the process registers in prometheus_client's global one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    write_to_textfile,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from scrapy_sdi.buffer import IN_FLIGHT, PENDING
from scrapy_sdi.filter_source import CACHE_KEY, cached_filters_info
from scrapy_sdi.status import buffer_status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client import Metric

    from scrapy_sdi.buffer import Buffer

__all__ = [
    "CONTENT_TYPE_LATEST",
    "METRICS",
    "BufferCollector",
    "help_text",
    "new_registry",
    "render",
    "write_file",
]


@dataclass(frozen=True)
class MetricDoc:
    """One metric as documented: the README's table and ``scrapy sdi metrics --help`` print these."""

    name: str
    type: str
    labels: tuple[str, ...]
    meaning: str

    @property
    def signature(self) -> str:
        return self.name + (f"{{{','.join(self.labels)}}}" if self.labels else "")


ROWS, OLDEST, SIZE, FILTERS_AGE, FILTERS_INFO, FILTERS_COUNT, API_UP = METRICS = (
    MetricDoc(
        "sdi_buffer_rows",
        "gauge",
        ("crawler", "state"),
        "rows in the buffer, per crawler and state (every state, zeros included)",
    ),
    MetricDoc(
        "sdi_buffer_oldest_pending_age_seconds",
        "gauge",
        ("crawler",),
        "seconds since the crawler's oldest pending or in-flight row was buffered; 0 when none waits",
    ),
    MetricDoc(
        "sdi_buffer_size_bytes",
        "gauge",
        (),
        "bytes on disk of the buffer file and its write-ahead log (PostgreSQL: its tables and indexes)",
    ),
    MetricDoc(
        "sdi_filters_age_seconds",
        "gauge",
        (),
        "seconds since the filters cached in the buffer were fetched from the API; absent when none are cached",
    ),
    MetricDoc(
        "sdi_filters_info",
        "info",
        ("version",),
        "always 1; its label is the version of the cached filters",
    ),
    MetricDoc("sdi_filters_count", "gauge", (), "number of cached filters"),
    MetricDoc(
        "sdi_api_up",
        "gauge",
        (),
        "1 when the API answered GET /health, else 0; absent when no SDI_API_URL is set (or with --no-api)",
    ),
)


class BufferCollector(Collector):
    """Reads the buffer at each collection; ``api_up`` says whether the API answers (None: unknown)."""

    def __init__(
        self, open_buffer: Callable[[], Buffer], api_up: Callable[[], bool | None] = lambda: None
    ) -> None:
        self._open_buffer = open_buffer
        self._api_up = api_up

    def describe(self) -> list[Metric]:
        return []  # registering must not read the buffer (prometheus_client collects when describe is missing)

    def collect(self) -> Iterator[Metric]:
        buffer = self._open_buffer()
        try:
            families = list(_buffer_families(buffer, time.time()))
        finally:
            buffer.close()
        yield from families
        up = self._api_up()
        if up is not None:
            yield GaugeMetricFamily(API_UP.name, API_UP.meaning, value=1 if up else 0)


def _buffer_families(buffer: Buffer, now: float) -> Iterator[Metric]:
    status = buffer_status(buffer)
    rows = GaugeMetricFamily(ROWS.name, ROWS.meaning, labels=ROWS.labels)
    oldest = GaugeMetricFamily(OLDEST.name, OLDEST.meaning, labels=OLDEST.labels)
    for crawler, counts in sorted(status.by_crawler.items()):
        for state, n in counts.items():
            rows.add_metric([crawler, state], n)
        waiting = counts[PENDING] + counts[IN_FLIGHT]
        age = buffer.oldest_pending_age(crawler) if waiting else None
        oldest.add_metric([crawler], age or 0.0)
    yield rows
    yield oldest
    if status.size_bytes is not None:
        yield GaugeMetricFamily(SIZE.name, SIZE.meaning, value=status.size_bytes)
    filters = cached_filters_info(buffer.get_meta(CACHE_KEY))
    if filters is None:
        return
    if filters["fetched_at"] is not None:
        yield GaugeMetricFamily(
            FILTERS_AGE.name, FILTERS_AGE.meaning, value=max(0.0, now - filters["fetched_at"])
        )
    yield InfoMetricFamily(
        FILTERS_INFO.name.removesuffix("_info"),
        FILTERS_INFO.meaning,
        value={"version": filters["version"] or ""},
    )
    if filters["count"] is not None:
        yield GaugeMetricFamily(FILTERS_COUNT.name, FILTERS_COUNT.meaning, value=filters["count"])


def new_registry(collector: BufferCollector) -> CollectorRegistry:
    """A registry holding only our collector (the global one would add process and GC metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
    return generate_latest(registry)


def write_file(path: str, registry: CollectorRegistry) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``.

    node_exporter's textfile collector may read the file at any moment: the rename means it
    sees the whole previous file or the whole new one, never half of one.
    """
    write_to_textfile(path, registry)


def help_text() -> str:
    """The metrics, one a line: name{labels}, type, meaning (for ``--help``)."""
    width = max(len(doc.signature) for doc in METRICS)
    return "\n".join(f"  {doc.signature:<{width}}  {doc.type:<5}  {doc.meaning}" for doc in METRICS)
