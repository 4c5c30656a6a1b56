"""Actions that talk to the API: ``check`` (the whole set-up) and ``status`` (what became of results)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import UsageError

from scrapy_sdi.blocking import run_blocking
from scrapy_sdi.buffer import BufferFault, BufferFileError, open_buffer
from scrapy_sdi.buffer_postgres import uses_postgres
from scrapy_sdi.buffer_queries import open_reader
from scrapy_sdi.commands._common import Action, CommandError, Context, table
from scrapy_sdi.errors import SDIConfigError, SDIError
from scrapy_sdi.settings import shown

if TYPE_CHECKING:
    import argparse

    from scrapy_sdi.client import SDIClient
    from scrapy_sdi.settings import SDISettings


# -- check ------------------------------------------------------------------------------------


def _check(ctx: Context) -> int:
    checks: list[dict[str, Any]] = []

    def report(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})
        if not ctx.json:
            print(f"{'ok  ' if ok else 'FAIL'}  {name:<10} {detail}")

    try:
        settings = ctx.sdi_settings()
    except CommandError as exc:
        report("settings", False, str(exc))
        return _finish(ctx, checks)
    report(
        "settings",
        True,
        f"API {shown('SDI_API_URL', settings.api_url)}, user {settings.username!r}, "
        f"password {shown('SDI_PASSWORD', settings.password)}",
    )
    client = ctx.client(settings)
    try:
        for name, step in (("health", _health), ("login", _login), ("filters", _filters)):
            try:
                report(name, True, run_blocking(step, client))
            except SDIError as exc:
                report(name, False, str(exc))
    finally:
        run_blocking(client.close)
    report(*_check_buffer(settings))
    return _finish(ctx, checks)


def _finish(ctx: Context, checks: list[dict[str, Any]]) -> int:
    ok = all(c["ok"] for c in checks)
    if ctx.json:
        ctx.print_json({"ok": ok, "checks": checks})
    return 0 if ok else 1


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
    if settings.buffer == "sqlite" and not Path(settings.buffer_path).exists():
        return _missing_buffer(Path(settings.buffer_path))
    if uses_postgres(settings):
        return _check_database(settings)
    try:
        buffer = open_buffer(settings)
    except (BufferFileError, SDIConfigError) as exc:
        return "buffer", False, str(exc)
    try:
        problem = buffer.check_integrity()
        if problem is not None:
            return "buffer", False, f"{buffer.location}: integrity check failed: {problem}"
        counts = buffer.counts()
        pending = counts["pending"] + counts["in_flight"]
        return (
            "buffer",
            True,
            f"{buffer.location}: {pending} pending, {counts['delivered']} delivered",
        )
    finally:
        buffer.close()


def _check_database(settings: SDISettings) -> tuple[str, bool, str]:
    """Reachability, the server's version and the schema's, read without creating anything."""
    from scrapy_sdi.buffer_postgres import SCHEMA_VERSION

    try:
        reader = open_reader(settings)
    except BufferFault as exc:  # unreachable, refused, no such database: the driver's one line
        return "buffer", False, str(exc)
    try:
        server = reader.server()
        version, _ = reader.schema()
        where = f"{reader.location}: reachable, {server}"
        if version == 0:
            return (
                "buffer",
                True,
                f"{where}, no scrapy_sdi schema yet; the first crawl creates it (schema {SCHEMA_VERSION})",
            )
        if version > SCHEMA_VERSION:
            return (
                "buffer",
                False,
                f"{where}, schema {version}, newer than this scrapy_sdi knows ({SCHEMA_VERSION}): upgrade scrapy_sdi",
            )
        counts = reader.state_totals()
    except BufferFault as exc:
        return "buffer", False, str(exc)
    finally:
        reader.close()
    older = f" (the next crawl upgrades it to {SCHEMA_VERSION})" if version < SCHEMA_VERSION else ""
    pending = counts["pending"] + counts["in_flight"]
    return (
        "buffer",
        True,
        f"{where}, schema {version}{older}: {pending} pending, {counts['delivered']} delivered",
    )


def _missing_buffer(path: Path) -> tuple[str, bool, str]:
    """A check creates nothing: say whether the first crawl will be able to create the file."""
    existing = next(parent for parent in path.absolute().parents if parent.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return (
            "buffer",
            True,
            f"{path}: does not exist yet; {existing} is writable, the first crawl creates it",
        )
    return (
        "buffer",
        False,
        f"{path}: does not exist yet, and {existing} is not a writable directory to create it in",
    )


CHECK = Action(
    "check",
    "settings, API health, login, filters and the buffer (its file, or its PostgreSQL server), one line each",
    lambda parser: None,
    _check,
)


# -- status -----------------------------------------------------------------------------------


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        dest="urls",
        action="extend",
        nargs="+",
        default=[],
        metavar="URL",
        help="look up these URLs (repeatable)",
    )
    parser.add_argument(
        "--urls-file",
        metavar="FILE",
        help="look up the URLs in FILE, one a line ('-': stdin; blank and # lines skipped)",
    )
    parser.add_argument(
        "--crawler",
        dest="crawlers",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="per-crawler totals by status instead (repeatable)",
    )


def _status(ctx: Context) -> int:
    opts = ctx.opts
    urls = list(opts.urls) + (_read_urls(opts.urls_file) if opts.urls_file else [])
    if opts.crawlers and (opts.urls or opts.urls_file):
        raise UsageError(
            "status: give URLs (--url, --urls-file) or --crawler, not both", print_help=False
        )
    if not opts.crawlers and not urls:
        raise UsageError("status: give --url, --urls-file or --crawler", print_help=False)
    settings = ctx.sdi_settings()
    client = ctx.client(settings)
    try:
        if opts.crawlers:
            found = run_blocking(client.status_by_crawlers, opts.crawlers)
        else:
            found = run_blocking(client.status_by_urls, urls)
        codes = _status_codes(client)
    except SDIError as exc:
        raise CommandError(str(exc)) from None
    finally:
        run_blocking(client.close)
    if opts.crawlers:
        _show_crawlers(ctx, found, codes)
    else:
        _show_urls(ctx, found, codes)
    return 0


def _read_urls(path: str) -> list[str]:
    try:
        lines = (
            sys.stdin.read().splitlines()
            if path == "-"
            else Path(path).read_text(encoding="utf-8").splitlines()
        )
    except OSError as exc:
        raise CommandError(f"--urls-file: cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _status_codes(client: SDIClient) -> dict[Any, dict[str, Any]]:
    """code and name -> {code, name, description}; empty when the API cannot say."""
    try:
        codes = run_blocking(client.status_codes)
    except SDIError:
        return {}
    by_key: dict[Any, dict[str, Any]] = {}
    for entry in codes:
        by_key[entry.get("code")] = entry
        by_key[entry.get("name")] = entry
    return by_key


def _show_urls(ctx: Context, found: list[dict[str, Any]], codes: dict[Any, dict[str, Any]]) -> None:
    for entry in found:
        known = (
            codes.get(entry.get("status_code")) if entry.get("status_code") is not None else None
        )
        entry["description"] = (known or {}).get("description") or entry.get("description")
    if ctx.json:
        ctx.print_json({"results": found})
        return
    table(
        ("url", "status", "description", "crawler", "submitted_at"),
        [
            (
                e.get("url"),
                e.get("status"),
                e.get("description") or "-",
                e.get("crawler") or "-",
                e.get("submitted_at") or "-",
            )
            for e in found
        ],
    )


def _show_crawlers(
    ctx: Context, found: list[dict[str, Any]], codes: dict[Any, dict[str, Any]]
) -> None:
    for entry in found:
        by_status = entry.get("by_status") or {}
        entry["statuses"] = [
            {
                "status": name,
                "code": codes.get(name, {}).get("code"),
                "count": count,
                "description": codes.get(name, {}).get("description"),
            }
            for name, count in by_status.items()
        ]
    if ctx.json:
        ctx.print_json({"crawlers": found})
        return
    rows: list[tuple[Any, ...]] = []
    for entry in found:
        rows.append((entry.get("crawler"), "total", entry.get("total", 0), ""))
        rows += [
            (entry.get("crawler"), s["status"], s["count"], s["description"] or "-")
            for s in entry["statuses"]
        ]
    table(("crawler", "status", "count", "description"), rows)


STATUS = Action(
    "status",
    "what the API made of results: by --url/--urls-file, or per-crawler totals by --crawler",
    _status_arguments,
    _status,
)
