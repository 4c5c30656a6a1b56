"""scrapy_sdi: deliver Scrapy crawl results to the SDI crawler-results API, durably and in batches."""

from scrapy_sdi.addon import Addon
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

#: The one place the version is written: pyproject.toml reads it from here when building.
__version__ = "0.1.0"

__all__ = [
    "Addon",
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
    "__version__",
]
