"""What every ``scrapy sdi`` action shares: the action record, its context, errors and output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scrapy_sdi.buffer import BufferFault, open_buffer
from scrapy_sdi.buffer_postgres import uses_postgres
from scrapy_sdi.buffer_queries import open_reader
from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.settings import SDISettings

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from scrapy.settings import BaseSettings

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.client import SDIClient


#: Where Scrapy's global options given after the action land (``scrapy sdi flush -s NAME=VALUE``)
#: until they are merged with those given before it.
SUB_PREFIX = "_sub_"


class CommandError(Exception):
    """An action failed; the message is printed as one line and the command exits with 1."""


@dataclass(frozen=True)
class Action:
    """One ``scrapy sdi <name>`` action: its options and what it does (returning the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context], int]
    #: Whether ``--json`` applies (its output is data).
    json: bool = True
    #: Unknown arguments go to the action (the dashboard parses its own), instead of being an error.
    passthrough: bool = False


class Context:
    """The command's settings, parsed options and extra arguments, with the helpers actions use."""

    def __init__(
        self, settings: BaseSettings, opts: argparse.Namespace, args: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.opts = opts
        self.args = list(args)

    @property
    def json(self) -> bool:
        return bool(getattr(self.opts, "json", False))

    def sdi_settings(self, *, require_api: bool = True) -> SDISettings:
        """The validated SDI_ settings; a bad one becomes a CommandError of one line."""
        try:
            settings = SDISettings.from_settings(self.settings, "", require_api=require_api)
        except SDIConfigError as exc:
            raise CommandError(str(exc)) from None
        if require_api and not settings.api_url:  # SDI_ENABLED=False skips the API checks
            raise CommandError(
                "SDI_API_URL: not set; expected the API's base URL, e.g. http://127.0.0.1:8750/api/v1"
            )
        return settings

    def client(self, settings: SDISettings) -> SDIClient:
        """An API client built on the reactor thread, so it takes that reactor's transport and timers."""
        from scrapy_sdi.blocking import run_blocking

        return run_blocking(_new_client, settings)

    def existing_buffer(self, settings: SDISettings) -> Buffer:
        """The configured buffer, which must be durable and, for SQLite, must already exist.

        Operating on a file that is not there would create an empty one and report "nothing to
        do", hiding a wrong SDI_BUFFER_PATH.
        """
        if settings.buffer == "memory":
            raise CommandError(
                "SDI_BUFFER: 'memory' keeps nothing after a crawl; there is no buffer to operate on"
            )
        if settings.buffer == "sqlite" and not Path(settings.buffer_path).is_file():
            raise CommandError(
                f"SDI buffer {settings.buffer_path} does not exist; check SDI_BUFFER_PATH"
            )
        if uses_postgres(settings):
            _refuse_unused_database(settings)
        try:
            buffer = open_buffer(settings)
        except (BufferFault, SDIConfigError) as exc:
            raise CommandError(str(exc)) from None
        if not buffer.durable:
            buffer.close()
            raise CommandError(
                f"SDI_BUFFER: {settings.buffer!r} is not durable; there is no buffer to operate on"
            )
        return buffer

    def error(self, message: str) -> None:
        """One line on stderr; messages carry no secret (values are masked where they are built)."""
        print(f"scrapy sdi {self.opts.action}: {message}", file=sys.stderr)

    def print_json(self, data: Any, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        json.dump(data, stream, indent=2, default=str)
        stream.write("\n")


def _refuse_unused_database(settings: SDISettings) -> None:
    """A database no crawl has used has no buffer: say so rather than create one in it (a wrong
    SDI_BUFFER_URL would otherwise read as an empty buffer and get tables of its own)."""
    try:
        reader = open_reader(settings)
    except BufferFault as exc:
        raise CommandError(str(exc)) from None
    try:
        version, _ = reader.schema()
    except BufferFault as exc:
        raise CommandError(str(exc)) from None
    finally:
        reader.close()
    if version == 0:
        raise CommandError(
            f"SDI buffer {reader.location} has no scrapy_sdi tables yet (no crawl has used this "
            "database); check SDI_BUFFER_URL"
        )


async def _new_client(settings: SDISettings) -> SDIClient:
    from scrapy_sdi.client import SDIClient

    return SDIClient(
        settings.api_url,
        settings.username,
        settings.password,
        timeout=settings.timeout,
        compression_min_bytes=settings.compression_min_bytes if settings.compression else None,
    )


# -- options and text output ------------------------------------------------------------------


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Scrapy's global options, accepted (and listed by --help) after the action too."""
    group = parser.add_argument_group("Global Options")
    group.add_argument(
        "-s",
        "--set",
        dest=SUB_PREFIX + "set",
        action="append",
        default=argparse.SUPPRESS,
        metavar="NAME=VALUE",
        help="set/override setting (may be repeated)",
    )
    group.add_argument(
        "-L",
        "--loglevel",
        dest=SUB_PREFIX + "loglevel",
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help="log at this level on stderr",
    )
    group.add_argument(
        "--logfile",
        dest=SUB_PREFIX + "logfile",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="log to FILE",
    )
    group.add_argument(
        "--nolog",
        dest=SUB_PREFIX + "nolog",
        action="store_true",
        default=argparse.SUPPRESS,
        help="disable logging completely",
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], stream: TextIO | None = None
) -> None:
    """Print rows under headers in aligned columns; numbers are right-aligned."""
    rows = [["" if cell is None else cell for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(str(cell)))
    stream = stream or sys.stdout
    stream.write(
        "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n"
    )
    for row in rows:
        cells = [
            str(c).rjust(w) if isinstance(c, (int, float)) else str(c).ljust(w)
            for c, w in zip(row, widths, strict=False)
        ]
        stream.write("  ".join(cells).rstrip() + "\n")
