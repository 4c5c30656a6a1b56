"""A local web dashboard over the SDI buffer and its deliveries.

It reads the buffer (its SQLite file, or its PostgreSQL database with SDI_BUFFER = "postgres")
through read-only connections, so it can run beside crawls that are writing to it. It writes
only to upgrade, once at start, a buffer file an older scrapy_sdi wrote (as the next crawl
would), and to requeue rejected or invalid rows, which is off unless
--allow-actions is given. It also serves the buffer's Prometheus metrics at /metrics (listed by
"scrapy sdi metrics --help"). Run it as "scrapy sdi dashboard" or, without Scrapy's command line,
as "python -m scrapy_sdi.dashboard --buffer PATH".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from scrapy_sdi.settings import SDISettings

DEFAULT_PORT = 8760
DEFAULT_BIND = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dashboard's options, for ``scrapy sdi dashboard`` and ``python -m``."""
    group = parser.add_argument_group("dashboard")
    group.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"TCP port to serve on (default {DEFAULT_PORT}; 0: any free port)",
    )
    group.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="ADDRESS",
        help=f"address to listen on (default {DEFAULT_BIND}: this machine only)",
    )
    group.add_argument(
        "--allow-actions",
        action="store_true",
        help="allow requeueing rejected and invalid rows (off by default)",
    )


def run(settings: SDISettings, opts: argparse.Namespace) -> int:
    """Serve the dashboard for the settings' buffer until interrupted; return the exit code."""
    from scrapy_sdi.dashboard.server import serve

    return serve(
        settings,
        port=getattr(opts, "port", DEFAULT_PORT),
        bind=getattr(opts, "bind", DEFAULT_BIND),
        allow_actions=bool(getattr(opts, "allow_actions", False)),
    )
