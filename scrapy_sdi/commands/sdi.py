"""``scrapy sdi <action>``: check the set-up, look results up, and operate the buffer without crawling.

Each action is an argparse sub-parser of the command's parser (``scrapy sdi --help`` lists them,
``scrapy sdi <action> --help`` shows one). Exit codes: 0 ok, 1 a check or operation failed (a bad
setting is one line, no traceback), 2 a usage error. Secrets are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from scrapy.commands import ScrapyCommand, ScrapyHelpFormatter
from scrapy.exceptions import UsageError

from scrapy_sdi.commands._api import CHECK, STATUS
from scrapy_sdi.commands._buffer import BUFFER, EXPORT, REQUEUE
from scrapy_sdi.commands._common import (
    SUB_PREFIX,
    Action,
    CommandError,
    Context,
    add_global_options,
)
from scrapy_sdi.commands._dashboard import DASHBOARD
from scrapy_sdi.commands._flush import FLUSH
from scrapy_sdi.commands._metrics import METRICS
from scrapy_sdi.commands._settings import SETTINGS

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (CHECK, STATUS, BUFFER, FLUSH, EXPORT, REQUEUE, SETTINGS, DASHBOARD, METRICS)
}


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "<action> [options]"

    def short_desc(self) -> str:
        return "Check scrapy_sdi's set-up, look results up and operate its delivery buffer"

    def long_desc(self) -> str:
        return (
            self.short_desc() + ". Run `scrapy sdi <action> --help` for an action's options. "
            "Exit codes: 0 ok, 1 a check or operation failed, 2 a usage error."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.prog = (
            "scrapy sdi"  # error lines say "scrapy sdi: error: ..." rather than "__main__.py"
        )
        parser.add_argument(
            "--json", action="store_true", help="print data as JSON (actions whose output is data)"
        )
        actions = parser.add_subparsers(
            dest="action", metavar="<action>", title="actions", prog="scrapy sdi"
        )
        for action in ACTIONS.values():
            sub = actions.add_parser(
                action.name,
                help=action.help,
                description=action.help,
                formatter_class=HelpFormatter,
                add_help=not action.passthrough,
            )
            action.add_arguments(sub)
            if action.json:
                sub.add_argument(
                    "--json",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="print the output as JSON",
                )
            add_global_options(sub)

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        _merge_global_options(opts)
        super().process_options(args, opts)

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        action = ACTIONS.get(opts.action or "")
        if action is None:
            raise UsageError(
                f"choose an action: {', '.join(ACTIONS)} (scrapy sdi --help)", print_help=False
            )
        if args and not action.passthrough:
            raise UsageError(
                f"{action.name}: unrecognized arguments: {' '.join(args)}", print_help=False
            )
        assert self.settings is not None
        if self.settings.getbool("LOG_ENABLED"):
            from scrapy.utils.log import configure_logging

            configure_logging(self.settings)
        ctx = Context(self.settings, opts, args)
        try:
            self.exitcode = action.run(ctx)
        except CommandError as exc:
            ctx.error(str(exc))
            self.exitcode = 1
        except KeyboardInterrupt:
            ctx.error("interrupted")
            self.exitcode = 1
        except BrokenPipeError:  # `scrapy sdi export ... | head`: the reader left, say nothing more
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            self.exitcode = 1


class HelpFormatter(ScrapyHelpFormatter):
    """Scrapy's help layout, where only the sections' titles are headings.

    Scrapy underlines every part of the help that ends in a colon, so an option's help line that
    happens to end in one became a heading; such a line is split from its newline here, and reads
    as written.
    """

    def __init__(self, prog: str, **kwargs: Any) -> None:
        super().__init__(prog, **kwargs)
        self._headings: set[str] = set()

    def start_section(self, heading: str | None) -> None:
        if heading:
            self._headings.add(f"{heading}:")
        super().start_section(heading)

    def format_part_strings(self, part_strings: list[str]) -> list[str]:
        parts: list[str] = []
        for part in part_strings:
            if part.endswith(":\n") and part.strip() not in self._headings:
                parts += [part[:-1], "\n"]
            else:
                parts.append(part)
        return super().format_part_strings(parts)


def _merge_global_options(opts: argparse.Namespace) -> None:
    """Global options given after the action join those given before it."""
    opts.set = [*opts.set, *getattr(opts, SUB_PREFIX + "set", [])]
    for name in ("loglevel", "logfile", "nolog"):
        if hasattr(opts, SUB_PREFIX + name):
            setattr(opts, name, getattr(opts, SUB_PREFIX + name))
    for name in [n for n in vars(opts) if n.startswith(SUB_PREFIX)]:
        delattr(opts, name)
