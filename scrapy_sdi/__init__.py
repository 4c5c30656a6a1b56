"""scrapy_sdi: deliver Scrapy crawl results to the SDI crawler-results API, durably and in batches."""

from scrapy_sdi.errors import (
    SDIAuthError,
    SDIBadRequest,
    SDIBatchTooLarge,
    SDIConfigError,
    SDIError,
    SDINetworkError,
    SDIRateLimited,
    SDIServiceError,
)
from scrapy_sdi.extension import SDIStatus
from scrapy_sdi.pipeline import SDIPipeline

__all__ = [
    "SDIAuthError",
    "SDIBadRequest",
    "SDIBatchTooLarge",
    "SDIConfigError",
    "SDIError",
    "SDINetworkError",
    "SDIPipeline",
    "SDIRateLimited",
    "SDIServiceError",
    "SDIStatus",
]
