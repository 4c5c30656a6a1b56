"""The demo site starts, serves its pages, and links to exactly expected_files()."""

from __future__ import annotations

import json
import os
import posixpath
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import pytest_twisted

from scrapy_sdi.testing.demo_site import PAGE_SIZE, expected_files, listen

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PROJECT = ROOT / "example_project"
LINE = re.compile(r"^Demo site listening on (http://127\.0\.0\.1:(\d+)/)$")
CATEGORIES, FILES = 3, PAGE_SIZE * 2 + 3  # three pages per category


def _strict_env() -> dict[str, str]:
    """Lets ``-m tests.support.scrapy_strict`` be found from example_project/."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def _crawl(start: str) -> tuple[set[str], list[str]]:
    """Visit every page of the site from ``start``; return (pages, file paths linked, in order)."""
    site = urlsplit(start).netloc
    pages, todo, files = {start}, [start], []
    while todo:
        page = todo.pop()
        status, content_type, body = _get(page)
        assert status == 200, page
        assert content_type == "text/html; charset=utf-8"
        parser = _Links()
        parser.feed(body)
        for href in parser.hrefs:
            url = urljoin(page, href)
            parts = urlsplit(url)
            if parts.netloc != site:
                continue
            if parts.path.startswith(("/files/", "/private/")):
                files.append(parts.path)
            elif url not in pages:
                pages.add(url)
                todo.append(url)
    return pages, files


@pytest.fixture(scope="module")
def demo_site() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scrapy_sdi.testing.demo_site",
            "--port",
            "0",
            "--categories",
            str(CATEGORIES),
            "--files",
            str(FILES),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=30)
        match = LINE.match(line.rstrip("\n"))
        assert match, f"unexpected first line: {line!r}"
        assert int(match.group(2)) > 0
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_serves_index_and_404(demo_site: str) -> None:
    status, content_type, body = _get(demo_site)
    assert status == 200
    assert content_type == "text/html; charset=utf-8"
    assert body.count('class="category"') == CATEGORIES
    assert _get(demo_site + "no/such/page")[0] == 404
    assert _get(demo_site + "category/music/?page=99")[0] == 404


def test_links_exactly_the_expected_files(demo_site: str) -> None:
    pages, files = _crawl(demo_site)
    assert sorted(files) == expected_files(CATEGORIES, FILES)  # each linked once
    assert any("page=3" in page for page in pages)  # pagination reached


def test_expected_files_defaults_mix_for_filter_demos() -> None:
    files = expected_files()
    assert len(files) == len(set(files)) == 5 * 20
    assert files == expected_files(5, 20) == sorted(files)
    assert {path.rsplit(".", 1)[1] for path in files} == {"mp3", "mp4", "zip", "pdf", "tmp"}
    assert 0 < sum(path.endswith(".tmp") for path in files) < 20
    assert 0 < sum(path.startswith("/private/") for path in files) < 20
    assert expected_files(0, 20) == expected_files(5, 0) == []


@pytest_twisted.ensureDeferred
async def test_in_process_on_the_test_reactor() -> None:
    import treq
    from twisted.internet import reactor

    port = listen(reactor, 0, categories=1, files=2)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/category/music/"
        response = await treq.get(url, persistent=False)
        body = await response.text()
    finally:
        await port.stopListening()
    assert response.code == 200
    assert sorted(re.findall(r'href="(/(?:files|private)/[^"]+)"', body)) == expected_files(1, 2)


def test_example_spider_reports_every_file(demo_site: str, tmp_path: Path) -> None:
    """example_project's "files" spider finds every link, without deprecation warnings."""
    output = tmp_path / "items.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.scrapy_strict",
            "crawl",
            "files",
            "-a",
            f"site={demo_site}",
            "-o",
            f"{output}:jsonl",
            "-s",
            "ITEM_PIPELINES={}",
            "-s",
            "EXTENSIONS={}",
            "-s",
            "LOG_LEVEL=WARNING",
        ],
        cwd=EXAMPLE_PROJECT,
        env=_strict_env(),
        check=True,
        timeout=120,
    )
    items = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(urlsplit(item["url"]).path for item in items) == expected_files(CATEGORIES, FILES)
    for item in items:
        assert item["url"].startswith(demo_site)
        assert item["filename"] == posixpath.basename(urlsplit(item["url"]).path)
        assert urlsplit(item["referrer"]).path.startswith("/category/")
        assert item["description"] and item["uploader"]


def test_example_project_delivers_every_result_to_the_reference_server(
    demo_site: str, sdi_server, tmp_path: Path
) -> None:
    """The example project, configured as a user would, delivers every file it finds."""
    env = {
        **_strict_env(),
        "SDI_API_URL": sdi_server.url,
        "SDI_USERNAME": sdi_server.username,
        "SDI_PASSWORD": sdi_server.password,
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.scrapy_strict",
            "crawl",
            "files",
            "-a",
            f"site={demo_site}",
            "-s",
            f"SDI_BUFFER_PATH={tmp_path / 'buffer.db'}",
            "-s",
            "LOG_LEVEL=INFO",
        ],
        cwd=EXAMPLE_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = sdi_server.results()
    assert sorted(urlsplit(r["url"]).path for r in stored) == expected_files(CATEGORIES, FILES)
    assert all(r["crawler"] == "files" for r in stored)
    assert f"'sdi/items_delivered': {len(stored)}" in proc.stderr
    assert sdi_server.password not in proc.stderr + proc.stdout
