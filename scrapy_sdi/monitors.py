"""Spidermon monitors for SDI delivery: ``SPIDERMON_SPIDER_CLOSE_MONITORS = ["scrapy_sdi.monitors.SDIMonitorSuite"]``.

They read the ``sdi/`` stats, which are final when Spidermon's ``spider_closed`` handler runs
(the pipeline's final flush happens in ``close_spider``, before ``spider_closed``). Spidermon is
optional: ``pip install scrapy_sdi[monitoring]``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

try:
    from spidermon import Monitor, MonitorSuite, monitors
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without spidermon
    raise ImportError(
        "scrapy_sdi.monitors needs spidermon: pip install scrapy_sdi[monitoring]"
    ) from exc

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.settings import SDISettings

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def read_settings(crawler: Crawler) -> SDISettings:
    """The crawler's validated SDI settings; a bad value is logged as one ERROR line, then raised."""
    try:
        return SDISettings.from_settings(
            crawler.settings, getattr(crawler.spidercls, "name", None) or "", require_api=False
        )
    except SDIConfigError as exc:
        logger.error("Bad scrapy_sdi setting: %(error)s", {"error": exc})
        raise


class _SDIMonitor(Monitor):
    """Reads the crawler's SDI settings and the sdi/ stats; skips when scrapy_sdi did not run."""

    def __init__(self, methodName: str = "runTest", name: str | None = None) -> None:
        super().__init__(methodName, name)
        self._sdi: SDISettings | None = None

    @property
    def sdi(self) -> SDISettings:
        """The crawler's SDI settings, read by ``setUp``."""
        if self._sdi is None:
            raise RuntimeError("the SDI settings are read in setUp, which has not run")
        return self._sdi

    def setUp(self) -> None:
        self._sdi = read_settings(self.data.crawler)
        if not self.sdi.enabled:
            self.skipTest("SDI_ENABLED is False")
        if "sdi/items_buffered" not in self.data.stats:
            self.skipTest("no sdi/ stats: SDIPipeline did not run")

    def stat(self, key: str) -> Any:
        return self.data.stats.get(key, 0)


@monitors.name("SDI pending at close")
class SDIPendingAtCloseMonitor(_SDIMonitor):
    """No result is left pending in the buffer when the spider closes."""

    @monitors.name("no result left pending")
    def test_no_result_left_pending(self) -> None:
        pending = self.stat("sdi/pending_at_close")
        if pending > 0:
            self.fail(
                f"{pending} results were still pending at close (sdi/pending_at_close = {pending}) "
                f"after SDI_CLOSE_TIMEOUT = {self.sdi.close_timeout:g} s; the next run delivers them, "
                "or `scrapy sdi flush` does"
            )


@monitors.name("SDI rejected results")
class SDIRejectedRatioMonitor(_SDIMonitor):
    """The API rejects at most SDI_MONITOR_MAX_REJECTED_RATIO of the results buffered."""

    @monitors.name("rejected ratio within SDI_MONITOR_MAX_REJECTED_RATIO")
    def test_rejected_ratio(self) -> None:
        rejected, buffered = self.stat("sdi/items_rejected"), self.stat("sdi/items_buffered")
        ratio = self.sdi.monitor_max_rejected_ratio
        if rejected > ratio * buffered:
            share = f" ({rejected / buffered:.1%})" if buffered else ""
            self.fail(
                f"{rejected} of {buffered} buffered results were rejected by the API{share}, "
                f"above SDI_MONITOR_MAX_REJECTED_RATIO = {ratio:g}"
            )


@monitors.name("SDI filters")
class SDIFiltersMonitor(_SDIMonitor):
    """The API's filters were loaded (from the API or the cache) when SDI_FILTERS_ENABLED is on."""

    @monitors.name("filters loaded")
    def test_filters_loaded(self) -> None:
        if not self.sdi.filters_enabled:
            self.skipTest("SDI_FILTERS_ENABLED is False")
        if self.data.stats.get("sdi/filters_source") == "none":
            self.fail(
                "no filters could be loaded (sdi/filters_source = 'none', "
                f"sdi/filters_refresh_failures = {self.stat('sdi/filters_refresh_failures')}): "
                f"{self.stat('sdi/items_buffered')} results were buffered unfiltered"
            )


@monitors.name("SDI delivery")
class SDIDeliveryMonitor(_SDIMonitor):
    """At least one result was delivered when results were buffered."""

    @monitors.name("results delivered")
    def test_results_delivered(self) -> None:
        if self.sdi.dry_run:
            self.skipTest("SDI_DRY_RUN: nothing is submitted")
        buffered, delivered = self.stat("sdi/items_buffered"), self.stat("sdi/items_delivered")
        if buffered > 0 and delivered == 0:
            self.fail(
                f"{buffered} results were buffered but none was delivered (sdi/items_delivered = 0, "
                f"sdi/batches_sent = {self.stat('sdi/batches_sent')}, "
                f"sdi/batches_failed = {self.stat('sdi/batches_failed')})"
            )


class SDIMonitorSuite(MonitorSuite):
    """Every SDI monitor; built by Spidermon at start, where a bad setting stops the crawl in one line."""

    monitors = [
        SDIPendingAtCloseMonitor,
        SDIRejectedRatioMonitor,
        SDIFiltersMonitor,
        SDIDeliveryMonitor,
    ]

    def __init__(self, *args: Any, crawler: Crawler | None = None, **kwargs: Any) -> None:
        if crawler is not None:
            read_settings(crawler)
        super().__init__(*args, crawler=crawler, **kwargs)
