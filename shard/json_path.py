"""Qdrant's payload key paths: parsing, reading, writing and removing values.

A key path is ``first_key`` followed by items: ``.key``, ``."quoted key"``, ``[3]`` (an
array index) or ``[]`` (every array element), as in Qdrant's ``JsonPath``
(lib/segment/src/json_path: ``parse.rs`` is the grammar, ``mod.rs`` the semantics). A key
needs quotes when it is not made only of alphanumerics, ``_`` and ``-``; a quoted key may
hold anything but ``"`` and ``\\``.

The semantics mirror Qdrant's server, which differs from qdrant-client's local mode in
places: ``value_set`` deletes keys whose new value is null, ``value_remove`` follows
nested paths (local mode only removes top-level keys) and never deletes by array index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Union

from shard.types import BadInput


class _Wildcard:
    """The ``[]`` item: every element of an array."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "[]"

    def __reduce__(self) -> str:
        return "WILDCARD"  # unpickles to the same singleton: items are compared by identity


WILDCARD = _Wildcard()
# An item is a str (object key), an int (array index) or WILDCARD.
Item = Union[str, int, _Wildcard]
_MISSING = object()


@dataclass(frozen=True, slots=True)
class JsonPath:
    first_key: str
    rest: tuple[Item, ...] = ()

    def __str__(self) -> str:
        out = [_show_key(self.first_key)]
        for item in self.rest:
            if item is WILDCARD:
                out.append("[]")
            elif isinstance(item, int):
                out.append(f"[{item}]")
            else:
                out.append("." + _show_key(item))
        return "".join(out)

    def array_key(self) -> JsonPath:
        """The path with ``[]`` appended unless it already ends so (Qdrant's nested key)."""
        if self.rest and self.rest[-1] is WILDCARD:
            return self
        return JsonPath(self.first_key, self.rest + (WILDCARD,))

    def extend(self, other: JsonPath) -> JsonPath:
        """``self`` followed by ``other`` (a nested condition's key under its array)."""
        return JsonPath(self.first_key, self.rest + (other.first_key,) + other.rest)

    def strip_prefix(self, prefix: JsonPath) -> JsonPath | None:
        """The remainder after ``prefix`` when it starts with a key, as Qdrant's
        ``strip_prefix`` (used to hand indexes to nested filters)."""
        if self.first_key != prefix.first_key or len(self.rest) <= len(prefix.rest):
            return None
        if self.rest[: len(prefix.rest)] != prefix.rest:
            return None
        tail = self.rest[len(prefix.rest) :]
        if not isinstance(tail[0], str):
            return None
        return JsonPath(tail[0], tail[1:])


def _is_raw_char(c: str) -> bool:
    return c.isalnum() or c == "_" or c == "-"


def key_needs_quoting(key: str) -> bool:
    return not key or not all(_is_raw_char(c) for c in key)


def _show_key(key: str) -> str:
    return f'"{key}"' if key_needs_quoting(key) else key


def _bad(path: str) -> BadInput:
    return BadInput(f"Invalid json path: '{path}'")


def _read_key(text: str, i: int, path: str) -> tuple[str, int]:
    """A raw or quoted key starting at ``i``; returns it and the index after it."""
    if i < len(text) and text[i] == '"':
        end = i + 1
        while end < len(text) and text[end] not in '"\\':
            end += 1
        if end >= len(text) or text[end] != '"':
            raise _bad(path)
        return text[i + 1 : end], end + 1
    end = i
    while end < len(text) and _is_raw_char(text[end]):
        end += 1
    if end == i:
        raise _bad(path)
    return text[i:end], end


@lru_cache(maxsize=8192)
def _parse(path: str) -> JsonPath:
    first, i = _read_key(path, 0, path)
    rest: list[Item] = []
    while i < len(path):
        c = path[i]
        if c == ".":
            key, i = _read_key(path, i + 1, path)
            rest.append(key)
        elif c == "[":
            end = path.find("]", i + 1)
            digits = path[i + 1 : end] if end != -1 else None
            if digits is None:
                raise _bad(path)
            if digits == "":
                rest.append(WILDCARD)
            elif digits.isascii() and digits.isdigit():
                rest.append(int(digits))
            else:
                raise _bad(path)
            i = end + 1
        else:
            raise _bad(path)
    return JsonPath(first, tuple(rest))


def parse(path: str | JsonPath) -> JsonPath:
    """Parse a key path; BadInput when it is not one (Qdrant rejects the request)."""
    if isinstance(path, JsonPath):
        return path
    if not isinstance(path, str):
        raise BadInput(f"Invalid json path: '{path}'")
    return _parse(path)


def canonical(path: str | JsonPath) -> str:
    """The path as Qdrant prints it: ``a."b c"`` and ``a.b`` stay distinct, but ``"a"``
    and ``a`` name the same key."""
    return str(parse(path))


# ---------------------------------------------------------------------------- read


def value_get(payload: dict, path: str | JsonPath) -> list:
    """Every value the path reaches, arrays at the end kept whole (Qdrant's
    ``value_get``). A missing key yields nothing; an explicit null yields ``[None]``."""
    p = parse(path)
    value = payload.get(p.first_key, _MISSING)
    if value is _MISSING:
        return []
    if not p.rest:
        return [value]
    out: list = []
    _get(p.rest, 0, value, out)
    return out


