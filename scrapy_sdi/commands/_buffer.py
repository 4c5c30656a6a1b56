"""Actions on the local buffer only: ``buffer`` (what it holds), ``export`` and ``requeue``."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from scrapy_sdi import formatting
from scrapy_sdi.buffer import INVALID, REJECTED, STATES
from scrapy_sdi.commands._common import Action, CommandError, Context, table
from scrapy_sdi.csv_cells import csv_text
from scrapy_sdi.mapping import kept_fields
from scrapy_sdi.requeue import requeue
from scrapy_sdi.status import buffer_status

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from scrapy_sdi.buffer import Buffer


# -- buffer -----------------------------------------------------------------------------------


def _buffer(ctx: Context) -> int:
    settings = ctx.sdi_settings(require_api=False)
    buffer = ctx.existing_buffer(settings)
    try:
        summary = _summary(
            buffer, settings.buffer_path if settings.buffer == "sqlite" else buffer.location
        )
    finally:
        buffer.close()
    if ctx.json:
        ctx.print_json(summary)
        return 0
    where = summary["path"] + (
        f" ({formatting.size(summary['size_bytes'])})" if summary["size_bytes"] is not None else ""
    )
    print(f"buffer          {where}")
    print("rows            " + ", ".join(f"{n} {state}" for state, n in summary["counts"].items()))
    print(f"oldest pending  {formatting.age(summary['oldest_pending_age_seconds'])}")
    if summary["crawlers"]:
        print()
        table(
            ("crawler", *STATES),
            [(name, *counts.values()) for name, counts in summary["crawlers"].items()],
        )
    return 0


def _summary(buffer: Buffer, where: str) -> dict[str, Any]:
    status = buffer_status(buffer)
    age = status.oldest_pending_age
    return {
        "path": where,
        "size_bytes": status.size_bytes,
        "counts": status.counts,
        "crawlers": dict(sorted(status.by_crawler.items())),
        "oldest_pending_age_seconds": None if age is None else round(age, 3),
    }


BUFFER = Action(
    "buffer",
    "rows by state and by crawler, oldest pending age, size (the file, or the PostgreSQL tables)",
    lambda parser: None,
    _buffer,
)


# -- export -----------------------------------------------------------------------------------

COLUMNS = (
    "id",
    "crawler",
    "url",
    "state",
    "outcome",
    "attempts",
    "reason",
    "last_error",
    "created_at",
    "delivered_at",
)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", required=True, choices=STATES, help="rows in this state")
    parser.add_argument("--crawler", help="only this crawler's rows")
    parser.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default="jsonl",
        help="csv (no result payload) or jsonl (with the result as 'result'); invalid rows "
        "carry their item's fields as 'fields' in both; default jsonl",
    )
    parser.add_argument(
        "--output",
        "-o",
        default="-",
        metavar="FILE",
        help="file to write ('-', the default: stdout)",
    )


def _export(ctx: Context) -> int:
    opts = ctx.opts
    settings = ctx.sdi_settings(require_api=False)
    buffer = ctx.existing_buffer(settings)
    try:
        with _open_output(opts.output) as stream:
            rows = buffer.export(opts.state, opts.crawler)
            n = (_write_csv if opts.format == "csv" else _write_jsonl)(rows, stream, opts.state)
    finally:
        buffer.close()
    target = "stdout" if opts.output == "-" else opts.output
    print(f"exported {n} {opts.state} rows to {target}", file=sys.stderr)
    return 0


@contextmanager
def _open_output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        stream = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"--output: cannot write {path}: {exc.strerror}") from None
    with stream:
        yield stream


def _row(raw: dict[str, Any]) -> dict[str, Any]:
    row = {name: csv_text(raw.get(name)) for name in COLUMNS}
    row["created_at"], row["delivered_at"] = (
        formatting.iso(row["created_at"]),
        formatting.iso(row["delivered_at"]),
    )
    return row


def _write_csv(rows: Iterator[dict[str, Any]], stream: TextIO, state: str) -> int:
    """The columns, and for invalid rows the item's fields as JSON: what a requeue would map again."""
    writer = csv.DictWriter(
        stream,
        fieldnames=(*COLUMNS, "fields") if state == INVALID else COLUMNS,
        extrasaction="ignore",
    )
    writer.writeheader()
    n = 0
    for n, raw in enumerate(rows, 1):  # noqa: B007 - n counts the rows
        row = _row(raw)
        if state == INVALID:
            row["fields"] = json.dumps(kept_fields(raw["payload"]), ensure_ascii=False)
        writer.writerow(row)
    return n


def _write_jsonl(rows: Iterator[dict[str, Any]], stream: TextIO, state: str) -> int:
    """One object per row, with its result, or for an invalid row its item's fields, as JSON."""
    n = 0
    for n, raw in enumerate(rows, 1):  # noqa: B007
        row = _row(raw)
        if state == INVALID:
            row["fields"] = kept_fields(raw["payload"])
        else:
            row["result"] = orjson.loads(raw["payload"])
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    return n


EXPORT = Action(
    "export", "write the rows of one state as csv or jsonl", _export_arguments, _export, json=False
)


# -- requeue ----------------------------------------------------------------------------------


def _requeue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        required=True,
        choices=(REJECTED, INVALID),
        help="rows to send again: rejected ones as they are; invalid ones are first mapped and "
        "validated again (SDI_FIELD_MAP), and those still invalid stay invalid with the new reason",
    )
    parser.add_argument("--crawler", help="only this crawler's rows")
    parser.add_argument(
        "--id",
        dest="ids",
        action="extend",
        nargs="+",
        metavar="ID",
        help="only these row ids (repeatable)",
    )


def _requeue(ctx: Context) -> int:
    opts = ctx.opts
    settings = ctx.sdi_settings(require_api=False)
    buffer = ctx.existing_buffer(settings)
    try:
        done = requeue(
            buffer,
            opts.state,
            field_map=settings.field_map,
            dedup=settings.dedup,
            crawler=opts.crawler,
            ids=opts.ids,
        )
    finally:
        buffer.close()
    missing = max(0, len(set(opts.ids)) - done.requeued - done.still_invalid) if opts.ids else 0
    if ctx.json:
        ctx.print_json(
            {
                "requeued": done.requeued,
                "still_invalid": done.still_invalid,
                "state": opts.state,
                "ids_not_found": missing,
            }
        )
    else:
        print(
            f"requeued {done.requeued} {opts.state} rows to pending; `scrapy sdi flush` or the next crawl delivers them"
        )
    if done.still_invalid:
        ctx.error(
            f"{done.still_invalid} invalid rows are still invalid after mapping them again and stay invalid; "
            "their new reasons: `scrapy sdi export --state invalid`"
        )
    if missing:
        ctx.error(
            f"{missing} of the given ids are not {opts.state} rows"
            + (f" of {opts.crawler}" if opts.crawler else "")
        )
    return 1 if missing or done.still_invalid else 0


REQUEUE = Action(
    "requeue", "put rejected or invalid rows back to pending", _requeue_arguments, _requeue
)
