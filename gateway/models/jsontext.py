"""Reading JSON text the way serde_json reports on it.

Two jobs, both only on the error path (the happy path is orjson):

- ``syntax_error(body)`` walks a body orjson refused and returns serde_json's
  message for the first syntax error, e.g. ``expected value at line 1 column 9``
  (NaN), ``EOF while parsing an object at line 1 column 12``, ``trailing comma
  at line 1 column 8``. Positions follow serde_json: line from 1, column = bytes
  consumed on that line (``peek`` errors count the offending byte too).
- ``locate(body, path)`` finds the byte span of the value at a key/index path,
  so type errors can say where they are, as serde_json does.
"""

from __future__ import annotations

import json
import re

import numpy as np

_WS = b" \t\n\r"
_ESCAPES = b'"\\/bfnrt'
_MAX_DEPTH = 128  # serde_json's recursion limit


def position(body: bytes, index: int) -> tuple[int, int]:
    """serde_json's (line, column) of a byte index: the column is the number of
    bytes before ``index`` on its line."""
    index = max(0, min(index, len(body)))
    start = body.rfind(b"\n", 0, index) + 1
    return body.count(b"\n", 0, start) + 1, index - start


def at(message: str, body: bytes, index: int) -> str:
    line, column = position(body, index)
    return f"{message} at line {line} column {column}"


class _Syntax(Exception):
    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.message = message
        self.index = index


