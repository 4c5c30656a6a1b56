"""HTML of the dashboard's pages. Every value passes through :func:`e` (HTML escaping).

The functions here only format what the queries returned; they never touch the database or
the network, so each page can be rendered (and tested) from plain data.
"""

from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from scrapy_sdi import formatting
from scrapy_sdi.buffer import STATES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from scrapy_sdi.dashboard.queries import Page

NAV = (
    ("/", "Overview"),
    ("/throughput", "Throughput"),
    ("/rows", "Rejected & invalid"),
    ("/remote", "Remote status"),
)
CRAWLER_COLUMNS = (
    ("crawler", "Crawler"),
    ("buffered", "Buffered"),
    ("delivered", "Delivered"),
    ("rejected", "Rejected"),
    ("invalid", "Invalid"),
    ("filtered", "Filtered"),
    ("pending", "Pending"),
    ("last_delivery", "Last delivery"),
)
ROW_HEADERS = (
    ("id", "Id", None),
    ("crawler", "Crawler", "crawler"),
    ("url", "URL", "url"),
    ("state", "State", "state"),
    ("reason", "Reason", "reason"),
    ("attempts", "Attempts", "attempts"),
    ("last_error", "Last error", None),
    ("created_at", "Buffered", "created"),
    ("delivered_at", "Rejected at", "rejected_at"),
)


def e(value: Any) -> str:
    """HTML-escape any value (None shows as an empty string)."""
    return "" if value is None else escape(str(value), quote=True)


def qs(params: Mapping[str, Any], **changes: Any) -> str:
    """A query string from params with changes applied (None or '' drops a key)."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


# -- formatting -----------------------------------------------------------------------------


def fmt_time(ts: float | None, none: str = "never") -> str:
    """The contract's ISO time with a space for the T, easier to read in a table; 0 is "never" too."""
    return formatting.iso(ts).replace("T", " ") if ts else none


def fmt_sizes(sizes: Mapping[str, int]) -> str:
    text = formatting.size(sizes["file"])
    return text + (f" (+ {formatting.size(sizes['wal'])} WAL)" if sizes["wal"] else "")


def fmt_health(health: Mapping[str, Any] | None) -> str:
    if health is None:
        return "no API configured"
    if health.get("error"):
        return f"unreachable: {health['error']}"
    if health.get("status") is None:
        return "checking…"
    return f"{health['status']} (version {health.get('version') or '?'})"


def fmt_filters(info: Mapping[str, Any] | None, now: float | None = None) -> dict[str, str]:
    if info is None:
        return {"filters.version": "none cached", "filters.count": "0", "filters.fetched": "never"}
    if info.get("error"):
        return {"filters.version": info["error"], "filters.count": "?", "filters.fetched": "?"}
    fetched = info.get("fetched_at")
    age = "unknown" if fetched is None else formatting.age((now or time.time()) - fetched) + " ago"
    count = info.get("count")
    return {
        "filters.version": str(info.get("version") or "?"),
        "filters.count": "?" if count is None else str(count),
        "filters.fetched": age,
    }


# -- layout ---------------------------------------------------------------------------------


def layout(title: str, body: str, *, page: str, buffer_path: str, refresh: bool = False) -> bytes:
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if href == page else ""}>{e(label)}</a>'
        for href, label in NAV
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · SDI dashboard</title>"
        '<link rel=icon href="data:,"><link rel=stylesheet href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head>'
        f'<body data-page="{e(page)}"{" data-refresh=1" if refresh else ""}>'
        f"<header><span class=brand>scrapy_sdi</span><nav>{nav}</nav>"
        f'<span class=buffer title="buffer">{e(buffer_path)}</span></header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>\n"
    ).encode()


def error_page(status: int, message: str, *, buffer_path: str) -> bytes:
    body = f'<p class=error id=error-message>{e(message)}</p><p><a href="/">Back to the overview</a></p>'
    return layout(f"{status}", body, page="", buffer_path=buffer_path)


def _pager(page: Page, params: Mapping[str, Any], path: str, noun: str = "rows") -> str:
    parts = [
        f"<span class=count>Page <b>{page.page}</b> of {page.pages} "
        f"(<b id=total-rows>{page.total}</b> {noun})</span>"
    ]
    if page.page > 1:
        parts.append(
            f'<a rel=prev href="{path}?{e(qs(params, page=page.page - 1))}">‹ previous</a>'
        )
    if page.page < page.pages:
        parts.append(f'<a rel=next href="{path}?{e(qs(params, page=page.page + 1))}">next ›</a>')
    return f"<p class=pager>{' '.join(parts)}</p>"


