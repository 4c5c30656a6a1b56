"""The queries behind each dashboard page, on a buffer with known counts built by the real buffer."""

from __future__ import annotations

import csv
import io
import sqlite3
import sys

import orjson
import pytest

from scrapy_sdi.buffer import FILTERED, INVALID, Row, SQLiteBuffer
from scrapy_sdi.dashboard import exports, queries, views
from scrapy_sdi.dashboard.chart import nice_ceiling, svg
from scrapy_sdi.formatting import iso
from scrapy_sdi.mapping import ResultMapper, stable_result_id
from scrapy_sdi.requeue import Requeued
from tests.support.buffers import schema_1_buffer

T0 = 1_800_000_000.0  # a whole minute
CREATED = T0 - 1000


def _row(
    id_: str, crawler: str = "alpha", state: str = "pending", reason: str | None = None
) -> Row:
    url = (
        f"https://files.example.com/{crawler}/{id_}.mp3" if state != INVALID else f"not a url {id_}"
    )
    payload = orjson.dumps({"url": url, "filename": f"{id_}.mp3", "description": f"<b>{id_}</b>"})
    return Row(id_, crawler, url, payload, state=state, reason=reason)


@pytest.fixture
def buffer_path(tmp_path):
    """alpha: 5 delivered, 2 rejected, 3 pending (one after a failed try), 1 invalid, 1 filtered;
    beta: 3 delivered, 1 rejected; gamma: 1 invalid. Outcome times are set to known minutes."""
    path = tmp_path / "buffer.db"
    buffer = SQLiteBuffer(path)
    buffer.enqueue([_row(f"a{i}") for i in range(10)], dedup=True)
    buffer.enqueue(
        [
            _row("ai0", state=INVALID, reason="url: not a url"),
            _row("af0", state=FILTERED, reason="filter 3"),
        ],
        dedup=True,
    )
    buffer.enqueue([_row(f"b{i}", "beta") for i in range(4)], dedup=True)
    buffer.enqueue(
        [_row("gi0", "gamma", state=INVALID, reason='=HYPERLINK("http://evil")')], dedup=True
    )
    claimed = [c.id for c in buffer.claim("alpha", "test", 8, 60)]
    assert claimed == [f"a{i}" for i in range(8)]
    buffer.ack({f"a{i}": "accepted" for i in range(5)}, {"a5": "bad mime", "a6": "too <big>"})
    buffer.release(["a7"], "HTTP 503", 0)
    buffer.claim("beta", "test", 4, 60)
    buffer.ack({"b0": "accepted", "b1": "duplicate", "b2": "accepted"}, {"b3": "dup%_\\ reason"})
    buffer.set_meta(
        "filters",
        orjson.dumps(
            {"filters": [{"id": 1}, {"id": 2}, {"id": 3}], "version": "v9", "fetched_at": T0 - 30}
        ).decode(),
    )
    outcome_times = {
        "a0": 5,
        "a1": 10,
        "a2": 65,
        "a3": 70,
        "a4": 200,
        "a5": 15,
        "a6": 130,
        "b0": 61,
        "b1": 62,
        "b2": 63,
        "b3": 250,
    }
    buffer.db.conn.execute("UPDATE results SET created_at = ?", (CREATED,))
    buffer.db.conn.execute("UPDATE results SET created_at = ? WHERE id = 'a7'", (T0 - 5000,))
    buffer.db.conn.executemany(
        "UPDATE results SET delivered_at = ? WHERE id = ?",
        [(T0 + s, id_) for id_, s in outcome_times.items()],
    )
    buffer.close()
    return path


@pytest.fixture
def conn(buffer_path):
    with queries.open_readonly(buffer_path) as connection:
        yield connection


# -- overview -------------------------------------------------------------------------------


def test_state_totals_count_every_state(conn):
    assert queries.state_totals(conn) == {
        "pending": 3,
        "in_flight": 0,
        "delivered": 8,
        "rejected": 3,
        "filtered": 1,
        "invalid": 2,
    }


def test_oldest_pending_age_is_the_oldest_waiting_row(conn, buffer_path):
    assert queries.oldest_pending_age(conn, now=T0) == 5000
    writable = sqlite3.connect(buffer_path)
    writable.execute("UPDATE results SET state = 'delivered' WHERE state = 'pending'")
    writable.commit()
    writable.close()
    assert queries.oldest_pending_age(conn, now=T0) is None


def test_filters_info_reads_the_meta_cache(conn, buffer_path, tmp_path):
    assert queries.filters_info(conn) == {"version": "v9", "count": 3, "fetched_at": T0 - 30}
    assert views.fmt_filters(queries.filters_info(conn), now=T0)["filters.fetched"] == "30s ago"
    empty = SQLiteBuffer(tmp_path / "empty.db")
    empty.set_meta("filters", "{not json")
    empty.close()
    with queries.open_readonly(tmp_path / "empty.db") as other:
        assert queries.filters_info(other)["error"] == "the cached filters are not JSON"
        other_totals = queries.state_totals(other)
    assert sum(other_totals.values()) == 0


