"""Downloads of a selection of rows: CSV, JSON lines, and XLSX when openpyxl is installed."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from typing import TYPE_CHECKING, Any

import orjson

from scrapy_sdi.csv_cells import csv_text
from scrapy_sdi.dashboard.queries import ROW_COLUMNS
from scrapy_sdi.formatting import iso

if TYPE_CHECKING:
    from collections.abc import Iterable

COLUMNS = (*ROW_COLUMNS, "payload")
_TIMES = ("created_at", "delivered_at")
#: A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_XLSX_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
}


class ExportUnavailable(Exception):
    """The format cannot be produced here (XLSX without openpyxl)."""


def xlsx_available() -> bool:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        return False
    return True


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    return {c: iso(row[c]) if c in _TIMES else row[c] for c in COLUMNS}


def to_csv(rows: Iterable[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in _flat(row).values()])
    return out.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    value = csv_text(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def to_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    """One JSON object per row; the payload stays JSON when it is JSON."""
    lines = []
    for row in rows:
        record = _flat(row)
        with contextlib.suppress(orjson.JSONDecodeError):
            record["payload"] = orjson.loads(record["payload"])
        lines.append(orjson.dumps(record))
    return b"".join(line + b"\n" for line in lines)


def to_xlsx(rows: Iterable[dict[str, Any]]) -> bytes:
    try:
        from openpyxl import Workbook
    except ImportError:
        raise ExportUnavailable("XLSX export needs openpyxl: pip install openpyxl") from None
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("rows")
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append([_xlsx_cell(v) for v in _flat(row).values()])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _xlsx_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    value = _XLSX_ILLEGAL.sub("\ufffd", value)
    # openpyxl stores a string starting with "=" as a formula: keep it text
    return "'" + value if value.startswith("=") else value


def render(fmt: str, rows: Iterable[dict[str, Any]]) -> bytes:
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "xlsx":
        return to_xlsx(rows)
    raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
