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
from typing import Generic, TypeVar

from aliak.errors import InvalidTimeStampFormat

__all__ = [
    "ACS_DATE_FORMAT",
    "Clock",
    "RememberLast",
    "format_acs_date",
    "parse_acs_date",
    "system_clock",
]

K = TypeVar("K")
V = TypeVar("V")

Clock = Callable[[], float]
"""Returns the current time as UNIX seconds (``time.time`` is the default)."""

system_clock: Clock = time.time

ACS_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""``x-acs-date`` (§3) for ``strftime`` of a UTC time; Alibaba's APIs write every
timestamp they return (``CreateDate``, ``LastUsedDate``) the same way."""

# The same format, as parsing must read it. ASCII digits only: \d would also accept
# other scripts' digits.
_acs_date = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z"
).fullmatch


def format_acs_date(seconds: float) -> str:
    """UTC ``%Y-%m-%dT%H:%M:%SZ``: second precision, literal ``Z``."""
    return time.strftime(ACS_DATE_FORMAT, time.gmtime(int(seconds)))


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


class RememberLast(Generic[K, V]):
    """``function(key)``, remembering the last key and its result.

    For the hot path's per-second values (the date a signer emits, the date a verifier
    parses): consecutive requests mostly fall in the same second. The pair lives in one
    tuple that is replaced whole, so threads never see a key with another key's result.
    """

    __slots__ = ("_function", "_last")

    def __init__(self, function: Callable[[K], V]) -> None:
        self._function = function
        self._last: tuple[K, V] | None = None

    def __call__(self, key: K) -> V:
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        value = self._function(key)
        self._last = (key, value)
        return value


parse_acs_date: Callable[[str], int] = RememberLast(_parse_acs_date)
"""UNIX seconds of an ``x-acs-date``; anything but ``yyyy-MM-ddTHH:mm:ssZ`` naming a real
calendar time is :class:`InvalidTimeStampFormat`."""