def _sort_link(label: str, key: str, params: Mapping[str, Any], path: str) -> str:
    current = params.get("sort")
    descending = params.get("dir") == "desc"
    next_dir = "asc" if current == key and descending else "desc"
    if current != key:
        next_dir = "asc" if key in ("crawler", "url", "reason", "state") else "desc"
    arrow = (" ▼" if descending else " ▲") if current == key else ""
    href = f"{path}?{qs(params, sort=key, dir=next_dir, page=None)}"
    return f'<a class=sort data-sort="{e(key)}" href="{e(href)}">{e(label)}{arrow}</a>'


# -- overview -------------------------------------------------------------------------------


def overview_fields(data: Mapping[str, Any]) -> dict[str, str]:
    """Every number of the overview as display text, keyed by the data-field it fills."""
    totals = data["totals"]
    fields = {f"state.{s}": str(totals[s]) for s in STATES}
    fields["state.total"] = str(sum(totals.values()))
    fields["oldest_pending_age"] = formatting.age(data["oldest_pending_age"], none="none")
    fields["file_size"] = fmt_sizes(data["file_size"])
    fields["health"] = fmt_health(data["health"])
    fields.update(fmt_filters(data["filters"], data["now"]))
    fields["updated"] = fmt_time(data["now"])
    return fields


def crawler_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        str(row[key]) if key != "last_delivery" else fmt_time(row[key])
        for key, _ in CRAWLER_COLUMNS
    ]


def overview(data: Mapping[str, Any], params: Mapping[str, Any], *, buffer_path: str) -> bytes:
    fields = overview_fields(data)
    cards = "".join(
        f'<div class="card state-{s}"><span>{e(s.replace("_", " "))}</span>'
        f'<b data-field="state.{s}">{e(fields["state." + s])}</b></div>'
        for s in STATES
    )
    cards += f'<div class="card total"><span>all rows</span><b data-field="state.total">{e(fields["state.total"])}</b></div>'
    facts = (
        ("Oldest pending", "oldest_pending_age"),
        ("Buffer size", "file_size"),
        ("API health", "health"),
        ("Filters version", "filters.version"),
        ("Filters", "filters.count"),
        ("Filters fetched", "filters.fetched"),
    )
    facts_html = "".join(
        f'<dt>{e(label)}</dt><dd data-field="{key}">{e(fields[key])}</dd>' for label, key in facts
    )
    page = data["crawlers"]
    head = "".join(
        f"<th>{_sort_link(label, key, params, '/')}</th>" for key, label in CRAWLER_COLUMNS
    )
    rows = "".join(_crawler_row(row) for row in page.rows) or _empty_row(
        len(CRAWLER_COLUMNS), "no rows buffered"
    )
    body = (
        f"<section class=cards id=totals>{cards}</section>"
        f"<section><dl class=facts>{facts_html}</dl></section>"
        f"<section><h2>Crawlers</h2><table id=crawlers><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>{_pager(page, params, '/', 'crawlers')}</section>"
        f'<p class=updated>Updated <span data-field="updated">{e(fields["updated"])}</span>; '
        "refreshes every few seconds.</p>"
    )
    return layout("Overview", body, page="/", buffer_path=buffer_path, refresh=True)


def _crawler_row(row: Mapping[str, Any]) -> str:
    cells = crawler_cells(row)
    link = f'<a href="/rows?{e(qs({}, crawler=row["crawler"]))}">{e(cells[0])}</a>'
    return (
        f"<tr><td>{link}</td>" + "".join(f"<td class=num>{e(c)}</td>" for c in cells[1:]) + "</tr>"
    )


def _empty_row(span: int, text: str) -> str:
    return f"<tr class=empty><td colspan={span}>{e(text)}</td></tr>"


# -- throughput -----------------------------------------------------------------------------


def throughput(
    data: Mapping[str, Any],
    params: Mapping[str, Any],
    windows: Iterable[tuple[str, str]],
    *,
    buffer_path: str,
) -> bytes:
    links = " ".join(
        f'<a href="/throughput?{e(qs({}, window=key))}"{" aria-current=page" if key == params["window"] else ""}>'
        f"{e(label)}</a>"
        for key, label in windows
    )
    chart = data["chart"]
    bucket = chart.minutes_per_bucket
    unit = "minute" if bucket == 1 else f"{bucket} minutes"
    retention = f"{data['retention_days']:g}"
    body = (
        f"<p class=windows>Window: {links}</p>"
        f"<p>From {e(fmt_time(chart.start))} to {e(fmt_time(data['until']))}, one bar per {e(unit)}. "
        f'Delivered: <b data-field="throughput.delivered" id=throughput-delivered>{sum(chart.delivered)}</b>, '
        f'rejected: <b data-field="throughput.rejected" id=throughput-rejected>{sum(chart.rejected)}</b>, '
        f'busiest {e(unit)}: <b data-field="throughput.peak">{data["peak"]}</b>.</p>'
        f"<figure>{data['svg']}<figcaption>Results per {e(unit)} by the time the API answered "
        f"(delivered_at); retention of delivered rows: {e(retention)} days.</figcaption></figure>"
    )
    return layout("Throughput", body, page="/throughput", buffer_path=buffer_path)