def test_file_sizes_report_the_file(buffer_path):
    sizes = queries.file_sizes(buffer_path)
    assert sizes["file"] == buffer_path.stat().st_size > 0
    assert views.fmt_sizes({"file": 2048, "wal": 1536 * 1024}) == "2.0 KiB (+ 1.5 MiB WAL)"


def test_crawler_table_counts_per_crawler(conn):
    page = queries.crawler_table(conn)
    assert [r["crawler"] for r in page.rows] == ["alpha", "beta", "gamma"]
    alpha, beta, gamma = page.rows
    assert alpha == {
        "crawler": "alpha",
        "buffered": 12,
        "delivered": 5,
        "rejected": 2,
        "invalid": 1,
        "filtered": 1,
        "pending": 3,
        "last_delivery": T0 + 200,
    }
    assert (beta["buffered"], beta["delivered"], beta["rejected"], beta["pending"]) == (4, 3, 1, 0)
    assert beta["last_delivery"] == T0 + 63
    assert (gamma["buffered"], gamma["invalid"], gamma["last_delivery"]) == (1, 1, None)


def test_crawler_table_sorts_by_allowed_keys_only_and_paginates(conn):
    by = lambda **kw: [r["crawler"] for r in queries.crawler_table(conn, **kw).rows]  # noqa: E731
    assert by(sort="buffered", descending=True) == ["alpha", "beta", "gamma"]
    assert by(sort="buffered") == ["gamma", "beta", "alpha"]
    assert by(sort="last_delivery") == [
        "beta",
        "alpha",
        "gamma",
    ]  # never delivered: last either way
    assert by(sort="last_delivery", descending=True) == ["alpha", "beta", "gamma"]
    second = queries.crawler_table(conn, per_page=2, page=2)
    assert ([r["crawler"] for r in second.rows], second.total, second.pages) == (["gamma"], 3, 2)
    assert queries.crawler_table(conn, page=9).rows == []
    with pytest.raises(ValueError, match="sort"):
        queries.crawler_table(conn, sort="crawler; DROP TABLE results")


# -- throughput -----------------------------------------------------------------------------


def test_throughput_counts_outcomes_per_minute(conn):
    chart = queries.throughput(conn, T0, T0 + 300)
    assert (chart.start, chart.bucket) == (T0, 60)
    assert chart.delivered == [2, 5, 0, 1, 0]
    assert chart.rejected == [1, 0, 1, 0, 1]


def test_throughput_widens_buckets_over_long_spans(conn):
    chart = queries.throughput(conn, T0, T0 + 10 * 3600, max_buckets=60)
    assert chart.bucket == 600 and len(chart.delivered) == 60
    assert (chart.delivered[0], chart.rejected[0], sum(chart.delivered[1:])) == (8, 3, 0)
    assert queries.first_outcome_time(conn) == T0 + 5


def test_throughput_chart_is_svg_with_one_rect_per_outcome_kind_and_minute(conn):
    drawing = svg(queries.throughput(conn, T0, T0 + 300))
    assert drawing.startswith("<svg") and drawing.endswith("</svg>")
    assert (
        drawing.count('<rect class="delivered"') == 3 + 1
    )  # three minutes with deliveries, plus the legend
    assert drawing.count('<rect class="rejected"') == 3 + 1
    assert (nice_ceiling(0), nice_ceiling(7), nice_ceiling(11), nice_ceiling(200)) == (
        1,
        10,
        20,
        200,
    )


# -- rejected and invalid rows --------------------------------------------------------------


def _ids(page):
    return sorted(r["id"] for r in page.rows)


def test_rows_page_lists_rejected_and_invalid(conn):
    page = queries.rows_page(conn, queries.Selection())
    assert page.total == 5
    assert _ids(page) == ["a5", "a6", "ai0", "b3", "gi0"]
    rejected = queries.rows_page(conn, queries.Selection(states=("rejected",)))
    assert _ids(rejected) == ["a5", "a6", "b3"]
    assert {r["reason"] for r in rejected.rows} == {"bad mime", "too <big>", "dup%_\\ reason"}
    assert all(r["attempts"] == 1 for r in rejected.rows)
    assert _ids(queries.rows_page(conn, queries.Selection(crawler="gamma"))) == ["gi0"]


