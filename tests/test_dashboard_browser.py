"""The dashboard as users run it: a subprocess over a buffer filled by a real crawl, driven by
headless Chromium, plus its command-line and HTTP edges checked without a browser.

Chromium and chromedriver come from Debian (``apt-get install -y chromium chromium-driver``),
selenium from PyPI. Without them the browser test skips locally and FAILS when ``CI`` is set.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest

from scrapy_sdi.buffer import FILTERED, INVALID, STATES, Buffer, Row, SQLiteBuffer
from scrapy_sdi.buffer_postgres import PostgresBuffer
from tests.support.crawl import ROOT, run_crawl
from tests.support.dashboard import Dashboard, fetch, run_dashboard_cli
from tests.support.postgres import PASSWORD

DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
N, BAD_EVERY = 60, 10  # ids 0, 10, ... 50 are invalid
REJECT_PATTERN = r"/f/\d*7/"  # urls of ids ending in 7 are rejected by the server


# -- the dashboard as a subprocess ----------------------------------------------------------


@pytest.fixture
def start_dashboard(tmp_path):
    started: list[Dashboard] = []

    def start(buffer: Path, *args: str, env: dict[str, str] | None = None) -> Dashboard:
        dashboard = Dashboard(buffer, tmp_path, *args, env=env)
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()


def _open(target: Path | str) -> Buffer:
    """The buffer in the file at ``target``, or in the PostgreSQL database at that URL."""
    return PostgresBuffer(target) if isinstance(target, str) else SQLiteBuffer(target)


def counts(target: Path | str) -> dict[str, int]:
    buffer = _open(target)
    try:
        return buffer.counts()
    finally:
        buffer.close()


def state_of(target: Path | str, row_id: str) -> str:
    buffer = _open(target)
    try:
        (state,) = [s for s in STATES for row in buffer.export(s, ids=[row_id])]
        return state
    finally:
        buffer.close()


# -- the browser ----------------------------------------------------------------------------


def _browser_missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install -y chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path):
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the browser test cannot run: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str, timeout: float = 15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=what
    )


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def field(driver, name: str) -> str:
    return text_of(driver, f'[data-field="{name}"]')


def test_dashboard_in_a_real_browser(sdi_server_factory, tmp_path, browser, start_dashboard):
    from selenium.webdriver.common.by import By

    # a real crawl fills the buffer: delivered, rejected by the server, and invalid rows
    server = sdi_server_factory(reject_url_pattern=REJECT_PATTERN)
    buffer_path = tmp_path / "buffer.db"
    crawl = run_crawl(
        tmp_path,
        {**server.settings, "SDI_BUFFER_PATH": str(buffer_path)},
        {"n": N, "bad_every": BAD_EVERY},
    )
    assert crawl.returncode == 0, crawl.log[-3000:]
    expected = counts(buffer_path)
    rejected_ids = sorted(i for i in range(N) if i % 10 == 7)
    assert expected["rejected"] == len(rejected_ids) and expected["invalid"] == N // BAD_EVERY
    assert expected["delivered"] == N - expected["rejected"] - expected["invalid"] > 0
    shots = tmp_path / "screenshots"
    shots.mkdir()
    secret = server.password
    env = {"SDI_USERNAME": server.username, "SDI_PASSWORD": secret}
    dashboard = start_dashboard(buffer_path, "--allow-actions", "--api-url", server.url, env=env)
    seen_sources: list[str] = []

    def visit(path: str) -> None:
        browser.get(dashboard.url + path)
        wait_for(
            browser,
            lambda d: d.execute_script("return document.readyState") == "complete",
            "page load",
        )

    def keep_source() -> None:
        seen_sources.append(browser.page_source)

    # overview: the numbers are the buffer's own counts
    visit("/")
    for state, n in expected.items():
        assert field(browser, f"state.{state}") == str(n), state
    assert field(browser, "state.total") == str(sum(expected.values()))
    cells = [
        td.text
        for td in browser.find_elements(By.CSS_SELECTOR, "#crawlers tbody tr:first-child td")
    ]
    assert cells[:8] == [
        "synthetic",
        str(sum(expected.values())),
        str(expected["delivered"]),
        str(expected["rejected"]),
        str(expected["invalid"]),
        str(expected["filtered"]),
        str(expected["pending"] + expected["in_flight"]),
        cells[7],
    ]
    wait_for(browser, lambda d: field(d, "health").startswith("ok"), "API health shown as ok")
    filters = orjson.loads(_meta(buffer_path, "filters"))
    assert field(browser, "filters.version") == str(filters["version"])
    assert field(browser, "filters.count") == str(len(filters["filters"]))
    browser.save_screenshot(str(shots / "overview.png"))
    if os.environ.get(
        "SDI_UPDATE_SCREENSHOT"
    ):  # the docs' picture (docs/dashboard.md), refreshed on request only
        browser.save_screenshot(str(DOCS_SCREENSHOT))
    keep_source()

    # another process writes to the buffer; the open page shows it without a reload
    browser.execute_script("window.notReloaded = true;")
    writer = SQLiteBuffer(buffer_path)
    writer.enqueue(
        [
            Row("late-1", "a-late-crawler", "https://late.example/1", b"{}"),
            Row("late-2", "a-late-crawler", "https://late.example/2", b"{}"),
        ],
        dedup=True,
    )
    writer.close()
    wait_for(
        browser,
        lambda d: field(d, "state.pending") == str(expected["pending"] + 2),
        "pending refreshed",
    )
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#crawlers tbody tr")) == 2,
        "crawler table refreshed",
    )
    assert browser.execute_script("return window.notReloaded === true")

    # the crawler table sorts by a column, both ways
    browser.find_element(By.CSS_SELECTOR, 'a.sort[data-sort="buffered"]').click()
    wait_for(browser, lambda d: "sort=buffered" in d.current_url, "sorted by buffered")
    first = lambda d: d.find_element(By.CSS_SELECTOR, "#crawlers tbody tr:first-child td").text  # noqa: E731
    assert first(browser) == "synthetic"  # descending first
    browser.find_element(By.CSS_SELECTOR, 'a.sort[data-sort="buffered"]').click()
    wait_for(browser, lambda d: "dir=asc" in d.current_url, "sorted ascending")
    assert first(browser) == "a-late-crawler"

    # throughput: delivered and rejected totals over the window match the buffer
    visit("/throughput")
    assert text_of(browser, "#throughput-delivered") == str(expected["delivered"])
    assert text_of(browser, "#throughput-rejected") == str(expected["rejected"])
    assert browser.find_elements(By.CSS_SELECTOR, "#throughput-chart rect.delivered")
    browser.save_screenshot(str(shots / "throughput.png"))
    keep_source()

    # rejected and invalid rows: listed, searchable, hostile input shown as text
    visit("/rows")
    assert text_of(browser, "#total-rows") == str(expected["rejected"] + expected["invalid"])
    search = browser.find_element(By.ID, "q")
    search.send_keys("not a url 20")
    browser.find_element(By.ID, "search").click()
    wait_for(browser, lambda d: "q=not+a+url+20" in d.current_url, "search submitted")
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr[data-id]")
    assert len(rows) == 1  # invalid rows keep an empty url; the reason names the bad value
    assert rows[0].find_elements(By.TAG_NAME, "td")[4].text == "invalid"
    assert "'not a url 20'" in rows[0].find_elements(By.TAG_NAME, "td")[5].text
    hostile = "<script>window.pwned=1</script>' OR 1=1 --"
    visit("/rows?" + urllib.parse.urlencode({"q": hostile}))
    assert text_of(browser, "#total-rows") == "0"
    assert browser.find_element(By.ID, "q").get_attribute("value") == hostile
    assert browser.execute_script("return window.pwned === undefined")
    browser.save_screenshot(str(shots / "rows-hostile-search.png"))

    # a row's detail: payload, id and history
    visit("/rows?state=rejected")
    browser.find_element(By.CSS_SELECTOR, "#rows tbody tr[data-id] td:nth-child(2) a").click()
    wait_for(browser, lambda d: "/row?id=" in d.current_url, "detail page")
    detail_id = field(browser, "id")
    assert state_of(buffer_path, detail_id) == "rejected"
    assert field(browser, "state") == "rejected" and field(browser, "attempts") == "1"
    assert "rejected pattern" in field(browser, "reason")
    payload = orjson.loads(text_of(browser, "#payload"))
    assert re.search(REJECT_PATTERN, payload["url"])
    browser.save_screenshot(str(shots / "detail.png"))
    keep_source()

    # download the current selection as CSV: the rows the buffer holds in those states
    visit("/rows")
    csv_url = browser.find_element(By.ID, "download-csv").get_attribute("href")
    status, headers, body = fetch(csv_url)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(table) == expected["rejected"] + expected["invalid"]
    assert {r["state"] for r in table} == {"rejected", "invalid"}
    assert sorted(
        r["reason"].rsplit(" ", 1)[1] for r in table if r["state"] == "invalid"
    ) == sorted(f"{i}'" for i in range(0, N, BAD_EVERY))
    assert sorted(r["id"] for r in table) == sorted(
        _ids_in(buffer_path, "rejected") + _ids_in(buffer_path, "invalid")
    )

    # requeue one rejected row with actions on
    visit("/rows?state=rejected")
    target = browser.find_element(By.CSS_SELECTOR, "#rows tbody tr[data-id]").get_attribute(
        "data-id"
    )
    browser.find_element(By.CSS_SELECTOR, f'#rows input[name=id][value="{target}"]').click()
    browser.save_screenshot(str(shots / "requeue-selected.png"))
    browser.find_element(By.ID, "requeue").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "flash"), "requeue confirmation")
    assert "Requeued 1 rows" in text_of(browser, "#flash")
    assert "state=rejected" in browser.current_url
    assert state_of(buffer_path, target) == "pending"
    assert text_of(browser, "#total-rows") == str(expected["rejected"] - 1)
    keep_source()

    # remote status: the API's current status and description for delivered URLs
    delivered_url = _first_delivered_url(buffer_path)
    server.set_status(delivered_url, 2)
    visit("/remote?" + urllib.parse.urlencode({"q": delivered_url}))
    row = browser.find_element(By.CSS_SELECTOR, "#remote tbody tr[data-url]")
    assert row.get_attribute("data-url") == delivered_url
    assert row.find_element(By.CSS_SELECTOR, "td.status").text == "under_review"
    assert "Queued for analyst review" in row.text
    visit("/remote")
    statuses = {td.text for td in browser.find_elements(By.CSS_SELECTOR, "#remote td.status")}
    assert "received" in statuses
    browser.save_screenshot(str(shots / "remote.png"))
    keep_source()

    # with actions off: no requeue button, and a forged request is refused
    readonly = start_dashboard(buffer_path)
    visit_other = readonly.url + "/rows?state=rejected"
    browser.get(visit_other)
    wait_for(browser, lambda d: d.find_elements(By.ID, "actions-off"), "actions-off note")
    assert not browser.find_elements(By.ID, "requeue")
    other = _ids_in(buffer_path, "rejected")[0]
    status, _, body = fetch(readonly.url + "/actions/requeue", data={"id": other, "token": "guess"})
    assert status == 403 and b"--allow-actions" in body
    # and with actions on, a request without the page's token or from another site is refused too
    status, _, _ = fetch(dashboard.url + "/actions/requeue", data={"id": other, "token": "guess"})
    assert status == 403
    status, _, _ = fetch(
        dashboard.url + "/actions/requeue",
        data={"id": other},
        headers={"Origin": "http://evil.example"},
    )
    assert status == 403
    assert state_of(buffer_path, other) == "rejected"

    # nothing shown anywhere carries the API password
    for source in seen_sources:
        assert secret not in source
    assert secret not in dashboard.stderr()


def _meta(path: Path, key: str) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]


def _ids_in(target: Path | str, state: str) -> list[str]:
    buffer = _open(target)
    try:
        return [row["id"] for row in buffer.export(state)]
    finally:
        buffer.close()


def _first_delivered_url(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT url FROM results WHERE state = 'delivered' ORDER BY rowid LIMIT 1"
        ).fetchone()[0]


# -- without a browser: the command line and the HTTP edges ---------------------------------


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def small_buffer(tmp_path) -> Path:
    """Rows whose every field is hostile: HTML and SQL in crawler names, URLs and reasons."""
    path = tmp_path / "small.db"
    _fill_small(SQLiteBuffer(path))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def small_store(request, tmp_path) -> Path | str:
    """The small buffer in a file, then in a database of the private PostgreSQL server (its URL)."""
    if request.param == "sqlite":
        return request.getfixturevalue("small_buffer")
    url = request.getfixturevalue("postgres_db").url
    _fill_small(PostgresBuffer(url))
    return url


def _fill_small(buffer: Buffer) -> None:
    hostile = "<script>alert('x')</script>"
    buffer.enqueue(
        [
            Row(
                f"r{i}", hostile, f"https://h.example/{i}?q={hostile}", orjson.dumps({"d": hostile})
            )
            for i in range(3)
        ],
        dedup=True,
    )
    buffer.enqueue(
        [
            Row(
                "bad",
                "c'; DROP TABLE results; --",
                "not a url",
                b"{}",
                state=INVALID,
                reason=hostile,
            ),
            Row("filt", "plain", "https://f.example/", b"{}", state=FILTERED),
        ],
        dedup=True,
    )
    claimed = buffer.claim(hostile, "t", 3, 60)
    buffer.ack({claimed[0].id: "accepted"}, {claimed[1].id: hostile})
    buffer.close()


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, small_buffer):
    before = counts(small_buffer)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(os.urandom(8192))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        missing, corrupted, directory, busy, bad_port = run_dashboard_cli(
            tmp_path,
            ("--buffer", str(tmp_path / "missing.db")),
            ("--buffer", str(corrupt)),
            ("--buffer", str(tmp_path)),
            ("--buffer", str(small_buffer), "--port", str(port)),
            ("--buffer", str(small_buffer), "--port", "70000"),
        )
    _assert_one_line_error(missing, "missing.db", "does not exist")
    _assert_one_line_error(corrupted, "corrupt.db", "not a readable")
    _assert_one_line_error(directory, "is not a file")
    _assert_one_line_error(busy, f"cannot listen on 127.0.0.1:{port}")
    _assert_one_line_error(bad_port, "70000")
    assert counts(small_buffer) == before  # nothing was changed on the way


def test_binding_beyond_loopback_warns_in_one_line(tmp_path, small_buffer, start_dashboard):
    dashboard = start_dashboard(small_buffer, "--bind", "0.0.0.0")
    lines = dashboard.stderr().strip().splitlines()  # written before the listening line
    assert len(lines) == 1 and lines[0].startswith("Warning:") and "0.0.0.0" in lines[0]
    port = dashboard.url.rsplit(":", 1)[1]
    status, _, _ = fetch(f"http://127.0.0.1:{port}/")
    assert status == 200


def test_bad_parameters_get_400_or_an_empty_result(small_store, start_dashboard):
    url = start_dashboard(small_store, "--allow-actions").url
    for path in (
        "/rows?page=0",
        "/rows?page=abc",
        "/rows?page=-1",
        "/rows?page=99999999999",
        "/rows?sort=rowid%3B%20DROP%20TABLE%20results",
        "/rows?per_page=7",
        "/rows?state=pending",
        "/?sort=crawler%20DESC",
        "/?dir=sideways",
        "/throughput?window=forever",
        "/row",
        "/export?format=exe",
        "/rows?q=%FF%FE",
    ):
        status, headers, body = fetch(url + path)
        assert status == 400, path
        assert headers["Content-Type"].startswith("text/html")
        assert b"Traceback" not in body and b"parameter" in body
    status, headers, body = fetch(url + "/api/overview?page=x")
    assert status == 400 and orjson.loads(body)["error"].startswith("parameter page")
    for path in (
        "/rows?page=500",
        "/rows?q=%27%20OR%20%271%27%3D%271",
        "/remote?q=%25",
        "/?page=9",
    ):
        status, _, body = fetch(url + path)
        assert status == 200 and b"<tr class=empty>" in body and b"data-id=" not in body, path
    assert fetch(url + "/row?id=nope")[0] == 404
    assert fetch(url + "/nope")[0] == 404
    assert fetch(url + "/actions/requeue")[0] == 405
    assert counts(small_store)["invalid"] == 1


def test_every_value_is_escaped_and_headers_are_strict(small_store, start_dashboard):
    url = start_dashboard(small_store, "--allow-actions").url
    for path in (
        "/",
        "/rows",
        "/row?id=bad",
        "/row?id=r1",
        "/remote",
        "/throughput",
        "/rows?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ):
        status, headers, body = fetch(url + path)
        assert status == 200, path
        assert b"<script>alert" not in body, path
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, rows = fetch(url + "/rows")
    assert b"&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in rows
    overview = orjson.loads(fetch(url + "/api/overview")[2])
    assert overview["totals"]["delivered"] == 1 and overview["totals"]["rejected"] == 1
    assert (
        overview["crawlers"]["rows"][0][0] == "<script>alert('x')</script>"
    )  # JSON, set as text by the page
    status, _, _ = fetch(url + "/", headers={"Host": "attacker.example"})
    assert status == 421  # a DNS-rebinding page cannot read the loopback dashboard


def test_requeue_needs_the_token_of_this_run(small_store, start_dashboard):
    dashboard = start_dashboard(small_store, "--allow-actions")
    _, _, page = fetch(dashboard.url + "/rows")
    token = re.search(rb'name=token value="([^"]+)"', page).group(1).decode()
    assert (
        fetch(dashboard.url + "/actions/requeue", data={"id": "bad", "token": token[:-1]})[0] == 403
    )
    assert state_of(small_store, "bad") == "invalid"
    status, headers, _ = fetch(
        dashboard.url + "/actions/requeue",
        data={"id": ["bad", "r0"], "token": token, "back": "state=invalid&evil=1"},
        headers={"Origin": dashboard.url},
    )
    assert status == 303 and headers["Location"] == "/rows?state=invalid&requeued=0&invalid=1"
    assert state_of(small_store, "bad") == "invalid"  # mapped again, not sent as stored: no url
    _, _, page = fetch(dashboard.url + headers["Location"])
    assert b"<b>1</b> invalid rows were mapped again and are still invalid" in page
    assert state_of(small_store, "r0") == "delivered"  # only rejected and invalid rows move
    rejected = _ids_in(small_store, "rejected")[0]
    status, headers, _ = fetch(
        dashboard.url + "/actions/requeue", data={"id": rejected, "token": token, "back_to": "row"}
    )
    assert status == 303 and headers["Location"] == "/row?" + urllib.parse.urlencode(
        {"id": rejected}
    )
    assert state_of(small_store, rejected) == "pending"
    restarted = start_dashboard(small_store, "--allow-actions")
    assert fetch(restarted.url + "/actions/requeue", data={"id": "r1", "token": token})[0] == 403


def test_xlsx_download_or_a_clear_404(small_store, start_dashboard):
    url = start_dashboard(small_store).url
    status, headers, body = fetch(url + "/export?format=xlsx&state=rejected")
    if importlib.util.find_spec("openpyxl") is None:
        assert status == 404 and b"openpyxl" in body
        return
    import openpyxl

    assert status == 200 and headers["Content-Disposition"].endswith('.xlsx"')
    values = list(openpyxl.load_workbook(io.BytesIO(body)).active.values)
    assert len(values) == 2 and values[1][3] == "rejected"
    status, headers, body = fetch(url + "/export?format=jsonl")
    assert status == 200
    assert sorted(orjson.loads(line)["id"] for line in body.splitlines()) == ["bad", "r1"]


def test_a_postgresql_dashboard_shows_its_buffer_without_the_password(postgres_db, start_dashboard):
    _fill_small(PostgresBuffer(postgres_db.url))
    dashboard = start_dashboard(postgres_db.url, "--allow-actions")
    masked = f"postgresql://sdi:***@127.0.0.1:{postgres_db.server.port}/{postgres_db.name}"
    bodies = []
    for path in (
        "/",
        "/api/overview",
        "/throughput",
        "/rows",
        "/row?id=bad",
        "/remote",
        "/export?state=all&format=csv",
        "/export?state=rejected&format=jsonl",
        "/metrics",
    ):
        status, _, body = fetch(dashboard.url + path)
        assert status == 200, (path, body[:300])
        bodies.append(body.decode("utf-8", "replace"))
    assert masked in bodies[0]  # the header names the database
    overview = orjson.loads(bodies[1])
    assert overview["totals"] == {**dict.fromkeys(STATES, 0), **counts(postgres_db.url)}
    assert overview["totals"]["delivered"] == 1 and overview["file_size"]["file"] > 0
    assert 'sdi_buffer_rows{crawler="plain",state="filtered"} 1.0' in bodies[-1], bodies[-1]
    for text in (*bodies, dashboard.stderr()):
        assert PASSWORD not in text


def test_a_postgresql_dashboard_that_cannot_start_says_why_in_one_line(tmp_path, postgres_db):
    from tests.support.postgres import _free_port

    port = _free_port()
    env = {"SDI_BUFFER_URL": f"postgresql://sdi:{PASSWORD}@127.0.0.1:{port}/nowhere"}
    (down,) = run_dashboard_cli(tmp_path, (), env=env)
    _assert_one_line_error(down, "unreachable", f"sdi:***@127.0.0.1:{port}/nowhere")
    assert PASSWORD not in down.stderr + down.stdout
    postgres_db.server.psql("CREATE TABLE sdi_schema (version integer)", postgres_db.name)
    postgres_db.server.psql("INSERT INTO sdi_schema VALUES (99)", postgres_db.name)
    (newer,) = run_dashboard_cli(tmp_path, (), env={"SDI_BUFFER_URL": postgres_db.url})
    _assert_one_line_error(newer, "schema 99, newer than this scrapy_sdi knows")


def test_a_postgresql_dashboard_on_a_database_no_crawl_used_creates_nothing(
    postgres_db, start_dashboard
):
    dashboard = start_dashboard(postgres_db.url)
    overview = orjson.loads(fetch(dashboard.url + "/api/overview")[2])
    assert set(overview["totals"].values()) == {0} and overview["crawlers"]["rows"] == []
    for path in ("/", "/rows", "/throughput", "/remote", "/export?format=csv"):
        assert fetch(dashboard.url + path)[0] == 200, path
    status, _, body = fetch(dashboard.url + "/metrics")  # read-only: it may not create the schema
    assert status == 503 and b"no scrapy_sdi tables yet" in body, body
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert postgres_db.server.psql(tables, postgres_db.name) == "0"


def test_a_postgresql_dashboard_answers_503_while_its_server_is_down_and_recovers_after(
    postgres_db, start_dashboard
):
    """The server gone under a running dashboard: each page says so in one line (the password
    masked), an action changes nothing, and the pages come back with the server."""
    _fill_small(PostgresBuffer(postgres_db.url))
    dashboard = start_dashboard(postgres_db.url, "--allow-actions")
    _, _, page = fetch(dashboard.url + "/rows")
    token = re.search(rb'name=token value="([^"]+)"', page).group(1).decode()
    pages = ("/", "/api/overview", "/rows", "/row?id=bad", "/throughput", "/export?format=csv")
    postgres_db.server.stop()
    try:
        for path in (*pages, "/metrics"):
            status, _, body = fetch(dashboard.url + path)
            assert status == 503 and b"the buffer cannot be read right now" in body, (path, body)
            assert PASSWORD.encode() not in body
        status, _, body = fetch(
            dashboard.url + "/actions/requeue", data={"id": "bad", "token": token}
        )
        assert status == 503 and b"could not be changed right now" in body, body
    finally:
        postgres_db.server.start_again()
    for path in (*pages, "/metrics"):
        assert fetch(dashboard.url + path)[0] == 200, path
    assert state_of(postgres_db.url, "bad") == "invalid"
    assert counts(postgres_db.url)["delivered"] == 1
    log = dashboard.stderr()
    assert PASSWORD not in log and "Traceback" not in log, log
