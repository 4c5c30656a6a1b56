"""The ``scrapy sdi`` command (registered through the ``scrapy.commands`` entry point)."""
