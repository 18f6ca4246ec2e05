"""Bytes for one update operation, without pickle.

The write-ahead log stores update ops (the dicts of ``shard.types``): JSON-shaped
values with float32/bool numpy arrays anywhere among them. Pickle would be the easy
way and the wrong one: a log must stay readable by the next version of the code and
must never execute anything it reads. So an op becomes

    [u8 format version][u8 flags][u16 reserved][u32 array count][u32 header length]
    [header: JSON, every ndarray replaced by {"__nd__": i, "dtype": str, "shape": [...]}]
    [array 0 raw bytes, padded to 8][array 1 raw bytes, padded to 8] ...

The header is written by orjson. Arrays are found through orjson's ``default`` hook
(called for every value it cannot serialise natively, numpy included, since
OPT_SERIALIZE_NUMPY is off), so encoding never walks the op in Python: a 1,000 x 384
upsert with 1,000 payloads encodes and decodes in about a millisecond or two.

Exactness:
- dtype (byte order included), shape and bytes of every array round-trip exactly
  (0-d arrays included). A numpy *scalar* is a JSON value in an op (an id, a payload
  number) and comes back as the Python int/float/bool it holds.
- ints stay ints and floats stay floats, nesting and unicode are kept; ints of any
  size work (orjson takes -2**63 .. 2**64-1, i.e. every Qdrant u64 id; a bigger one,
  or a string holding a lone surrogate, switches that op to the standard library's
  ``json``, flagged in the frame).
- Tuples come back as lists (JSON has no tuple). Non-finite floats *inside the JSON
  part* become null, as orjson writes them (JSON has no NaN and Qdrant's payloads are
  JSON); inside arrays they are kept bit-exact.
- A user dict that happens to look like a placeholder is escaped (flag bit 0), so no
  payload can be mistaken for an array.

Decoded arrays are fresh, writable, aligned copies, never views into the input.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson

FORMAT_VERSION = 1
_PREFIX = struct.Struct("<BBHII")  # version, flags, reserved, n_arrays, header_len
_FLAG_ESCAPED = 0x01  # user dicts holding the marker keys were wrapped
_FLAG_STDJSON = 0x02  # header written by the standard library's json
_ND = "__nd__"
_ESC = "__esc__"
_ND_TOKEN = b'"__nd__"'
_ESC_TOKEN = b'"__esc__"'
_ALIGN = 8


class CodecError(ValueError):
    """The bytes are not an encoded op (truncated, corrupt, or another format)."""


class _Unsupported(TypeError):
    pass


class _ArrayCollector:
    """orjson ``default`` hook: swaps each ndarray for a placeholder (and a numpy
    scalar for its Python value); refuses everything else orjson cannot write."""

    __slots__ = ("arrays",)

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, np.generic) and not isinstance(obj, np.void):
            return obj.item()  # a numpy scalar is the JSON number/bool/str it holds
        if not isinstance(obj, np.ndarray):
            raise _Unsupported(f"cannot encode a value of type {type(obj).__name__} in an op")
        if obj.dtype.hasobject or obj.dtype.fields is not None:
            raise _Unsupported(f"cannot encode an array of dtype {obj.dtype} in an op")
        index = len(self.arrays)
        self.arrays.append(obj)
        return {_ND: index, "dtype": obj.dtype.str, "shape": list(obj.shape)}


def encode(op: Any) -> bytes:
    """The bytes of ``op`` (see the module docstring). TypeError for values JSON
    cannot hold (sets, arbitrary objects, object arrays, non-str dict keys)."""
    collector = _ArrayCollector()
    flags = 0
    try:
        header = orjson.dumps(op, default=collector)
    except orjson.JSONEncodeError as e:
        if isinstance(e.__cause__, _Unsupported):
            raise TypeError(str(e.__cause__)) from None
        collector = _ArrayCollector()
        header = _std_dumps(op, collector)
        flags |= _FLAG_STDJSON
    if header.count(_ND_TOKEN) != len(collector.arrays) or _ESC_TOKEN in header:
        # Some user value spells a marker key: escape user dicts and encode again.
        collector = _ArrayCollector()
        escaped = _escape(op)
        flags |= _FLAG_ESCAPED
        if flags & _FLAG_STDJSON:
            header = _std_dumps(escaped, collector)
        else:
            header = orjson.dumps(escaped, default=collector)
    parts = [_PREFIX.pack(FORMAT_VERSION, flags, 0, len(collector.arrays), len(header)), header]
    offset = _PREFIX.size + len(header)
    for arr in collector.arrays:
        pad = -offset % _ALIGN
        if pad:
            parts.append(b"\0" * pad)
            offset += pad
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        parts.append(data)
        offset += data.nbytes
    return b"".join(parts)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The op that ``encode`` turned into ``data``. CodecError if the bytes are not one."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise CodecError("encoded op is shorter than its prefix")
    version, flags, _, n_arrays, header_len = _PREFIX.unpack_from(view, 0)
    if version != FORMAT_VERSION:
        raise CodecError(f"unknown op format version {version}")
    start = _PREFIX.size
    end = start + header_len
    if end > len(view):
        raise CodecError("encoded op is truncated in its header")
    try:
        if flags & _FLAG_STDJSON:
            obj = json.loads(bytes(view[start:end]).decode("ascii"))
        else:
            obj = orjson.loads(view[start:end])
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError(f"encoded op has a corrupt header: {e}") from None
    restorer = _Restorer(view, end, n_arrays, escaped=bool(flags & _FLAG_ESCAPED))
    if n_arrays or restorer.escaped:
        obj = restorer.restore(obj)
    restorer.finish()
    return obj


# ---------------------------------------------------------------------------
# Arrays.
# ---------------------------------------------------------------------------


class _Restorer:
    """Puts arrays back in place of their placeholders in one walk, in document order
    (the order orjson called ``default`` in, which is the order of the buffers). The
    walk stops as soon as the last array is placed, so an upsert's payloads, which come
    after its vectors, are never visited."""

    __slots__ = ("view", "offset", "next_index", "total", "escaped")

    def __init__(self, view: memoryview, offset: int, total: int, escaped: bool):
        self.view = view
        self.offset = offset
        self.next_index = 0
        self.total = total
        self.escaped = escaped

    def finish(self) -> None:
        if self.next_index != self.total:
            raise CodecError(f"encoded op names {self.total} arrays but its header holds {self.next_index}")
        if self.offset != len(self.view):
            raise CodecError("encoded op has trailing bytes")

    def _array(self, ph: dict[str, Any]) -> np.ndarray:
        try:
            if ph[_ND] != self.next_index or self.next_index >= self.total:
                raise CodecError("encoded op has its arrays out of order")
            dtype = np.dtype(ph["dtype"])
            shape = tuple(int(s) for s in ph["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"encoded op has a bad array placeholder: {e!r}") from None
        if dtype.hasobject:
            raise CodecError("encoded op has an object array")
        offset = self.offset + (-self.offset % _ALIGN)
        count = 1
        for s in shape:
            count *= s
        nbytes = count * dtype.itemsize
        if count < 0 or offset + nbytes > len(self.view):
            raise CodecError("encoded op is truncated in its arrays")
        arr = np.frombuffer(self.view, dtype=dtype, count=count, offset=offset).reshape(shape).copy()
        self.offset = offset + nbytes
        self.next_index += 1
        return arr

    def restore(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            if _ND in obj and len(obj) == 3:
                return self._array(obj)
            if self.escaped and _ESC in obj and len(obj) == 1:
                return {k: self.restore(v) for k, v in obj[_ESC]}
            for key, value in obj.items():
                if self.next_index == self.total and not self.escaped:
                    break
                if isinstance(value, (dict, list)):
                    obj[key] = self.restore(value)
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                if self.next_index == self.total and not self.escaped:
                    break
                if isinstance(value, (dict, list)):
                    obj[i] = self.restore(value)
        return obj


# ---------------------------------------------------------------------------
# The rare paths: marker collisions and values orjson refuses.
# ---------------------------------------------------------------------------


def _escape(obj: Any) -> Any:
    """Wraps every user dict that holds a marker key as {"__esc__": [[k, v], ...]}."""
    if isinstance(obj, dict):
        items = {k: _escape(v) for k, v in obj.items()}
        if _ND in obj or _ESC in obj:
            return {_ESC: [[k, v] for k, v in items.items()]}
        return items
    if isinstance(obj, (list, tuple)):
        return [_escape(v) for v in obj]
    return obj


def _std_dumps(obj: Any, collector: _ArrayCollector) -> bytes:
    """Standard-library JSON for ints beyond 64 bits and lone surrogates (ASCII with
    escapes, so any str survives)."""

    def default(value: Any) -> Any:
        try:
            return collector(value)
        except _Unsupported as e:
            raise TypeError(str(e)) from None

    if _has_non_str_key(obj):
        raise TypeError("op dict keys must be str")
    return json.dumps(obj, default=default, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=True).encode("ascii")


def _has_non_str_key(obj: Any) -> bool:
    """stdlib json would silently turn int keys into strings; refuse them as orjson does."""
    if isinstance(obj, dict):
        return any(not isinstance(k, str) or _has_non_str_key(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return any(_has_non_str_key(v) for v in obj)
    return False
