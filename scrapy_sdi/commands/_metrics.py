"""The ``metrics`` action: the buffer's Prometheus metrics once, for cron and node_exporter."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from scrapy.commands import ScrapyHelpFormatter

from scrapy_sdi.commands._common import Action, CommandError, Context
from scrapy_sdi.errors import SDIError

if TYPE_CHECKING:
    from scrapy_sdi.settings import SDISettings

#: Seconds ``GET /health`` may take before the API counts as down: cron runs must not pile up.
HEALTH_TIMEOUT = 5.0


class _HelpFormatter(ScrapyHelpFormatter):
    """Scrapy's help layout, with the metrics table's lines kept as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _metrics_arguments(parser: argparse.ArgumentParser) -> None:
    from scrapy_sdi.metrics import help_text

    parser.formatter_class = _HelpFormatter
    parser.epilog = (
        "Metrics (Prometheus text format, read when the command runs; the dashboard serves them at /metrics):\n"
        f"{help_text()}\n\n"
        "For node_exporter's textfile collector (the file name must end in .prom), e.g. from cron:\n"
        "  * * * * * cd /path/to/project && scrapy sdi metrics --output /var/lib/node_exporter/textfile/sdi.prom"
    )
    parser.add_argument(
        "--output",
        "-o",
        default="-",
        metavar="FILE",
        help="write to FILE through a temporary file renamed over it ('-', the default: stdout)",
    )
    parser.add_argument(
        "--no-api",
        action="store_true",
        help=f"leave out sdi_api_up (otherwise GET /health, {HEALTH_TIMEOUT:.0f} s at most)",
    )


def _metrics(ctx: Context) -> int:
    from scrapy_sdi.metrics import BufferCollector, new_registry, render, write_file

    settings = ctx.sdi_settings(require_api=False)
    probe = not ctx.opts.no_api and bool(settings.api_url)
    # the collector reads the buffer first: a missing or unusable one is one line, without asking the API
    collector = BufferCollector(
        lambda: ctx.existing_buffer(settings), lambda: _api_answers(settings) if probe else None
    )
    registry = new_registry(collector)
    if ctx.opts.output == "-":
        sys.stdout.buffer.write(render(registry))
        sys.stdout.flush()
        return 0
    try:
        write_file(ctx.opts.output, registry)
    except OSError as exc:
        raise CommandError(f"--output: cannot write {ctx.opts.output}: {exc.strerror}") from None
    return 0


def _api_answers(settings: SDISettings) -> bool:
    from scrapy_sdi.blocking import run_blocking
    from scrapy_sdi.client import SDIClient

    async def probe() -> bool:
        client = SDIClient(
            settings.api_url,
            settings.username,
            settings.password,
            timeout=min(settings.timeout, HEALTH_TIMEOUT),
        )
        try:
            await client.health()
        except SDIError:
            return False
        finally:
            await client.close()
        return True

    return run_blocking(probe)


METRICS = Action(
    "metrics",
    "the buffer's Prometheus metrics, on stdout or written atomically to a file (node_exporter's textfile collector)",
    _metrics_arguments,
    _metrics,
    json=False,
)
