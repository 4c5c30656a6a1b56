"""Spiders the tests crawl: results are yielded straight from start(), no site needed."""

from __future__ import annotations

import scrapy


class SyntheticSpider(scrapy.Spider):
    """Yields ``n`` file results (``-a n=...``), ids stable across runs: url-<offset+i>."""

    name = "synthetic"

    def __init__(self, n: str = "100", offset: str = "0", bad_every: str = "0", **kwargs):
        super().__init__(**kwargs)
        self.n, self.offset, self.bad_every = int(n), int(offset), int(bad_every)

    async def start(self):
        for i in range(self.offset, self.offset + self.n):
            if self.bad_every and i % self.bad_every == 0:
                yield {"url": f"not a url {i}", "filename": "bad.bin"}
                continue
            yield {
                "url": f"https://files.example.com/f/{i}/file{i}.mp3",
                "referrer": "https://example.com/list",
                "description": f"sample {i}",
                "uploader": "tester",
            }
