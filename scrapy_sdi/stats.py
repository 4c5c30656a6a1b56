"""Every ``sdi/`` stats key scrapy_sdi sets, and what it means: the one table they are documented in.

The docs' stats page is generated from :data:`STATS`, and a test reads every ``"sdi/…"`` string
in the package and fails on a key this table lacks, or an entry no code uses, so a new stat
cannot go undocumented. A part of a key that varies is written ``<name>``.
"""

from __future__ import annotations

#: key (or key pattern) -> meaning, in the order the stats page lists them.
STATS: dict[str, str] = {
    "sdi/items_buffered": "results committed to the buffer by this run",
    "sdi/items_delivered": "results the API accepted or already had (`duplicate`)",
    "sdi/items_duplicate": "of the delivered results, those the API answered `duplicate`",
    "sdi/items_rejected": "results the API refused (kept in the buffer with the reason)",
    "sdi/items_filtered": "results excluded by the API's filters, when found or when sent (kept as `filtered`, never submitted)",
    "sdi/items_filtered/<field>": "of those, excluded by a filter on `<field>` (`url` or `filename`)",
    "sdi/items_invalid": "items refused before buffering (the reason is in the buffer row and the DEBUG log)",
    "sdi/items_deduplicated": "results skipped because this crawler already buffered or delivered the URL",
    "sdi/items_unbuffered": (
        "results dropped because the buffer failed mid-crawl (disk full); the spider closes with "
        "`sdi_buffer_failed`"
    ),
    "sdi/items_lost": "memory buffer only: results still undelivered at close",
    "sdi/batches_sent": "submission attempts (requests carrying a batch)",
    "sdi/batches_failed": "submission attempts that failed (any answer but `200`, `400` and `413` included, or none)",
    "sdi/retries": "rows sent again after a failed attempt",
    "sdi/response_status_count/<code>": "API answers by HTTP status `<code>`",
    "sdi/auth/logins": "logins (`POST /auth/token`)",
    "sdi/auth/refreshes": "token refreshes (`POST /auth/refresh`)",
    "sdi/pending_at_close": "results left pending when the spider closed (delivered by the next run or `scrapy sdi flush`)",
    "sdi/backpressure_waits": "items that waited for delivery to catch up (`SDI_BUFFER_MAX_PENDING`)",
    "sdi/api_state": "`ok`, `retrying since HH:MM:SS` or `auth failing`",
    "sdi/filters_source": "where the filters came from: `api`, `cache`, `none` or `disabled`",
    "sdi/filters_count": "how many filters apply",
    "sdi/filters_version": "the version of the filters that apply",
    "sdi/filters_refresh_failures": "filter refreshes that failed (the current filters were kept)",
    "sdi/remote_status/<name>": "with `SDI_STATUS_ON_CLOSE`: this run's delivered results by their status `<name>` on the API",
    "sdi/dry_run/items": (
        "with `SDI_DRY_RUN`: results that would have been sent (`sdi/items_delivered` stays 0)"
    ),
    "sdi/dry_run/batches": "with `SDI_DRY_RUN`: batches that would have been sent (`sdi/batches_sent` stays 0)",
}