# -- rejected and invalid rows --------------------------------------------------------------


def rows(
    data: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    buffer_path: str,
    token: str | None,
    xlsx: bool,
) -> bytes:
    page: Page = data["page"]
    state_options = "".join(
        f'<option value="{v}"{" selected" if params.get("state", "all") == v else ""}>{label}</option>'
        for v, label in (
            ("all", "rejected and invalid"),
            ("rejected", "rejected"),
            ("invalid", "invalid"),
        )
    )
    crawler_options = '<option value="">all crawlers</option>' + "".join(
        f'<option value="{e(c)}"{" selected" if params.get("crawler") == c else ""}>{e(c)}</option>'
        for c in data["crawlers"]
    )
    per_page_options = "".join(
        f"<option{' selected' if int(params.get('per_page', 50)) == n else ''}>{n}</option>"
        for n in (25, 50, 100, 200)
    )
    form = (
        '<form class=filters method=get action="/rows" id=search-form>'
        f"<label>State <select name=state>{state_options}</select></label>"
        f"<label>Crawler <select name=crawler>{crawler_options}</select></label>"
        f'<label>Search <input type=search name=q id=q value="{e(params.get("q", ""))}" '
        'placeholder="id, URL, reason, error or payload"></label>'
        f"<label>Per page <select name=per_page>{per_page_options}</select></label>"
        "<button type=submit id=search>Search</button></form>"
    )
    selection = {k: params[k] for k in ("state", "crawler", "q", "sort", "dir") if params.get(k)}
    downloads = " ".join(
        f'<a class=download id=download-{fmt} href="/export?{e(qs(selection, format=fmt))}">{label}</a>'
        for fmt, label in (("csv", "CSV"), ("jsonl", "JSON lines"))
    )
    if xlsx:
        downloads += f' <a class=download id=download-xlsx href="/export?{e(qs(selection, format="xlsx"))}">XLSX</a>'
    else:
        downloads += (
            f' <a class="download unavailable" id=download-xlsx href="/export?{e(qs(selection, format="xlsx"))}"'
            ">XLSX (not available: install openpyxl)</a>"
        )
    flash = ""
    if data.get("requeued") is not None:
        flash = f"<p class=flash id=flash>Requeued <b>{data['requeued']}</b> rows: they are pending again."
        if data.get("still_invalid"):
            flash += (
                f" <b>{data['still_invalid']}</b> invalid rows were mapped again and are still invalid:"
                " see their new reasons."
            )
        flash += "</p>"
    head = "".join(
        f"<th>{_sort_link(label, key, params, '/rows') if key else e(label)}</th>"
        for _, label, key in ROW_HEADERS
    )
    check_head = (
        '<th><input type=checkbox id=select-all aria-label="select all"></th>' if token else ""
    )
    body_rows = "".join(_problem_row(row, token is not None) for row in page.rows)
    if not body_rows:
        body_rows = _empty_row(len(ROW_HEADERS) + (1 if token else 0), "no matching rows")
    table = (
        f"<table id=rows><thead><tr>{check_head}{head}</tr></thead><tbody>{body_rows}</tbody></table>"
        f"{_pager(page, params, '/rows')}"
    )
    if token:
        table = (
            '<form method=post action="/actions/requeue" id=requeue-form>'
            f'<input type=hidden name=token value="{e(token)}">'
            f'<input type=hidden name=back value="{e(qs(params, page=None))}">'
            f"{table}<button type=submit id=requeue name=action value=requeue>Requeue selected</button></form>"
        )
    else:
        table += "<p class=note id=actions-off>Requeueing is off: start the dashboard with --allow-actions.</p>"
    body = f"{form}{flash}<p class=downloads>Download this selection: {downloads}</p>{table}"
    return layout("Rejected & invalid rows", body, page="/rows", buffer_path=buffer_path)


