"""Text as a CSV cell can carry it, on every supported Python and in a spreadsheet."""

from __future__ import annotations

from typing import Any


def csv_text(value: Any) -> Any:
    """``value`` with each NUL (an invalid row's URL may hold one) replaced by U+FFFD.

    Python 3.10's csv module refuses a NUL ("need to escape, but no escapechar set"), 3.11's
    writes it, and spreadsheets choke on it. The JSON exports keep the exact text.
    """
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value