class _Scanner:
    """A serde_json-faithful recogniser (no values are built)."""

    def __init__(self, body: bytes):
        self.b = body
        self.i = 0
        self.depth = 0

    def fail(self, message: str, peek: bool = False):
        raise _Syntax(message, min(self.i + 1, len(self.b)) if peek else self.i)

    def ws(self) -> int | None:
        b, n = self.b, len(self.b)
        while self.i < n and b[self.i] in _WS:
            self.i += 1
        return b[self.i] if self.i < n else None

    def run(self) -> None:
        self.value()
        if self.ws() is not None:
            self.fail("trailing characters", peek=True)

    def value(self) -> None:
        c = self.ws()
        if c is None:
            self.fail("EOF while parsing a value", peek=True)
        if c == ord("{"):
            self.obj()
        elif c == ord("["):
            self.arr()
        elif c == ord('"'):
            self.i += 1
            self.string()
        elif c in b"tfn":
            word = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}[c]
            self.i += 1
            for expected in word[1:]:
                if self.i >= len(self.b):
                    self.fail("EOF while parsing a value")
                got = self.b[self.i]
                self.i += 1
                if got != expected:
                    self.fail("expected ident")
        elif c == ord("-") or ord("0") <= c <= ord("9"):
            self.number()
        else:
            self.fail("expected value", peek=True)

    def nest(self) -> None:
        self.depth += 1
        if self.depth >= _MAX_DEPTH:
            self.fail("recursion limit exceeded", peek=True)
        self.i += 1

    def obj(self) -> None:
        self.nest()
        first = True
        while True:
            c = self.ws()
            if c == ord("}"):
                if not first:
                    self.fail("trailing comma", peek=True)
                self.i += 1
                break
            if c is None:
                self.fail("EOF while parsing an object", peek=True)
            if c != ord('"'):
                self.fail("key must be a string", peek=True)
            self.i += 1
            self.string()
            c = self.ws()
            if c is None:
                self.fail("EOF while parsing an object", peek=True)
            if c != ord(":"):
                self.fail("expected `:`", peek=True)
            self.i += 1
            self.value()
            c = self.ws()
            if c == ord(","):
                self.i += 1
                first = False
                continue
            if c == ord("}"):
                self.i += 1
                break
            if c is None:
                self.fail("EOF while parsing an object", peek=True)
            self.fail("expected `,` or `}`", peek=True)
        self.depth -= 1

    def arr(self) -> None:
        self.nest()
        first = True
        while True:
            c = self.ws()
            if c == ord("]"):
                if not first:
                    self.fail("trailing comma", peek=True)
                self.i += 1
                break
            if c is None:
                self.fail("EOF while parsing a list", peek=True)
            self.value()
            c = self.ws()
            if c == ord(","):
                self.i += 1
                first = False
                continue
            if c == ord("]"):
                self.i += 1
                break
            if c is None:
                self.fail("EOF while parsing a list", peek=True)
            self.fail("expected `,` or `]`", peek=True)
        self.depth -= 1

    def string(self) -> None:
        b, n = self.b, len(self.b)
        start = self.i
        while True:
            if self.i >= n:
                self.fail("EOF while parsing a string")
            c = b[self.i]
            self.i += 1
            if c == ord('"'):
                break
            if c < 0x20:
                self.fail("control character (\\u0000-\\u001F) found while parsing a string")
            if c == ord("\\"):
                if self.i >= n:
                    self.fail("EOF while parsing a string")
                e = b[self.i]
                self.i += 1
                if e == ord("u"):
                    self.hex_escape()
                elif e not in _ESCAPES:
                    self.fail("invalid escape")
        try:
            b[start : self.i - 1].decode("utf-8")
        except UnicodeDecodeError:
            self.fail("invalid unicode code point")

    def hex_escape(self) -> None:
        digits = self.b[self.i : self.i + 4]
        for pos, d in enumerate(digits):
            if chr(d) not in "0123456789abcdefABCDEF":
                self.i += pos + 1
                self.fail("invalid escape")
        if len(digits) < 4:
            self.i = len(self.b)
            self.fail("EOF while parsing a string")
        code = int(digits, 16)
        self.i += 4
        if 0xDC00 <= code <= 0xDFFF:
            self.fail("lone leading surrogate in hex escape")
        if 0xD800 <= code <= 0xDBFF:
            # serde_json discards the byte it peeked before failing.
            for expected in b"\\u":
                if self.i >= len(self.b):
                    self.fail("EOF while parsing a string")
                got = self.b[self.i]
                self.i += 1
                if got != expected:
                    self.fail("unexpected end of hex escape")
            self.hex_escape_low()

    def hex_escape_low(self) -> None:
        digits = self.b[self.i : self.i + 4]
        for pos, d in enumerate(digits):
            if chr(d) not in "0123456789abcdefABCDEF":
                self.i += pos + 1
                self.fail("invalid escape")
        if len(digits) < 4:
            self.i = len(self.b)
            self.fail("EOF while parsing a string")
        self.i += 4
        if not 0xDC00 <= int(digits, 16) <= 0xDFFF:
            self.fail("lone leading surrogate in hex escape")

    def number(self) -> None:
        b, n = self.b, len(self.b)
        start = self.i
        if b[self.i] == ord("-"):
            self.i += 1
        if self.i >= n:
            self.fail("EOF while parsing a value")
        c = b[self.i]
        self.i += 1
        if c == ord("0"):
            if self.i < n and chr(b[self.i]).isdigit():
                self.fail("invalid number", peek=True)
        elif not ord("1") <= c <= ord("9"):
            self.fail("invalid number")
        while self.i < n and ord("0") <= b[self.i] <= ord("9"):
            self.i += 1
        if self.i < n and b[self.i] == ord("."):
            self.i += 1
            if self.i >= n:
                self.fail("EOF while parsing a value", peek=True)
            if not ord("0") <= b[self.i] <= ord("9"):
                self.fail("invalid number", peek=True)
            while self.i < n and ord("0") <= b[self.i] <= ord("9"):
                self.i += 1
        if self.i < n and b[self.i] in b"eE":
            self.i += 1
            if self.i < n and b[self.i] in b"+-":
                self.i += 1
            if self.i >= n:
                self.fail("EOF while parsing a value")
            c = b[self.i]
            self.i += 1
            if not ord("0") <= c <= ord("9"):
                self.fail("invalid number")
            while self.i < n and ord("0") <= b[self.i] <= ord("9"):
                self.i += 1
        if float(b[start : self.i]) in (float("inf"), float("-inf")):
            self.fail("number out of range")


# A whole JSON string, escapes included (unrolled: no backtracking per character).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def too_deep(body: bytes) -> bool:
    """Whether ``body``, JSON that orjson read, nests arrays and objects as deep
    as serde_json refuses (its recursion limit: Qdrant answers 400 "recursion
    limit exceeded"). orjson allows far deeper, and code that walks such a value
    recursively would overflow Python's stack, so every body is held to serde's
    limit. Cheap on every body (~1 us for a 4 KB search): fewer brackets than
    the limit cannot nest that deep; otherwise strings are cut out by a C regex
    and the brackets' running depth is summed by numpy (~14 ms for a 7 MB upsert
    of 1,000 points)."""
    if len(body.translate(None, _NOT_BRACKET)) < _MAX_DEPTH:  # one C pass; strings' brackets count too
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    opens = np.frombuffer(brackets, dtype=np.uint8)
    steps = ((opens == ord("[")) | (opens == ord("{"))).astype(np.int32) * 2 - 1
    return bool(steps.size) and int(np.cumsum(steps).max()) >= _MAX_DEPTH


