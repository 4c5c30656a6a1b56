"""Every SDI_ setting, read once and validated into one frozen object.

A bad value must stop the crawl at start with one line naming the setting, not fail an hour later
deep inside a delivery callback, so everything is parsed and range-checked here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.utils.project import data_path

from scrapy_sdi.errors import SDIConfigError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

#: Settings that may also come from the environment or a ``.env`` file.
ENV_SETTINGS = ("SDI_API_URL", "SDI_USERNAME", "SDI_PASSWORD")
#: Settings that may also come from the environment or .env, the buffer's path and URL included.
FROM_ENVIRONMENT = (*ENV_SETTINGS, "SDI_BUFFER_PATH", "SDI_BUFFER_URL")
#: Settings whose values are never shown anywhere.
SECRET_SETTINGS = frozenset({"SDI_PASSWORD"})
BUFFER_PATH_ENV = "DEFAULT_LOCAL_DATABASE_PATH"
DEFAULT_BUFFER_PATH = "sdi/buffer.db"  # relative to the project data dir (.scrapy/)
MAX_BATCH = 1000  # the contract's per-request limit
POSTGRES_SCHEMES = ("postgresql", "postgres")
POSTGRES_URL_EXAMPLE = "postgresql://user:password@host:5432/database"


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SDIConfigError(f"{name}: {masked(name, value)} is not a string")
    return value.strip()


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SDIConfigError(f"{name}: {value!r} is not a boolean; expected True or False")


def _number(kind: type, name: str, value: Any, low: float, high: float | None) -> Any:
    label = "a whole number" if kind is int else "a number"
    expected = f"expected {label} from {low:g}" + (
        f" to {high:g}" if high is not None else " or more"
    )
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError
    except (TypeError, ValueError):
        raise SDIConfigError(f"{name}: {value!r} is not {label}; {expected}") from None
    if number < low or (high is not None and number > high):
        raise SDIConfigError(f"{name}: {value!r} is out of range; {expected}")
    return number


# Partials rather than closures, so a reader of SPEC (the docs' settings page) can show the range.
def _int(low: float, high: float | None = None) -> Callable[[str, Any], int]:
    return functools.partial(_number, int, low=low, high=high)


def _float(low: float, high: float | None = None) -> Callable[[str, Any], float]:
    return functools.partial(_number, float, low=low, high=high)


def value_range(parse: Callable[[str, Any], Any]) -> tuple[float, float | None] | None:
    """The (low, high) a number setting's parser accepts, high None when unbounded; else None."""
    if isinstance(parse, functools.partial) and parse.func is _number:
        return parse.keywords["low"], parse.keywords["high"]
    return None


