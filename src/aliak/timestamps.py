"""The ``x-acs-date`` format and the injectable clock (spec §3 "x-acs-date format").

Signer and verifier share this: the signer formats, the verifier parses, and both read
time through a :data:`Clock` so tests are exact.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from datetime import datetime

from aliak.errors import InvalidTimeStampFormat

__all__ = ["Clock", "UtcSecondFormatter", "format_acs_date", "parse_acs_date", "system_clock"]

Clock = Callable[[], float]
"""Returns the current time as UNIX seconds (``time.time`` is the default)."""

system_clock: Clock = time.time

# ASCII digits only: \d would also accept other scripts' digits.
_acs_date = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z"
).fullmatch


def format_acs_date(seconds: float) -> str:
    """UTC ``%Y-%m-%dT%H:%M:%SZ``: second precision, literal ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


class _LastDateParser:
    """:func:`_parse_acs_date`, remembering the last result: requests arriving in the same
    second carry the same date, and parsing one is most of a timestamp check."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[str, int] = ("", 0)

    def __call__(self, text: str) -> int:
        last = self._last  # one read: another thread may replace the tuple, never tear it
        if last[0] == text:
            return last[1]
        seconds = _parse_acs_date(text)
        self._last = (text, seconds)
        return seconds


def _parse_acs_date(text: str) -> int:
    """UNIX seconds of an ``x-acs-date``; anything but ``yyyy-MM-ddTHH:mm:ssZ`` naming a
    real calendar time is :class:`InvalidTimeStampFormat` (fractions, offsets, lower-case
    ``t``/``z`` and leap second 60 included -- our choice, spec §3)."""
    match = _acs_date(text)
    if match is None:
        raise InvalidTimeStampFormat(detail="x-acs-date is not yyyy-MM-ddTHH:mm:ssZ")
    year, month, day, hour, minute, second = (int(group) for group in match.groups())
    try:
        datetime(year, month, day, hour, minute, second)  # validation only
    except ValueError:
        raise InvalidTimeStampFormat(detail="x-acs-date is not a valid calendar time") from None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


class UtcSecondFormatter:
    """:func:`format_acs_date` cached for the current second: the signer's hot path."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[int, str] = (-1, "")

    def __call__(self, seconds: float) -> str:
        whole = int(seconds)
        last = self._last  # one read: another thread may replace the tuple, never tear it
        if last[0] == whole:
            return last[1]
        text = format_acs_date(whole)
        self._last = (whole, text)
        return text


parse_acs_date = _LastDateParser()
"""UNIX seconds of an ``x-acs-date``; anything but ``yyyy-MM-ddTHH:mm:ssZ`` naming a real
calendar time is :class:`InvalidTimeStampFormat`."""