def _problem_row(row: Mapping[str, Any], selectable: bool) -> str:
    check = (
        f'<td><input type=checkbox name=id value="{e(row["id"])}" aria-label="select {e(row["id"])}"></td>'
        if selectable
        else ""
    )
    link = f'<a href="/row?{e(qs({}, id=row["id"]))}">{e(_short(row["id"], 24))}</a>'
    return (
        f'<tr data-id="{e(row["id"])}">{check}<td>{link}</td><td>{e(row["crawler"])}</td>'
        f'<td class=url title="{e(row["url"])}">{e(_short(row["url"], 60))}</td><td>{e(row["state"])}</td>'
        f"<td>{e(row['reason'])}</td><td class=num>{e(row['attempts'])}</td><td>{e(row['last_error'])}</td>"
        f"<td>{e(fmt_time(row['created_at']))}</td><td>{e(fmt_time(row['delivered_at'], '—'))}</td></tr>"
    )


def _short(text: Any, n: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def row_detail(row: Mapping[str, Any], *, buffer_path: str, token: str | None) -> bytes:
    facts = (
        ("Id", row["id"]),
        ("Crawler", row["crawler"]),
        ("URL", row["url"]),
        ("State", row["state"]),
        ("Reason", row["reason"]),
        ("Outcome", row["outcome"]),
        ("Attempts", row["attempts"]),
        ("Last error", row["last_error"]),
        ("Buffered", fmt_time(row["created_at"])),
        ("Delivered / rejected", fmt_time(row["delivered_at"])),
        ("Ready at", fmt_time(row["ready_at"]) if row["ready_at"] else "at once"),
        (
            "Lease",
            f"{row['lease_owner']} until {fmt_time(row['lease_until'])}"
            if row["lease_owner"]
            else "none",
        ),
    )
    dl = "".join(f'<dt>{e(k)}</dt><dd data-field="{e(k.lower())}">{e(v)}</dd>' for k, v in facts)
    action = ""
    if token and row["state"] in ("rejected", "invalid"):
        action = (
            '<form method=post action="/actions/requeue" id=requeue-form>'
            f'<input type=hidden name=token value="{e(token)}"><input type=hidden name=id value="{e(row["id"])}">'
            f"<input type=hidden name=back_to value=row>"
            "<button type=submit id=requeue>Requeue this row</button></form>"
        )
    body = (
        f"<dl class=facts id=detail>{dl}</dl>{action}<h2>Payload</h2>"
        f"<pre id=payload>{e(row['payload'])}</pre>"
    )
    return layout("Row " + _short(row["id"], 40), body, page="/rows", buffer_path=buffer_path)


# -- remote status --------------------------------------------------------------------------


def remote(data: Mapping[str, Any], params: Mapping[str, Any], *, buffer_path: str) -> bytes:
    page: Page = data["page"]
    crawler_options = '<option value="">all crawlers</option>' + "".join(
        f'<option value="{e(c)}"{" selected" if params.get("crawler") == c else ""}>{e(c)}</option>'
        for c in data["crawlers"]
    )
    form = (
        '<form class=filters method=get action="/remote" id=remote-form>'
        f"<label>Crawler <select name=crawler>{crawler_options}</select></label>"
        f'<label>Search <input type=search name=q value="{e(params.get("q", ""))}" placeholder="URL or id"></label>'
        "<button type=submit>Look up</button></form>"
    )
    note = f"<p class=note id=remote-note>{e(data['note'])}</p>" if data.get("note") else ""
    statuses = data.get("statuses") or {}
    body_rows = "".join(_remote_row(row, statuses.get(row["url"])) for row in page.rows)
    if not body_rows:
        body_rows = _empty_row(6, "no delivered rows match")
    table = (
        "<table id=remote><thead><tr><th>URL</th><th>Crawler</th><th>Delivered</th><th>Code</th>"
        f"<th>Status</th><th>Description</th></tr></thead><tbody>{body_rows}</tbody></table>"
        f"{_pager(page, params, '/remote')}"
    )
    return layout("Remote status", form + note + table, page="/remote", buffer_path=buffer_path)


def _remote_row(row: Mapping[str, Any], status: Mapping[str, Any] | None) -> str:
    status = status or {}
    code = status.get("status_code")
    return (
        f'<tr data-url="{e(row["url"])}"><td class=url>{e(row["url"])}</td><td>{e(row["crawler"])}</td>'
        f"<td>{e(fmt_time(row['delivered_at']))}</td><td class=num>{e('' if code is None else code)}</td>"
        f"<td class=status>{e(status.get('status', '—'))}</td><td>{e(status.get('description', ''))}</td></tr>"
    )
