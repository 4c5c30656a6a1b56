"""Spiders the tests crawl: results are yielded straight from start(), no site needed."""

from __future__ import annotations

import scrapy


class SyntheticSpider(scrapy.Spider):
    """Yields ``n`` file results (``-a n=...``), ids stable across runs: url-<offset+i>."""

    name = "synthetic"

    def __init__(self, n="100", offset="0", bad_every="0", poison_every="0", big_every="0", **kwargs):
        super().__init__(**kwargs)
        self.n, self.offset = int(n), int(offset)
        self.bad_every, self.poison_every, self.big_every = int(bad_every), int(poison_every), int(big_every)

    async def start(self):
        for i in range(self.offset, self.offset + self.n):
            if self.bad_every and i % self.bad_every == 0:
                yield {"url": f"not a url {i}", "filename": "bad.bin"}
                continue
            poison = "poison/" if self.poison_every and i % self.poison_every == 0 else ""
            big = self.big_every and i % self.big_every == 0
            yield {
                "url": f"https://files.example.com/f/{poison}{i}/file{i}.mp3",
                "referrer": "https://example.com/list",
                "description": "x" * 20_000 if big else f"sample {i}",
                "uploader": "tester",
            }
