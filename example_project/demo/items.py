"""Items of the demo project: one FileResult per file link a spider finds."""

import scrapy


class FileResult(scrapy.Item):
    """A file link, in the shape the SDI crawler-results API stores.

    ``url`` and ``filename`` are required; the other fields may be ``None``.
    """

    url = scrapy.Field()
    filename = scrapy.Field()
    referrer = scrapy.Field()
    description = scrapy.Field()
    uploader = scrapy.Field()
