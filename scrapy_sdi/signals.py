"""scrapy_sdi's own signal, sent through the crawler's signal manager like Scrapy's.

``delivery_opened(delivery)`` is sent by SDIPipeline once its Outbox exists (``delivery.backlog``,
``delivery.state``), so that SDIStatus (or a user's extension) can report on it without reaching
into the pipeline.
"""

delivery_opened = object()