def test_rows_search_is_literal_and_parameterised(conn):
    search = lambda text: _ids(queries.rows_page(conn, queries.Selection(search=text)))  # noqa: E731
    assert search("BIG") == ["a6"]  # case-insensitive, over the reason
    assert search("not a url") == ["ai0", "gi0"] and search("url ai0") == ["ai0"]
    assert search("%") == ["b3"] and search("_") == ["b3"] and search("\\") == ["b3"]
    assert search("' OR 1=1 --") == []
    assert search("<script>alert(1)</script>") == []
    assert search("a5") == ["a5"]


def test_rows_sort_and_pagination(conn):
    by_reason = queries.rows_page(conn, queries.Selection(sort="reason", descending=False))
    assert [r["id"] for r in by_reason.rows][:2] == ["gi0", "a5"]  # "=HYP..." < "bad mime"
    first = queries.rows_page(
        conn, queries.Selection(sort="rejected_at", descending=False), per_page=2
    )
    assert ([r["id"] for r in first.rows], first.pages) == (["a5", "a6"], 3)
    beyond = queries.rows_page(conn, queries.Selection(), page=50, per_page=2)
    assert (beyond.rows, beyond.total) == ([], 5)
    with pytest.raises(ValueError, match="sort"):
        queries.rows_page(conn, queries.Selection(sort="rowid; --"))
    with pytest.raises(ValueError, match="state"):
        queries.rows_page(conn, queries.Selection(states=("pending') OR ('1",)))


def test_row_detail_has_payload_and_history(conn):
    row = queries.row_detail(conn, "a6")
    assert (row["state"], row["reason"], row["attempts"], row["delivered_at"]) == (
        "rejected",
        "too <big>",
        1,
        T0 + 130,
    )
    assert orjson.loads(row["payload"])["filename"] == "a6.mp3"
    assert "\n" in row["payload"]  # pretty-printed
    retried = queries.row_detail(conn, "a7")
    assert (retried["state"], retried["attempts"], retried["last_error"]) == (
        "pending",
        1,
        "HTTP 503",
    )
    assert queries.row_detail(conn, "no-such-id") is None


def test_delivered_page_for_remote_status(conn):
    page = queries.delivered_page(conn)
    assert page.total == 8
    assert page.rows[0]["id"] == "a4"  # newest outcome first
    assert _ids(queries.delivered_page(conn, crawler="beta")) == ["b0", "b1", "b2"]
    assert _ids(queries.delivered_page(conn, search="a3.mp3")) == ["a3"]
    assert queries.crawler_names(conn) == ["alpha", "beta", "gamma"]


# -- exports --------------------------------------------------------------------------------


def test_csv_export_of_a_selection(conn):
    rows = list(queries.iter_selection(conn, queries.Selection()))
    table = list(csv.reader(io.StringIO(exports.to_csv(rows).decode("utf-8"))))
    assert table[0] == list(exports.COLUMNS)
    by_id = {line[0]: dict(zip(table[0], line, strict=True)) for line in table[1:]}
    assert sorted(by_id) == ["a5", "a6", "ai0", "b3", "gi0"]
    assert by_id["a6"]["reason"] == "too <big>" and by_id["a6"]["delivered_at"] == iso(T0 + 130)
    assert by_id["gi0"]["reason"].startswith("'=")  # no formula reaches a spreadsheet
    assert orjson.loads(by_id["a5"]["payload"])["filename"] == "a5.mp3"


def test_jsonl_export_keeps_payload_json(conn):
    lines = exports.to_jsonl(
        queries.iter_selection(conn, queries.Selection(states=("rejected",)))
    ).splitlines()
    records = [orjson.loads(line) for line in lines]
    assert sorted(r["id"] for r in records) == ["a5", "a6", "b3"]
    assert all(isinstance(r["payload"], dict) for r in records)
    assert {r["reason"] for r in records} == {"bad mime", "too <big>", "dup%_\\ reason"}


def test_xlsx_export(conn):
    openpyxl = pytest.importorskip("openpyxl")
    data = exports.to_xlsx(queries.iter_selection(conn, queries.Selection()))
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    values = list(sheet.values)
    assert values[0] == exports.COLUMNS
    assert sorted(v[0] for v in values[1:]) == ["a5", "a6", "ai0", "b3", "gi0"]
    assert all(not str(cell).startswith("=") for row in values for cell in row if cell is not None)


def test_xlsx_without_openpyxl_says_so(monkeypatch, conn):
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    assert not exports.xlsx_available()
    with pytest.raises(exports.ExportUnavailable, match="openpyxl"):
        exports.to_xlsx([])


# -- the one write, and read-only access ----------------------------------------------------


