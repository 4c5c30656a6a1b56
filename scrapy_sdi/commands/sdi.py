"""``scrapy sdi <action>``: check the set-up, and operate the buffer without crawling."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from scrapy_sdi.blocking import run_blocking
from scrapy_sdi.buffer import BufferFileError, SQLiteBuffer, open_buffer
from scrapy_sdi.client import SDIClient
from scrapy_sdi.errors import SDIConfigError, SDIError
from scrapy_sdi.settings import SDISettings

ACTIONS = {
    "check": "settings, API health, login, filters and the buffer file, one line each",
}


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "<action> [options]"

    def short_desc(self) -> str:
        return "Check scrapy_sdi's set-up and operate its delivery buffer"

    def long_desc(self) -> str:
        lines = [self.short_desc() + ".", "", "Actions:"]
        lines += [f"  {name:<10} {desc}" for name, desc in ACTIONS.items()]
        return "\n".join(lines)

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="print data as JSON")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if not args or args[0] not in ACTIONS:
            raise UsageError(f"choose an action: {', '.join(ACTIONS)}")
        action = getattr(self, "do_" + args[0])
        self.exitcode = action(args[1:], opts)

    # -- actions --------------------------------------------------------------------------

    def do_check(self, args: list[str], opts: argparse.Namespace) -> int:
        checks: list[dict[str, Any]] = []

        def report(name: str, ok: bool, detail: str) -> None:
            checks.append({"check": name, "ok": ok, "detail": detail})
            if not opts.json:
                print(f"{'ok  ' if ok else 'FAIL'}  {name:<10} {detail}")

        try:
            settings = SDISettings.from_settings(self.settings, "")
        except SDIConfigError as exc:
            report("settings", False, str(exc))
            return self._finish(checks, opts)
        report("settings", True, f"API {settings.api_url}, user {settings.username!r}, password ***")
        client = SDIClient(settings.api_url, settings.username, settings.password, timeout=settings.timeout)
        try:
            for name, step in (("health", _health), ("login", _login), ("filters", _filters)):
                try:
                    report(name, True, run_blocking(step, client))
                except SDIError as exc:
                    report(name, False, str(exc))
        finally:
            run_blocking(client.close)
        report(*_check_buffer(settings))
        return self._finish(checks, opts)

    @staticmethod
    def _finish(checks: list[dict[str, Any]], opts: argparse.Namespace) -> int:
        if opts.json:
            json.dump({"ok": all(c["ok"] for c in checks), "checks": checks}, sys.stdout, indent=2)
            print()
        return 0 if all(c["ok"] for c in checks) else 1


async def _health(client: SDIClient) -> str:
    body = await client.health()
    return f"{body.get('status', '?')} (version {body.get('version', '?')})"


async def _login(client: SDIClient) -> str:
    await client.login()
    return "credentials accepted"


async def _filters(client: SDIClient) -> str:
    data = await client.filters()
    assert data is not None
    return f"{len(data['filters'])} filters, version {data.get('version')!r}"


def _check_buffer(settings: SDISettings) -> tuple[str, bool, str]:
    try:
        buffer = open_buffer(settings)
    except (BufferFileError, SDIConfigError) as exc:
        return "buffer", False, str(exc)
    try:
        if isinstance(buffer, SQLiteBuffer):
            (integrity,) = buffer.db.execute("PRAGMA integrity_check").fetchone()
            if integrity != "ok":
                return "buffer", False, f"{buffer.path}: integrity check failed: {integrity}"
        counts = buffer.counts()
        where = getattr(buffer, "path", settings.buffer)
        return "buffer", True, f"{where}: {counts['pending'] + counts['in_flight']} pending, {counts['delivered']} delivered"
    finally:
        buffer.close()
