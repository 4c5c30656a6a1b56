"""The queries behind each dashboard page, on a buffer with known counts built by the real buffer."""

from __future__ import annotations

import csv
import io
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from scrapy_sdi.buffer import FILTERED, INVALID, Buffer, Row, SQLiteBuffer
from scrapy_sdi.buffer_postgres import PostgresBuffer
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


def _fill(buffer: Buffer) -> None:
    """alpha: 5 delivered, 2 rejected, 3 pending (one after a failed try), 1 invalid, 1 filtered;
    beta: 3 delivered, 1 rejected; gamma: 1 invalid."""
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


#: Outcome times, set to known minutes after T0.
OUTCOME_TIMES = {
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


class SQLiteSource:
    """A buffer file, changed behind the buffer's back with plain SQL where a test needs it."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.settings = SimpleNamespace(buffer="sqlite", buffer_path=str(path), buffer_url="")

    def buffer(self) -> Buffer:
        return SQLiteBuffer(self.path)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """``sql`` on the table ``results``, with ``?`` parameters."""
        with sqlite3.connect(self.path) as db:
            db.execute(sql, params)
        db.close()

    def requeue(self, ids: list[str], **kwargs: Any) -> Requeued:
        return queries.requeue(self.path, ids, **kwargs)


class PostgresSource(SQLiteSource):
    """A fresh database of the session's private PostgreSQL server."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = SimpleNamespace(buffer="postgres", buffer_path="", buffer_url=url)

    def buffer(self) -> Buffer:
        return PostgresBuffer(self.url)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(sql.replace("results", "sdi_results").replace("?", "%s"), params)

    def requeue(self, ids: list[str], **kwargs: Any) -> Requeued:
        return queries.requeue_in(self.buffer(), ids, **kwargs)


def _known_buffer(source: SQLiteSource) -> SQLiteSource:
    buffer = source.buffer()
    _fill(buffer)
    buffer.close()
    source.execute("UPDATE results SET created_at = ?", (CREATED,))
    source.execute("UPDATE results SET created_at = ? WHERE id = 'a7'", (T0 - 5000,))
    for id_, s in OUTCOME_TIMES.items():
        source.execute("UPDATE results SET delivered_at = ? WHERE id = ?", (T0 + s, id_))
    return source


@pytest.fixture
def buffer_path(tmp_path):
    """The known buffer in a SQLite file."""
    return _known_buffer(SQLiteSource(tmp_path / "buffer.db")).path


@pytest.fixture(params=["sqlite", "postgres"])
def source(request, tmp_path):
    """The known buffer in a SQLite file, then in a PostgreSQL database."""
    if request.param == "sqlite":
        return _known_buffer(SQLiteSource(tmp_path / "buffer.db"))
    return _known_buffer(PostgresSource(request.getfixturevalue("postgres_db").url))


@pytest.fixture
def conn(source):
    with queries.Source(source.settings).reader() as connection:
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


def test_oldest_pending_age_is_the_oldest_waiting_row(conn, source):
    assert queries.oldest_pending_age(conn, now=T0) == 5000
    source.execute("UPDATE results SET state = 'delivered' WHERE state = 'pending'")
    assert queries.oldest_pending_age(conn, now=T0) is None


def test_filters_info_reads_the_meta_cache(conn, source):
    assert queries.filters_info(conn) == {"version": "v9", "count": 3, "fetched_at": T0 - 30}
    assert views.fmt_filters(queries.filters_info(conn), now=T0)["filters.fetched"] == "30s ago"
    buffer = source.buffer()
    buffer.set_meta("filters", "{not json")
    buffer.close()
    assert queries.filters_info(conn)["error"] == "the cached filters are not JSON"


def test_an_empty_buffer_reads_as_empty(tmp_path):
    empty = SQLiteBuffer(tmp_path / "empty.db")
    empty.close()
    with queries.open_readonly(tmp_path / "empty.db") as other:
        assert (
            sum(queries.state_totals(other).values()) == 0 and queries.filters_info(other) is None
        )


def test_a_database_no_crawl_used_reads_as_empty_and_is_left_alone(postgres_db):
    """The reader creates no schema: a fresh database is schema 0 with nothing in it."""
    source = PostgresSource(postgres_db.url)
    with queries.Source(source.settings).reader() as reader:
        assert reader.schema() == (0, set())
        assert sum(queries.state_totals(reader).values()) == 0
        assert queries.filters_info(reader) is None and queries.oldest_pending_age(reader) is None
        assert queries.crawler_table(reader).rows == [] and queries.crawler_names(reader) == []
        assert queries.rows_page(reader, queries.Selection()).total == 0
        assert queries.throughput(reader, T0, T0 + 60).delivered == [0]
        assert queries.row_detail(reader, "x") is None and reader.server().startswith("PostgreSQL ")
    assert (
        postgres_db.server.psql(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", postgres_db.name
        )
        == "0"
    )


def test_file_sizes_report_the_file(conn, source):
    held = queries.sizes(conn)  # the file, or the tables and their indexes
    assert held["file"] > 0 and held["wal"] >= 0
    if source.name == "sqlite":
        assert held == queries.file_sizes(source.path)
        assert held["file"] == source.path.stat().st_size
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


def test_requeue_touches_only_rejected_and_invalid_rows(source, conn):
    done = source.requeue(["a5", "b3", "gi0", "a0", "a8", "no-such-id", "a5"])
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
    assert source.requeue([]) == Requeued(0)
    buffer = source.buffer()
    try:
        assert {c.id for c in buffer.claim("beta", "me", 10, 60)} == {"b3"}
    finally:
        buffer.close()


def test_requeue_sends_an_invalid_row_the_field_map_now_makes_valid(source, conn):
    _, kept = ResultMapper().keep({"link": "https://files.example.com/fixed.mp3", "size": 3})
    buffer = source.buffer()
    buffer.enqueue([Row("fix0", "gamma", "", kept, INVALID, "url is missing")], dedup=True)
    buffer.close()
    done = source.requeue(["fix0", "gi0"], field_map={"link": "url"}, dedup=True)
    assert done == Requeued(requeued=1, still_invalid=1)
    buffer = source.buffer()
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


def test_readonly_connection_cannot_write(conn, source):
    if source.name == "sqlite":
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            conn._conn.execute("DELETE FROM results")  # the reader's own connection: no write
    else:
        import psycopg

        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn._conn.execute("DELETE FROM sdi_results")
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


def test_a_postgresql_reader_keeps_the_urls_options(postgres_db):
    """A fleet may keep its buffer in a schema of its own (options=-csearch_path=...): the reader
    reads there too, read-only, as the buffer writes there."""
    postgres_db.server.psql("CREATE SCHEMA crawl AUTHORIZATION sdi", postgres_db.name)
    url = postgres_db.url + "?options=-csearch_path%3Dcrawl"
    buffer = PostgresBuffer(url)
    _fill(buffer)
    buffer.close()
    public = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert postgres_db.server.psql(public, postgres_db.name) == "0"
    source = PostgresSource(url)
    with queries.Source(source.settings).reader() as reader:
        assert reader.schema()[0] == 1 and queries.state_totals(reader)["delivered"] == 8
        assert reader._one("SHOW default_transaction_read_only") == "on"
        assert reader._one("SHOW search_path") == "crawl"