def test_requeue_touches_only_rejected_and_invalid_rows(buffer_path, conn):
    done = queries.requeue(buffer_path, ["a5", "b3", "gi0", "a0", "a8", "no-such-id", "a5"])
    assert done == Requeued(requeued=2, still_invalid=1)
    after = {r: queries.row_detail(conn, r) for r in ("a5", "b3", "gi0", "a0")}
    assert {r: after[r]["state"] for r in after} == {
        "a5": "pending",
        "b3": "pending",
        "gi0": "invalid",
        "a0": "delivered",
    }
    assert after["a5"]["reason"] is None and after["a5"]["ready_at"] == 0
    # an invalid row is mapped again, not sent as stored: still invalid, with the new reason
    assert after["gi0"]["reason"] == "url is not an absolute http(s) URL: 'not a url gi0'"
    assert queries.state_totals(conn)["pending"] == 5
    assert queries.requeue(buffer_path, []) == Requeued(0)
    buffer = SQLiteBuffer(buffer_path)
    try:
        assert {c.id for c in buffer.claim("beta", "me", 10, 60)} == {"b3"}
    finally:
        buffer.close()


def test_requeue_sends_an_invalid_row_the_field_map_now_makes_valid(buffer_path, conn):
    _, kept = ResultMapper().keep({"link": "https://files.example.com/fixed.mp3", "size": 3})
    buffer = SQLiteBuffer(buffer_path)
    buffer.enqueue([Row("fix0", "gamma", "", kept, INVALID, "url is missing")], dedup=True)
    buffer.close()
    done = queries.requeue(buffer_path, ["fix0", "gi0"], field_map={"link": "url"}, dedup=True)
    assert done == Requeued(requeued=1, still_invalid=1)
    buffer = SQLiteBuffer(buffer_path)
    try:
        (claimed,) = buffer.claim("gamma", "me", 10, 60)
    finally:
        buffer.close()
    assert claimed.id == stable_result_id(
        "gamma", "https://files.example.com/fixed.mp3"
    )  # the pipeline's id
    result = orjson.loads(claimed.payload)
    assert (result["id"], result["url"], result["extra"]) == (
        claimed.id,
        "https://files.example.com/fixed.mp3",
        {"size": 3},
    )


def test_readonly_connection_cannot_write(conn):
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        conn._conn.execute("DELETE FROM results")  # the reader's own connection: it has no write
    assert queries.state_totals(conn)["delivered"] == 8


def test_reader_does_not_block_a_writer(buffer_path):
    buffer = SQLiteBuffer(buffer_path, busy_timeout=0.5)
    try:
        with queries.open_readonly(buffer_path) as conn:
            conn._conn.execute("BEGIN")  # the reader's own connection: a read snapshot stays open
            before = queries.state_totals(conn)["pending"]
            assert buffer.enqueue([_row("late")], dedup=True) == [True]  # no "database is locked"
            assert queries.state_totals(conn)["pending"] == before
            conn._conn.execute("COMMIT")
            assert queries.state_totals(conn)["pending"] == before + 1
    finally:
        buffer.close()


def test_check_buffer_names_the_problem(tmp_path, buffer_path):
    queries.check_buffer(buffer_path)
    with pytest.raises(queries.BufferUnavailable, match="does not exist"):
        queries.check_buffer(tmp_path / "missing.db")
    with pytest.raises(queries.BufferUnavailable, match="is not a file"):
        queries.check_buffer(tmp_path)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(queries.BufferUnavailable, match="not a readable SQLite buffer"):
        queries.check_buffer(corrupt)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(queries.BufferUnavailable, match="not an SDI buffer"):
        queries.check_buffer(other)


def test_check_buffer_upgrades_a_buffer_of_an_older_scrapy_sdi(tmp_path):
    path = tmp_path / "old.db"
    schema_1_buffer(path, [("r1", "rejected", "bad mime")])
    queries.check_buffer(path)
    with queries.open_readonly(path) as conn:
        detail = queries.row_detail(conn, "r1")
        assert detail is not None and detail["reason"] == "bad mime"
        assert orjson.loads(detail["payload"]) == {"id": "r1"}
        assert [
            r["id"] for r in queries.rows_page(conn, queries.Selection(search='"r1"')).rows
        ] == ["r1"]


# -- what the pages show of these queries ---------------------------------------------------


def test_pages_escape_every_value(conn):
    page = queries.rows_page(conn, queries.Selection())
    html = views.rows(
        {"page": page, "crawlers": ["<img src=x onerror=alert(1)>"]},
        {"q": '"><script>alert(1)</script>'},
        buffer_path="b.db",
        token=None,
        xlsx=True,
    ).decode()
    assert "<script>alert" not in html and "<img src=x" not in html and "too <big>" not in html
    assert "too &lt;big&gt;" in html and "&quot;&gt;&lt;script&gt;" in html
    detail = views.row_detail(
        queries.row_detail(conn, "a6"), buffer_path="b.db", token=None
    ).decode()
    assert "<b>a6</b>" not in detail and "&lt;b&gt;a6&lt;/b&gt;" in detail