def _get(rest: tuple, i: int, value: Any, out: list) -> None:
    if i == len(rest):
        out.append(value)
        return
    item = rest[i]
    if item is WILDCARD:
        if isinstance(value, list):
            for element in value:
                _get(rest, i + 1, element, out)
    elif isinstance(item, int):
        if isinstance(value, list) and item < len(value):
            _get(rest, i + 1, value[item], out)
    elif isinstance(value, dict):
        nxt = value.get(item, _MISSING)
        if nxt is not _MISSING:
            _get(rest, i + 1, nxt, out)


def values_at(payload: dict, path: str | JsonPath) -> list:
    """``value_get`` with arrays at the end flattened one level: the values a filter
    condition or a payload index sees (``{"a": [1, [2]]}`` gives ``1, [2]`` for ``a``)."""
    out: list = []
    for value in value_get(payload, path):
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out


# --------------------------------------------------------------------------- write


def merge_map(dest: dict, src: dict) -> None:
    """Qdrant's ``merge_map``: top-level keys of ``src`` replace those of ``dest``; a null
    value deletes the key instead of storing null."""
    for key, value in src.items():
        if value is None:
            dest.pop(key, None)
        else:
            dest[key] = value


def value_set(dest: dict, path: str | JsonPath | None, src: dict) -> None:
    """Qdrant's ``JsonPath::value_set`` (set_payload with ``key``), in place.

    Objects are created along the path; a scalar met on the way is replaced by an object;
    ``[i]`` only descends into an existing element (a missing array becomes ``[]``);
    ``[]`` applies to every element. At the end, ``src`` is merged with ``merge_map``.
    """
    if path is None:
        merge_map(dest, src)
        return
    p = parse(path)
    _set_in_map(p.first_key, p.rest, dest, src)


def _set_in_map(key: str, rest: tuple, dest: dict, src: dict) -> None:
    dest[key] = _set(rest, dest.get(key), src)


def _set(rest: tuple, dest: Any, src: dict) -> Any:
    """Returns the new value for the slot that held ``dest``."""
    if not rest:
        if not isinstance(dest, dict):
            dest = {}
        merge_map(dest, src)
        return dest
    head, tail = rest[0], rest[1:]
    if head is WILDCARD:
        if not isinstance(dest, list):
            return []
        for i, element in enumerate(dest):
            dest[i] = _set(tail, element, src)
        return dest
    if isinstance(head, int):
        if not isinstance(dest, list):
            return []
        if head < len(dest):
            dest[head] = _set(tail, dest[head], src)
        return dest
    if not isinstance(dest, dict):
        dest = {}
    _set_in_map(head, tail, dest, src)
    return dest


def value_remove(payload: dict, path: str | JsonPath) -> list:
    """Qdrant's ``JsonPath::value_remove``, in place; returns what was removed.
    Deleting at an array index (``a[0]``) is a no-op, as in Qdrant ("not idempotent");
    ``a[]`` empties the array."""
    p = parse(path)
    removed: list = []
    if not p.rest:
        if p.first_key in payload:
            removed.append(payload.pop(p.first_key))
        return removed
    if p.first_key in payload:
        _remove(p.rest, payload[p.first_key], removed)
    return removed


def _remove(rest: tuple, value: Any, removed: list) -> None:
    head, tail = rest[0], rest[1:]
    if tail:
        if head is WILDCARD:
            if isinstance(value, list):
                for element in value:
                    _remove(tail, element, removed)
        elif isinstance(head, int):
            if isinstance(value, list) and head < len(value):
                _remove(tail, value[head], removed)
        elif isinstance(value, dict) and head in value:
            _remove(tail, value[head], removed)
        return
    if head is WILDCARD:
        if isinstance(value, list):
            removed.append(list(value))
            value.clear()
    elif isinstance(head, str) and isinstance(value, dict) and head in value:
        removed.append(value.pop(head))


set_at = value_set
delete_at = value_remove


# -------------------------------------------------------------------- projection


def check_include_pattern(path: JsonPath, pattern: JsonPath) -> bool:
    """One of the two paths is a prefix of the other (Qdrant's with_payload include)."""
    return path.first_key == pattern.first_key and all(a == b for a, b in zip(path.rest, pattern.rest))


def check_exclude_pattern(pattern: JsonPath, path: JsonPath) -> bool:
    """``pattern`` is a prefix of ``path`` (Qdrant's with_payload exclude)."""
    n = len(pattern.rest)
    return pattern.first_key == path.first_key and path.rest[:n] == pattern.rest


def value_filter(payload: dict, keep: Callable[[JsonPath], bool]) -> dict:
    """A copy of ``payload`` holding only the nodes whose path ``keep`` accepts, walking
    objects by key and arrays as ``[]`` (Qdrant's ``JsonPath::value_filter``)."""
    out = {}
    for key, value in payload.items():
        path = JsonPath(key)
        if keep(path):
            out[key] = _filter_value(path, value, keep)
    return out


def _filter_value(path: JsonPath, value: Any, keep: Callable[[JsonPath], bool]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            sub = JsonPath(path.first_key, path.rest + (key,))
            if keep(sub):
                out[key] = _filter_value(sub, child, keep)
        return out
    if isinstance(value, list):
        sub = JsonPath(path.first_key, path.rest + (WILDCARD,))
        return [_filter_value(sub, element, keep) for element in value] if keep(sub) else []
    return value
