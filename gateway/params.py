"""Query parameters, read as Qdrant reads them (serde_urlencoded into a struct).

Qdrant's handlers take one of three query structs, and reject what does not
deserialize with 400 "Deserialize error in query parameters: <serde's message>"
and what breaks a validate rule with 422 "Validation error in query parameters:
[...]" (src/actix/mod.rs). Unknown parameters are ignored, as serde ignores
unknown fields; a parameter given twice is an error ("duplicate field").

- ``UpdateParams``: ``wait`` (bool), ``ordering`` (weak | medium | strong) on
  point writes and payload-index changes (src/actix/api/update_api.rs);
- ``ReadParams``: ``consistency`` (a factor >= 1, majority, quorum, all) and
  ``timeout`` (seconds, non-zero) on reads (src/actix/api/read_params.rs);
- ``WaitTimeout``: ``timeout`` (seconds, >= 1) on collection and alias changes
  (src/actix/api/collections_api.rs);
- ``SnapshotUploadingParam``: ``wait``, ``priority`` (no_sync | snapshot |
  replica) and ``checksum`` on snapshot uploads (src/actix/api/snapshot_api.rs).

serde_urlencoded reads a bool with Rust's ``str::parse``: only ``true`` and
``false``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.errors import QueryDeserializeError, ValidationError

_ORDERINGS = ("weak", "medium", "strong")
_CONSISTENCY_TYPES = ("majority", "quorum", "all")
_PRIORITIES = ("no_sync", "snapshot", "replica")
_MAX_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class UpdateParams:
    wait: bool = False
    ordering: str = "weak"


@dataclass(frozen=True)
class ReadParams:
    consistency: int | str | None = None  # a factor, or "majority" / "quorum" / "all"
    timeout: int | None = None  # seconds


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise QueryDeserializeError(f"duplicate field `{name}`")
    return values[0] if values else None


def _bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise QueryDeserializeError("provided string was not `true` or `false`")


def _u64(text: str) -> int:
    """Rust's ``str::parse::<u64>``: an optional ``+``, then ASCII digits."""
    if not text:
        raise QueryDeserializeError("cannot parse integer from empty string")
    digits = text[1:] if text.startswith("+") else text
    if not digits.isascii() or not digits.isdigit():
        raise QueryDeserializeError("invalid digit found in string")
    value = int(digits)
    if value > _MAX_U64:
        raise QueryDeserializeError("number too large to fit in target type")
    return value


def _check_variant(value: str | None, variants: tuple[str, ...]) -> None:
    """serde's refusal of a text that names none of an enum's variants."""
    if value is not None and value not in variants:
        expected = ", ".join(f"`{v}`" for v in variants)
        raise QueryDeserializeError(f"unknown variant `{value}`, expected one of {expected}")


_NO_UPDATE_PARAMS = UpdateParams()
_NO_READ_PARAMS = ReadParams()


def update_params(request: web.Request) -> UpdateParams:
    if not request.query_string:
        return _NO_UPDATE_PARAMS
    wait, ordering = _one(request, "wait"), _one(request, "ordering")
    _check_variant(ordering, _ORDERINGS)
    return UpdateParams(wait=_bool(wait) if wait is not None else False, ordering=ordering or "weak")


def read_params(request: web.Request) -> ReadParams:
    if not request.query_string:  # the common case, on every search
        return _NO_READ_PARAMS
    consistency, timeout = _one(request, "consistency"), _one(request, "timeout")
    parsed: int | str | None = None
    if consistency:  # an empty value means "not given", as in Qdrant
        if consistency in _CONSISTENCY_TYPES:
            parsed = consistency
        elif consistency.isascii() and consistency.isdigit() and 1 <= int(consistency) <= _MAX_U64:
            parsed = int(consistency)
        else:
            raise QueryDeserializeError("failed to deserialize read consistency query parameter value")
    seconds = None
    if timeout is not None:
        seconds = _u64(timeout)
        if seconds == 0:
            raise QueryDeserializeError("invalid value: integer `0`, expected a nonzero u64")
    return ReadParams(parsed, seconds)


def bool_param(request: web.Request, name: str) -> bool | None:
    """A boolean query parameter (``/metrics?anonymize=``), or None when absent."""
    value = _one(request, name) if request.query_string else None
    return None if value is None else _bool(value)


def snapshot_priority(request: web.Request) -> str | None:
    """``priority`` of a snapshot upload (Qdrant's SnapshotPriority), or None."""
    value = _one(request, "priority") if request.query_string else None
    _check_variant(value, _PRIORITIES)
    return value


def wait_timeout(request: web.Request) -> int | None:
    """The ``timeout`` of a collection or alias change, in seconds."""
    timeout = _one(request, "timeout")
    if timeout is None:
        return None
    seconds = _u64(timeout)
    if seconds < 1:
        raise ValidationError([("timeout", f"value {seconds} invalid, must be 1 or larger")], "query parameters")
    return seconds