def syntax_error(body: bytes) -> str | None:
    """serde_json's message for the first syntax error in ``body`` (with its
    position), or None when serde_json would read it."""
    scanner = _Scanner(body)
    try:
        scanner.run()
    except _Syntax as err:
        return at(err.message, body, err.index)
    return None


# ---------------------------------------------------------------------------
# Locating a value by path.
# ---------------------------------------------------------------------------


def _skip_ws(b: bytes, i: int) -> int:
    n = len(b)
    while i < n and b[i] in _WS:
        i += 1
    return i


def _string_end(b: bytes, i: int) -> int:
    """Index after the string starting at the quote ``b[i]``."""
    i += 1
    while True:
        c = b[i]
        if c == 0x5C:
            i += 2
            continue
        i += 1
        if c == 0x22:
            return i


def _value_end(b: bytes, i: int) -> int:
    c = b[i]
    if c == 0x22:
        return _string_end(b, i)
    if c in b"{[":
        depth = 0
        n = len(b)
        while i < n:
            c = b[i]
            if c == 0x22:
                i = _string_end(b, i)
                continue
            if c in b"{[":
                depth += 1
            elif c in b"}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    n = len(b)
    while i < n and b[i] not in b",]} \t\n\r":
        i += 1
    return i


def _child(b: bytes, i: int, step: str | int) -> int | None:
    """Start index of member ``step`` of the container starting at ``b[i]``.
    For objects the last duplicate wins (as orjson keeps it)."""
    if b[i] == 0x7B and isinstance(step, str):
        found = None
        i = _skip_ws(b, i + 1)
        while b[i] != 0x7D:
            key_end = _string_end(b, i)
            raw = b[i:key_end]
            key = json.loads(raw) if b"\\" in raw else raw[1:-1].decode("utf-8", "replace")
            i = _skip_ws(b, _skip_ws(b, key_end) + 1)
            if key == step:
                found = i
            i = _skip_ws(b, _value_end(b, i))
            if b[i] == 0x2C:
                i = _skip_ws(b, i + 1)
        return found
    if b[i] == 0x5B and isinstance(step, int):
        i = _skip_ws(b, i + 1)
        index = 0
        while b[i] != 0x5D:
            if index == step:
                return i
            i = _skip_ws(b, _value_end(b, i))
            if b[i] == 0x2C:
                i = _skip_ws(b, i + 1)
            index += 1
    return None


def locate(body: bytes, path: tuple) -> tuple[int, int, int | None] | None:
    """(start, end, container_start) of the value at ``path`` in a body that is
    valid JSON, following as much of the path as exists; ``container_start`` is
    where its parent object/array begins (None at the root). None if the body
    cannot be walked."""
    try:
        i = _skip_ws(body, 0)
        parent = None
        for step in path:
            child = _child(body, i, step)
            if child is None:
                break
            parent, i = i, child
        return i, _value_end(body, i), parent
    except (IndexError, ValueError):
        return None


def key_end(body: bytes, container: int, key: str) -> int | None:
    """Index just after the key string ``key`` inside the object at ``container``."""
    try:
        i = _skip_ws(body, container + 1)
        while body[i] != 0x7D:
            end = _string_end(body, i)
            raw = body[i:end]
            name = json.loads(raw) if b"\\" in raw else raw[1:-1].decode("utf-8", "replace")
            if name == key:
                return end
            i = _skip_ws(body, _skip_ws(body, end) + 1)
            i = _skip_ws(body, _value_end(body, i))
            if body[i] == 0x2C:
                i = _skip_ws(body, i + 1)
    except (IndexError, ValueError):
        return None
    return None


def after_value(body: bytes, end: int, container_start: int | None) -> int:
    """Where serde_json stands after a container-level error on the value that
    ends at ``end``: past any whitespace, and past the container's closing
    bracket if that comes next (serde_json's end_map/end_seq consume it)."""
    i = _skip_ws(body, end)
    if container_start is not None and i < len(body):
        closing = b"}" if body[container_start] == 0x7B else b"]"
        if body[i : i + 1] == closing:
            i += 1
    return i
