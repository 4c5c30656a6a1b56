"""The audit log: one JSON line per submission attempt, written through loguru.

loguru gives rotation and retention for free. Everything goes through its public API: each
audit log is a file sink on loguru's one logger, added with a filter that accepts only the
records of a logger bound to this audit log, so two crawls in one process each write only their
own lines, and the application's records never reach an audit file. The records are logged at a
level of their own, ``SDI_AUDIT``, below ``TRACE``, so the application's handlers (loguru's
default stderr handler included, at ``DEBUG``) do not show them.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from typing import TYPE_CHECKING, Any

import orjson
from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

LEVEL = "SDI_AUDIT"
LEVEL_NO = 1  # below TRACE (5): only a handler added at level 0 or 1 would see audit records
_KEY = "sdi_audit"  # the extra field that names a record's audit log
_serials = itertools.count(1)


def _ensure_level() -> None:
    try:
        logger.level(LEVEL)
    except ValueError:  # not registered yet in this process
        logger.level(LEVEL, no=LEVEL_NO)


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _retention(retention: str | int | None) -> str | int | None:
    """A retention of digits only is a number of rotated files; anything else loguru parses."""
    if isinstance(retention, str) and retention.strip().isdigit():
        return int(retention)
    return retention


def _nothing(record: Record) -> bool:
    return False


def check_policy(*, rotation: str | None = None, retention: str | None = None) -> None:
    """Raise loguru's ValueError for a rotation or retention it cannot parse, when settings are read.

    The probe sink is never opened (``delay``) and takes no record, so nothing is created.
    """
    probe = logger.add(
        os.devnull, rotation=rotation, retention=_retention(retention), delay=True, filter=_nothing
    )
    logger.remove(probe)


class AuditLog:
    """Appends audit records to ``path``; never given credentials, so it cannot leak them."""

    def __init__(
        self, path: str, *, rotation: str | None = None, retention: str | int | None = None
    ) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _ensure_level()
        self._serial = next(_serials)
        self._logger = logger.bind(**{_KEY: self._serial})
        self._sink: int | None = logger.add(
            path,
            format="{message}",
            level=LEVEL,
            filter=self._is_mine,
            rotation=rotation,
            retention=_retention(retention),
            enqueue=False,
            catch=True,
            opener=_owner_only,
        )

    def _is_mine(self, record: Record) -> bool:
        return record["extra"].get(_KEY) == self._serial

    def record(self, entry: dict[str, Any]) -> None:
        line = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            **entry,
        }
        # braces in the JSON must not be read as loguru format fields
        self._logger.opt(raw=True).log(LEVEL, orjson.dumps(line).decode() + "\n")

    def close(self) -> None:
        if self._sink is not None:
            # already gone if the application removed every handler (logger.remove()) meanwhile
            with contextlib.suppress(ValueError):
                logger.remove(self._sink)
            self._sink = None
