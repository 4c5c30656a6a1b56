"""Crawl the demo file-sharing site and report every file link it lists.

    scrapy crawl files                                  # DEMO_SITE_URL, else http://127.0.0.1:8751/
    scrapy crawl files -a site=http://127.0.0.1:9000/   # another site for this run
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import scrapy

from demo.items import FileResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from scrapy.http import Response

DEFAULT_SITE_URL = "http://127.0.0.1:8751/"


class FilesSpider(scrapy.Spider):
    name = "files"
    #: Set with ``-a site=URL``; Scrapy stores spider arguments as attributes.
    site: str | None = None

    async def start(self) -> AsyncIterator[scrapy.Request]:
        site = self.site or self.settings.get("DEMO_SITE_URL") or DEFAULT_SITE_URL
        yield scrapy.Request(site, callback=self.parse)

    def parse(self, response: Response) -> Iterator[scrapy.Request]:
        """The index: follow every category."""
        categories = response.css("ul.categories li.category a")
        yield from response.follow_all(categories, callback=self.parse_category)

    def parse_category(self, response: Response) -> Iterator[FileResult | scrapy.Request]:
        """A category page: one FileResult per listed file, then the next page."""
        for entry in response.css("ul.files li.file"):
            link = entry.css("a.download")
            href = link.attrib.get("href")
            if not href:
                continue
            url = response.urljoin(href)
            yield FileResult(
                url=url,
                filename=_filename(link.css("::text").get(), url),
                referrer=response.url,
                description=_text(entry.css(".description ::text").getall()),
                uploader=_text(entry.css(".uploader ::text").getall()),
            )
        next_pages = response.css("nav.pagination a[rel=next]")
        yield from response.follow_all(next_pages, callback=self.parse_category)


def _text(parts: list[str]) -> str | None:
    text = " ".join(" ".join(parts).split())
    return text or None


def _filename(link_text: str | None, url: str) -> str:
    """The link's text when it names a file ("song.mp3"), else the last segment of the path."""
    text = (link_text or "").strip()
    if text and " " not in text and "." in text.strip("."):
        return text
    return posixpath.basename(unquote(urlsplit(url).path)) or url
