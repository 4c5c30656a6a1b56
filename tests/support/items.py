"""Item types other than dict, with the contract's fields and one more, for mapping tests and spiders."""

from __future__ import annotations

import dataclasses
from typing import Any

import attrs
import scrapy

_FIELDS = ("url", "filename", "referrer", "description", "uploader", "crawled_at", "size")


class FileItem(scrapy.Item):
    url = scrapy.Field()
    filename = scrapy.Field()
    referrer = scrapy.Field()
    description = scrapy.Field()
    uploader = scrapy.Field()
    crawled_at = scrapy.Field()
    size = scrapy.Field()


#: The same fields as a dataclass and as an attrs class, every one None by default.
FileDataclass = dataclasses.make_dataclass(
    "FileDataclass", [(name, Any, dataclasses.field(default=None)) for name in _FIELDS]
)
FileAttrs = attrs.make_class("FileAttrs", {name: attrs.field(default=None) for name in _FIELDS})
