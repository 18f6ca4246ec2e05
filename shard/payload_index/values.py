"""How payload values are typed and parsed, as Qdrant reads them from JSON.

One place for the value rules that payload indexes, the filter's payload scan
(``shard.filters``), payload ordering (``shard.payload``) and formula expressions
(``gateway.formula``) must all agree on: which JSON values count as integers or numbers
(serde's ``as_i64``/``as_f64``), and which strings Qdrant 1.15 parses as datetimes or UUIDs.
"""

from __future__ import annotations

import re
import uuid as _uuid
from datetime import datetime, timedelta, timezone
from typing import Any

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def as_int(value: Any) -> int | None:
    """A JSON integer that fits i64 (serde's ``as_i64``): never a bool, never 1.0."""
    if type(value) is int and I64_MIN <= value <= I64_MAX:
        return value
    return None


def as_number(value: Any) -> float | None:
    """Any JSON number as f64 (serde's ``as_f64``); bools are not numbers."""
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


_DT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:([Tt ])([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(?: ?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?))?)?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_datetime(text: Any) -> int | None:
    """Microseconds since the epoch (UTC) of a datetime string Qdrant 1.15 accepts, else
    None: RFC 3339, ``YYYY-MM-DD[T ]HH:MM:SS[.f][Z|±HH[:MM]]``, ``YYYY-MM-DD HH:MM`` and
    ``YYYY-MM-DD``; no offset means UTC (``DateTimeWrapper::from_str``)."""
    if type(text) is not str:
        return None
    m = _DT.fullmatch(text)
    if m is None:
        return None
    y, mo, d, sep, hh, mi, ss, frac, tz = m.groups()
    if sep is not None and ss is None and (sep != " " or tz is not None):
        return None  # "YYYY-MM-DD HH:MM" is the only accepted form without seconds
    try:
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), tzinfo=timezone.utc)
    except ValueError:
        return None
    micros = (dt - _EPOCH) // timedelta(microseconds=1)
    if frac:
        micros += int(frac[:6].ljust(6, "0"))
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            return None
        micros -= sign * (hours * 3600 + minutes * 60) * 1_000_000
    return micros


_HEX = "[0-9a-fA-F]"
_UUID = re.compile(
    rf"(?:urn:uuid:)?({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})"
    rf"|\{{({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})\}}|({_HEX}{{32}})"
)


def parse_uuid(text: Any) -> int | None:
    """The 128-bit value of a UUID string in a form Rust's ``Uuid::parse_str`` accepts
    (hyphenated, simple, braced or urn), else None."""
    if type(text) is not str:
        return None
    m = _UUID.fullmatch(text)
    if m is None:
        return None
    return int((m.group(1) or m.group(2) or m.group(3)).replace("-", ""), 16)


def uuid_str(value: int) -> str:
    return str(_uuid.UUID(int=value))