def _field_map(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise SDIConfigError(
                f"{name}: {value!r} is not a JSON object of item field -> result field"
            ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SDIConfigError(
            f"{name}: {value!r} is not a dict of item field name -> result field name"
        )
    from scrapy_sdi.mapping import ResultMapper

    try:
        ResultMapper(field_map=value)  # the mapper's own rules: no 'id', one source per field
    except SDIConfigError as exc:
        raise SDIConfigError(f"{name}: {value!r:.80} cannot be used: {exc}") from None
    return dict(value)


def _audit(kind: str) -> Callable[[str, Any], str]:
    """A loguru rotation or retention for the audit log, parsed now rather than at spider open."""

    def parse(name: str, value: Any) -> str:
        from scrapy_sdi.audit import check_policy

        text = _text(name, value)
        try:
            check_policy(**{kind: text})
        except (TypeError, ValueError) as exc:
            raise SDIConfigError(
                f"{name}: {text!r} is not a {kind} loguru understands ({exc})"
            ) from None
        return text

    return parse


def _buffer(name: str, value: Any) -> str:
    """A built-in buffer's name or the dotted path of a Buffer subclass, imported now."""
    from scrapy_sdi.buffer import buffer_class

    text = _text(name, value)
    buffer_class(text)
    return text


def _api_url(name: str, value: Any) -> str:
    return check_api_url(name, _text(name, value).rstrip("/"))


def _buffer_url(name: str, value: Any) -> str:
    """A libpq URL (postgresql:// or postgres://), checked now; shown only with its password masked.

    A value that is no URL at all is not echoed: which part of it is the password cannot be known.
    """
    text = _text(name, value)
    if not text:
        return text
    if "://" not in text:
        raise SDIConfigError(
            f"{name}: not a URL; expected {POSTGRES_URL_EXAMPLE} (the value is not shown: it may hold a password)"
        )
    scheme = text.split("://", 1)[0].lower()
    if scheme not in POSTGRES_SCHEMES:
        raise SDIConfigError(
            f"{name}: {display_url(text)!r} is not a PostgreSQL URL; expected {POSTGRES_URL_EXAMPLE}"
        )
    return text


def check_api_url(name: str, url: str) -> str:
    """``url`` when it is an http(s) URL with a host and no credentials; else one SDIConfigError.

    Credentials inside the URL would reach every error message that names it (and the API logs
    in with SDI_USERNAME and SDI_PASSWORD), so they are refused, the message showing them masked.
    """
    if "@" in _authority(url):
        raise SDIConfigError(
            f"{name}: {display_url(url)!r} carries credentials; remove them from the URL "
            "(the API logs in with SDI_USERNAME and SDI_PASSWORD)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SDIConfigError(
            f"{name}: {url!r} is not an http(s) URL; expected e.g. http://127.0.0.1:8750/api/v1"
        )
    return url


# name -> (default, parser, meaning). The table is the single source of names, defaults, types
# and meanings: ``scrapy sdi settings`` and the docs' settings page (docs/gen_reference.py) are
# built from it.
SPEC: dict[str, tuple[Any, Callable[[str, Any], Any], str]] = {
    "SDI_ENABLED": (True, _bool, "switch scrapy_sdi off without removing it from the settings"),
    "SDI_API_URL": (
        "",
        _text,
        "base URL of the API, e.g. http://127.0.0.1:8750/api/v1; a URL carrying credentials is refused",
    ),
    "SDI_USERNAME": ("", _text, "API user name"),
    "SDI_PASSWORD": ("", _text, "API password (never logged or shown)"),
    "SDI_CRAWLER_NAME": (
        "",
        _text,
        "crawler name sent with every batch; default: the spider's name",
    ),
    "SDI_BATCH_SIZE": (1000, _int(1, MAX_BATCH), "results per request"),
    "SDI_CONCURRENT_REQUESTS": (2, _int(1, 64), "batches in flight at once"),
    "SDI_RETRY_TIMES": (
        3,
        _int(0, 100),
        "tries of one batch before its rows rest for SDI_UNLOCK_DELAY",
    ),
    "SDI_RETRY_BACKOFF_BASE": (
        0.5,
        _float(0.0),
        "first backoff in seconds (full jitter, doubling)",
    ),
    "SDI_RETRY_BACKOFF_MAX": (30.0, _float(0.0), "longest backoff in seconds"),
    "SDI_UNLOCK_DELAY": (60.0, _float(0.0), "seconds rows rest after SDI_RETRY_TIMES failed tries"),
    "SDI_LEASE_TIMEOUT": (
        120.0,
        _float(1.0),
        "seconds after which a claimed batch is reclaimed, even when its owner cannot be proven dead",
    ),
    "SDI_TIMEOUT": (30.0, _float(0.1), "seconds per API request"),
    "SDI_BUFFER": (
        "sqlite",
        _buffer,
        "'sqlite', 'memory', 'postgres' or the dotted path of a scrapy_sdi.buffer.Buffer subclass",
    ),
    "SDI_BUFFER_PATH": (
        "",
        _text,
        f"SQLite buffer file; default ${BUFFER_PATH_ENV}, then .scrapy/{DEFAULT_BUFFER_PATH}",
    ),
    "SDI_BUFFER_URL": (
        "",
        _buffer_url,
        "PostgreSQL database of SDI_BUFFER = 'postgres', a libpq URL such as postgresql://sdi:secret@db:5432/crawl (its password is never shown)",
    ),
    "SDI_BUFFER_RECOVER": (
        False,
        _bool,
        "move a buffer file that is not a database aside (<path>.corrupt-<time>, never deleted) and start a fresh one",
    ),
    "SDI_BUFFER_MAX_PENDING": (
        1_000_000,
        _int(1),
        "most rows of the crawl waiting for delivery (pending or in flight); at the limit process_item waits",
    ),
    "SDI_RETENTION_DAYS": (
        30.0,
        _float(0.0),
        "days delivered rows are kept for dedup and local status",
    ),
    "SDI_DEDUP": (
        True,
        _bool,
        "skip a URL this crawler already buffered or delivered; derive ids from (crawler, url)",
    ),
    "SDI_FIELD_MAP": ({}, _field_map, "item field name -> result field name"),
    "SDI_FILTERS_ENABLED": (True, _bool, "drop results the API's filters exclude"),
    "SDI_FILTERS_REQUIRED": (False, _bool, "close the spider when no filters can be loaded"),
    "SDI_FILTERS_REFRESH_INTERVAL": (
        600.0,
        _float(0.0),
        "seconds between filter refreshes (0: never)",
    ),
    "SDI_COMPRESSION": (True, _bool, "gzip request bodies above SDI_COMPRESSION_MIN_BYTES"),
    "SDI_COMPRESSION_MIN_BYTES": (16_384, _int(0), "smallest body that is gzip-compressed"),
    "SDI_DRY_RUN": (
        False,
        _bool,
        "do everything but submit, on a memory buffer (no buffer file); what would be sent is logged at DEBUG and counted in sdi/dry_run/items and sdi/dry_run/batches",
    ),
    "SDI_CLOSE_TIMEOUT": (
        60.0,
        _float(0.0),
        "seconds close_spider keeps delivering before leaving rows pending",
    ),
    "SDI_LOG_INTERVAL": (60.0, _float(0.0), "seconds between SDIStatus's INFO lines (0: none)"),
    "SDI_AUDIT_LOG": (
        "",
        _text,
        "path of a JSON-lines audit log, one line per submission attempt (off when empty)",
    ),
    "SDI_AUDIT_ROTATION": (
        "50 MB",
        _audit("rotation"),
        "when the audit log rotates (loguru rotation: size, time or interval)",
    ),
    "SDI_AUDIT_RETENTION": (
        "10",
        _audit("retention"),
        "rotated audit logs kept: a count, or a duration such as '30 days'",
    ),
    "SDI_STATUS_ON_CLOSE": (
        False,
        _bool,
        "look up this run's delivered URLs on the API at close (sdi/remote_status/*)",
    ),
    "SDI_MONITOR_MAX_REJECTED_RATIO": (
        0.05,
        _float(0.0, 1.0),
        "largest share of buffered results the API may reject before SDIMonitorSuite fails",
    ),
}


@dataclass(frozen=True)
class SDISettings:
    """The validated SDI_ settings of one crawler."""

    enabled: bool
    api_url: str
    username: str
    password: str = field(repr=False)
    crawler_name: str
    batch_size: int
    concurrent_requests: int
    retry_times: int
    retry_backoff_base: float
    retry_backoff_max: float
    unlock_delay: float
    lease_timeout: float
    timeout: float
    buffer: str
    buffer_path: str
    buffer_url: str = field(repr=False)
    buffer_recover: bool
    buffer_max_pending: int
    retention_days: float
    dedup: bool
    field_map: dict[str, str]
    filters_enabled: bool
    filters_required: bool
    filters_refresh_interval: float
    compression: bool
    compression_min_bytes: int
    dry_run: bool
    close_timeout: float
    log_interval: float
    audit_log: str
    audit_rotation: str
    audit_retention: str
    status_on_close: bool
    monitor_max_rejected_ratio: float
    #: Where each value came from: "settings", "environment", ".env" or "default".
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: BaseSettings,
        spider_name: str = "",
        *,
        environ: dict[str, str] | None = None,
        dotenv_path: str | os.PathLike[str] | None = ".env",
        require_api: bool = True,
    ) -> SDISettings:
        """Read, resolve and validate every SDI_ setting; raise SDIConfigError naming the first bad one."""
        environ = dict(os.environ) if environ is None else environ
        dotenv = _read_dotenv(dotenv_path)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, (default, parse, _doc) in SPEC.items():
            raw, source = _lookup(settings, name, default, environ, dotenv)
            values[name] = parse(name, raw)
            sources[name] = source
        if not values["SDI_CRAWLER_NAME"]:
            values["SDI_CRAWLER_NAME"] = spider_name
        if not values["SDI_BUFFER_PATH"]:
            values["SDI_BUFFER_PATH"], sources["SDI_BUFFER_PATH"] = _default_buffer_path(environ)
        _check_relations(values)
        if values["SDI_ENABLED"] and require_api:
            _check_api(values)
            _check_buffer_url(values)
        kwargs = {
            f.name: values["SDI_" + f.name.upper()] for f in fields(cls) if f.name != "sources"
        }
        return cls(**kwargs, sources=sources)


def _check_relations(values: dict[str, Any]) -> None:
    """Settings valid alone but not together."""
    lease, timeout = values["SDI_LEASE_TIMEOUT"], values["SDI_TIMEOUT"]
    if lease <= timeout:
        raise SDIConfigError(
            f"SDI_LEASE_TIMEOUT: {lease:g} is not longer than SDI_TIMEOUT ({timeout:g}); "
            "expected a longer lease, or batches still in flight would be reclaimed"
        )
    base, longest = values["SDI_RETRY_BACKOFF_BASE"], values["SDI_RETRY_BACKOFF_MAX"]
    if longest < base:
        raise SDIConfigError(
            f"SDI_RETRY_BACKOFF_MAX: {longest:g} is below SDI_RETRY_BACKOFF_BASE ({base:g}); expected at least the first backoff"
        )


def _lookup(
    settings: BaseSettings, name: str, default: Any, environ: dict[str, str], dotenv: dict[str, str]
) -> tuple[Any, str]:
    """Settings win over the environment, which wins over .env, which wins over the default.

    An empty value counts as unset, so ``SDI_PASSWORD = os.environ.get(...)`` in settings.py
    still lets a .env file fill it in.
    """
    value = settings.get(name)
    if value is not None and value != "":
        return value, "settings"
    if name in FROM_ENVIRONMENT:
        if environ.get(name):
            return environ[name], "environment"
        if dotenv.get(name):
            return dotenv[name], ".env"
    return default, "default"


def _default_buffer_path(environ: dict[str, str]) -> tuple[str, str]:
    if environ.get(BUFFER_PATH_ENV):
        return environ[BUFFER_PATH_ENV], "environment"
    from scrapy.exceptions import NotConfigured

    try:
        return str(Path(data_path(DEFAULT_BUFFER_PATH, createdir=False))), "default"
    except NotConfigured:  # a project run from an egg (Scrapyd) has no data directory
        raise SDIConfigError(
            f"SDI_BUFFER_PATH: not set, and this project has no data directory (run from an egg, e.g. "
            f"by Scrapyd); set SDI_BUFFER_PATH or ${BUFFER_PATH_ENV} to a file path"
        ) from None


def _check_api(values: dict[str, Any]) -> None:
    if not values["SDI_API_URL"]:
        raise SDIConfigError(
            "SDI_API_URL: not set; expected the API's base URL, e.g. http://127.0.0.1:8750/api/v1"
        )
    values["SDI_API_URL"] = _api_url("SDI_API_URL", values["SDI_API_URL"])
    if values["SDI_DRY_RUN"]:
        return
    for name in ("SDI_USERNAME", "SDI_PASSWORD"):
        if not values[name]:
            raise SDIConfigError(
                f"{name}: not set; set it in settings, the environment or a .env file"
            )


def needs_buffer_url(values: dict[str, Any]) -> bool:
    """Whether the settings' buffer is a PostgreSQL one (a dry run opens none)."""
    if values["SDI_DRY_RUN"]:
        return False
    from scrapy_sdi.buffer import buffer_class
    from scrapy_sdi.buffer_postgres import PostgresBuffer

    return issubclass(buffer_class(values["SDI_BUFFER"]), PostgresBuffer)


def _check_buffer_url(values: dict[str, Any]) -> None:
    if not values["SDI_BUFFER_URL"] and needs_buffer_url(values):
        raise SDIConfigError(
            f"SDI_BUFFER_URL: not set; SDI_BUFFER = 'postgres' needs the database's URL, e.g. "
            f"{POSTGRES_URL_EXAMPLE} (settings, the environment or a .env file)"
        )


def _read_dotenv(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """Only the SDI_ names are taken from .env, so a project's other secrets are never read."""
    if path is None or not os.path.isfile(path):
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None and k in FROM_ENVIRONMENT}


def shown(name: str, value: Any) -> Any:
    """A setting's value as it may be shown: a secret as a fixed mask, a URL without its password.

    The mask is fixed, so not even a secret's length shows; and it is built here, from the value,
    because replacing a secret in finished text reveals it (``p`` masked in ``http`` is ``htt***``).
    """
    if name in SECRET_SETTINGS:
        return "***" if value else "(not set)"
    return display_url(value) if isinstance(value, str) else value


def masked(name: str, value: Any) -> str:
    """A setting's value as one line of text: shown(), quoted unless it is a secret's mask."""
    return shown(name, value) if name in SECRET_SETTINGS else repr(shown(name, value))


def display_url(url: str) -> str:
    """``url`` with the password of its userinfo (``https://user:pw@host/``) and of any
    ``password=`` parameter (libpq's) shown as ``***``."""
    url = re.sub(r"(?i)((?:^|[?&\s])password=)[^&\s#]*", r"\1***", url)
    authority = _authority(url)
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return url.replace(authority, f"{user}:***@{host}", 1)


def _authority(url: str) -> str:
    """The ``user:pw@host:port`` part of a URL, read without parsing (no malformed URL can fail)."""
    if "://" not in url:
        return ""
    rest = url.split("://", 1)[1]
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def settings_for(crawler: Crawler) -> SDISettings:
    """The crawler's SDI settings, or NotConfigured when SDI_ENABLED is off.

    A bad value stops the crawl before anything starts, in one ERROR line. The error still leaves
    ``Crawler.crawl``: in Scrapy 2.19 that alone makes ``scrapy crawl`` exit non-zero (a
    ``CloseSpider`` at open would stop as cleanly, with exit status 0).
    """
    from scrapy.exceptions import NotConfigured

    try:
        if not _bool("SDI_ENABLED", crawler.settings.get("SDI_ENABLED", True)):
            raise NotConfigured("SDI_ENABLED is False")
        if not crawler.settings.getbool("TWISTED_REACTOR_ENABLED", True):
            from scrapy_sdi.transport import AiohttpTransport

            AiohttpTransport()  # without a reactor we deliver through aiohttp: is it installed?
        spider_name = getattr(crawler.spidercls, "name", None) or ""
        return SDISettings.from_settings(crawler.settings, spider_name)
    except SDIConfigError as exc:
        logger.error("Bad scrapy_sdi setting: %(error)s", {"error": exc})
        _leave_reported(exc)
        raise


def _leave_reported(error: SDIConfigError) -> None:
    """Keep the crawl's asyncio task from reporting again, with a traceback, an error just logged.

    AsyncCrawlerRunner (behind ``scrapy crawl`` and ``runspider`` on the asyncio reactor or none,
    and AsyncCrawlerProcess) runs each crawl in a task, marks the run failed when it raises, and
    leaves the exception to asyncio, which logs it when the task is collected ("Task exception was
    never retrieved"). Retrieving the task's exception once it is done keeps the report to our
    line; the run still counts as failed.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a Deferred-based runner, whose caller gets the failure
        return
    if task is not None:
        task.add_done_callback(functools.partial(_retrieve, error))


def _retrieve(error: SDIConfigError, task: asyncio.Future[Any]) -> None:
    """Retrieve the task's exception when it is ours; report any other as asyncio would have."""
    raised = None if task.cancelled() else task.exception()
    if raised is not None and raised is not error:
        task.get_loop().call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": raised, "future": task}
        )
