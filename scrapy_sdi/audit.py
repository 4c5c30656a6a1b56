"""The audit log: one JSON line per submission attempt, written through loguru.

loguru gives rotation and retention for free; the audit sink lives on a logger of its own so
its lines never reach the application's loguru handlers (stderr included), and the
application's records never reach the audit file.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import orjson


def _private_logger() -> Any:
    """A loguru logger with its own handlers, built as loguru builds its global one."""
    from loguru._logger import Core, Logger

    return Logger(
        core=Core(), exception=None, depth=0, record=False, lazy=False, colors=False,
        raw=False, capture=True, patchers=[], extra={},
    )


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _retention(retention: str | int | None) -> str | int | None:
    """A retention of digits only is a number of rotated files; anything else loguru parses."""
    if isinstance(retention, str) and retention.strip().isdigit():
        return int(retention)
    return retention


def check_policy(*, rotation: str | None = None, retention: str | None = None) -> None:
    """Raise loguru's ValueError for a rotation or retention it cannot parse, when settings are read.

    The sink is never opened (``delay``), so nothing is created.
    """
    probe = _private_logger()
    probe.remove(probe.add(os.devnull, rotation=rotation, retention=_retention(retention), delay=True))


class AuditLog:
    """Appends audit records to ``path``; never given credentials, so it cannot leak them."""

    def __init__(self, path: str, *, rotation: str | None = None, retention: str | int | None = None) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._logger = _private_logger()
        self._logger.add(
            path, format="{message}", level="INFO", rotation=rotation, retention=_retention(retention),
            enqueue=False, catch=True, opener=_owner_only,
        )

    def record(self, entry: dict[str, Any]) -> None:
        line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"), **entry}
        # braces in the JSON must not be read as loguru format fields
        self._logger.opt(raw=True).info(orjson.dumps(line).decode() + "\n")

    def close(self) -> None:
        self._logger.remove()
