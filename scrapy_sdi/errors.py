"""One exception hierarchy for everything the SDI API can answer, so callers catch by meaning."""

from __future__ import annotations


class SDIError(Exception):
    """Base of every scrapy_sdi error about talking to the API."""

    #: Whether resending the same request later may succeed.
    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SDIAuthError(SDIError):
    """Credentials or tokens were refused (401 after refresh and login were tried)."""


class SDINetworkError(SDIError):
    """Connection refused, dropped, or timed out: nothing is known about the request's fate."""

    retryable = True


class SDIServiceError(SDIError):
    """The API answered 5xx, or an answer that does not follow the contract."""

    retryable = True


class SDIRateLimited(SDIServiceError):
    """429 or 503 with Retry-After: wait at least ``retry_after`` seconds before resending."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float = 0.0
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class SDIBatchTooLarge(SDIError):
    """413: the batch has too many results or bytes; resend in batches of ``max_results``."""

    def __init__(
        self, message: str, *, status: int | None = 413, max_results: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.max_results = max_results


class SDIBadRequest(SDIError):
    """400: the request as a whole is malformed and will fail again as is."""


class SDIConfigError(ValueError):
    """A setting has a bad value; the message is one line naming the setting and the expected form."""
