"""How ages, byte sizes and times read wherever scrapy_sdi shows them to a person.

One helper each, so ``scrapy sdi``, the dashboard, the exports and the log lines say the same
thing the same way (they had three age and two size formatters, which disagreed on units).
Figures meant for programs (stats, metrics, ``scrapy sdi buffer --json``) stay plain numbers.
"""

from __future__ import annotations

import time
from itertools import pairwise
from typing import overload

_AGE_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def age(seconds: float | None, none: str = "-") -> str:
    """``12s``, ``4m 10s``, ``2h 05m``, ``3d 04h``: the two largest units are enough for an age.

    A negative age (a clock set back, another host's clock ahead) shows as ``0s``: it means
    "just now", and a minus sign would read as an error. ``none`` stands for an unknown age.
    """
    if seconds is None:
        return none
    left = max(0, int(seconds))
    for (unit, length), (small, small_length) in pairwise(_AGE_UNITS):
        if left >= length:
            return f"{left // length}{unit} {left % length // small_length:02d}{small}"
    return f"{left}s"


def size(nbytes: int | None, none: str = "-") -> str:
    """``0 B``, ``1023 B``, ``2.0 KiB``, ``1.5 GiB``: binary units, as the file sizes are counted.

    ``none`` stands for a size that cannot be known (a memory buffer has no file).
    """
    if nbytes is None:
        return none
    value = float(nbytes)
    for unit in _SIZE_UNITS[:-1]:
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_SIZE_UNITS[-1]}"


@overload
def iso(timestamp: float) -> str: ...
@overload
def iso(timestamp: None) -> None: ...
@overload
def iso(timestamp: float | None) -> str | None: ...
def iso(timestamp: float | None) -> str | None:
    """A POSIX time in the contract's ISO-8601 UTC form (``2026-12-04T17:51:41Z``), whole seconds.

    The one form the API, the exports and the commands use, so a time can be compared and
    sorted as text across them; None stays None (the caller says what "no time" shows as).
    """
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
