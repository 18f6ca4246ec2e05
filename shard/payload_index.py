"""Payload indexes of one shard, and the typing of payload values they share with filters.

Every index keeps, per offset, the values of its key path that have its type (arrays at
the end of the path flattened one level, as Qdrant's ``FieldIndexBuilder`` does), laid
out so that one condition over 100k points is a few vectorised numpy operations: each
offset's first value in a numpy column, further values of multi-valued points in a side
table. A condition an index "handles" is answered from the index alone, which is where
Qdrant's results differ from a payload scan (lib/segment/src/index/field_index):

- keyword / integer / uuid ``except``: only values of the index's type count, so a point
  whose field holds only other types does not match;
- integer ``range``: float payload values are not in an integer index;
- uuid: values and query are compared as parsed UUIDs, so case and format do not matter;
- full text: "match text" means every query token is among the point's tokens.

A condition whose value type the index does not hold (say an integer match on a keyword
index) is left to the payload scan, as Qdrant falls back to the payload.
"""

from __future__ import annotations

import math
import re
import uuid as _uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import numpy as np

from shard.json_path import JsonPath, values_at

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
EARTH_RADIUS_M = 6371008.8  # geo crate's Haversine: mean Earth radius (IUGG)

# --------------------------------------------------------------- value typing


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


def as_geo(value: Any) -> tuple[float, float] | None:
    """``(lon, lat)`` of an object with numeric ``lon`` and ``lat`` (what a geo condition
    reads from the payload; other keys are ignored), else None."""
    if type(value) is not dict:
        return None
    lon, lat = as_number(value.get("lon")), as_number(value.get("lat"))
    if lon is None or lat is None:
        return None
    return lon, lat


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in meters: the geo crate's ``Haversine`` formula."""
    theta1, theta2 = math.radians(lat1), math.radians(lat2)
    d_theta, d_lambda = math.radians(lat2 - lat1), math.radians(lon2 - lon1)
    a = math.sin(d_theta / 2) ** 2 + math.cos(theta1) * math.cos(theta2) * math.sin(d_lambda / 2) ** 2
    return EARTH_RADIUS_M * 2 * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


def haversine_np(lon1: float, lat1: float, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """``haversine_m`` from one point to arrays of points."""
    theta1, theta2 = np.radians(lat1), np.radians(lat2)
    d_theta, d_lambda = np.radians(lat2 - lat1), np.radians(lon2 - lon1)
    a = np.sin(d_theta / 2) ** 2 + np.cos(theta1) * np.cos(theta2) * np.sin(d_lambda / 2) ** 2
    return EARTH_RADIUS_M * 2 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _on_segment(x, y, x1, y1, x2, y2) -> bool:
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    return cross == 0 and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)


def _ring_position(x: float, y: float, ring: list[tuple[float, float]]) -> int:
    """1 inside, 0 on the boundary, -1 outside (ray casting)."""
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if _on_segment(x, y, x1, y1, x2, y2):
            return 0
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return 1 if inside else -1


def polygon_contains(lon: float, lat: float, exterior: list, interiors: list) -> bool:
    """The geo crate's ``Polygon::contains``: strictly inside the exterior ring and
    neither inside nor on the boundary of a hole. Rings are lists of ``(lon, lat)``."""
    if _ring_position(lon, lat, exterior) != 1:
        return False
    return all(_ring_position(lon, lat, hole) == -1 for hole in interiors)


# ------------------------------------------------------------------ full text


class Tokenizer:
    """Qdrant's text index tokenizers (tokenizers/mod.rs): ``word`` splits on every
    non-alphanumeric character, ``whitespace`` on whitespace, ``prefix`` indexes every
    prefix of each word; tokens are lowercased unless ``lowercase: false``. The
    ``multilingual`` tokenizer (charabia) is approximated by ``word``; stemmers and
    stopword languages are not applied, only ``stopwords.custom``."""

    _WORD = re.compile(r"[^\W_]+")

    def __init__(self, params: dict | None):
        params = params or {}
        self.kind = params.get("tokenizer") or "word"
        self.lowercase = params.get("lowercase") is not False
        self.min_len = params.get("min_token_len")
        self.max_len = params.get("max_token_len")
        stop = params.get("stopwords")
        custom = stop.get("custom") if isinstance(stop, dict) else None
        self.stopwords = {(w.lower() if self.lowercase else w) for w in (custom or ())}

    def _words(self, text: str) -> list[str]:
        words = text.split() if self.kind == "whitespace" else self._WORD.findall(text)
        return [w.lower() for w in words] if self.lowercase else words

    def _keep(self, token: str) -> bool:
        if self.min_len is not None and len(token.encode()) < self.min_len:
            return False
        return self.max_len is None or len(token) <= self.max_len

    def doc(self, text: str) -> list[str]:
        out = []
        for word in self._words(text):
            if word in self.stopwords:
                continue
            if self.kind != "prefix":
                out.append(word)
                continue
            for n in range(self.min_len or 1, (self.max_len or len(word)) + 1):
                if n >= len(word):
                    out.append(word)
                    break
                out.append(word[:n])
        return [t for t in out if self._keep(t)]

    def query(self, text: str) -> list[str]:
        if self.kind != "prefix":
            return self.doc(text)
        words = [w[: self.max_len] if self.max_len else w for w in self._words(text)]
        return [w for w in words if self._keep(w)]


def has_phrase(doc: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return bool(doc) and n > 0 and any(doc[i : i + n] == phrase for i in range(len(doc) - n + 1))


# -------------------------------------------------------------------- columns


class _Column:
    """Per-offset values: the first in a numpy column, the rest in ``extra``."""

    def __init__(self, dtype):
        self.first = np.zeros(0, dtype)
        self.count = np.zeros(0, np.int32)
        self.extra: dict[int, list] = {}
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self.points = 0

    def _grow(self, n: int) -> None:
        if n <= len(self.count):
            return
        cap = max(n, 2 * len(self.count), 1024)
        first = np.zeros(cap, self.first.dtype)
        first[: len(self.first)] = self.first
        count = np.zeros(cap, np.int32)
        count[: len(self.count)] = self.count
        self.first, self.count = first, count

    def put(self, offset: int, values: list) -> None:
        self.drop(offset)
        if not values:
            return
        self._grow(offset + 1)
        self.first[offset] = values[0]
        self.count[offset] = len(values)
        self.points += 1
        if len(values) > 1:
            self.extra[offset] = values[1:]
            self._cache = None

    def drop(self, offset: int) -> None:
        if offset < len(self.count) and self.count[offset]:
            self.count[offset] = 0
            self.points -= 1
            if self.extra.pop(offset, None) is not None:
                self._cache = None

    def load(self, rows: list[tuple[int, list]]) -> None:
        """Bulk ``put`` of ``(offset, values)`` rows into an empty column."""
        rows = [r for r in rows if r[1]]
        if not rows:
            return
        self._grow(max(o for o, _ in rows) + 1)
        offs = np.fromiter((o for o, _ in rows), np.int64, len(rows))
        self.first[offs] = [v[0] for _, v in rows]
        self.count[offs] = [len(v) for _, v in rows]
        self.points = len(rows)
        self.extra = {o: v[1:] for o, v in rows if len(v) > 1}
        self._cache = None

    def dump(self) -> dict:
        """Plain-JSON state: offsets holding values, their values (complex numbers as
        ``[real, imag]`` pairs), so a snapshot load needs no payload scan."""
        nz = np.flatnonzero(self.count)
        first = self.first[nz]
        cplx = first.dtype.kind == "c"
        return {
            "offsets": nz.tolist(),
            "first": [first.real.tolist(), first.imag.tolist()] if cplx else first.tolist(),
            "count": self.count[nz].tolist(),
            "extra": [[o, [[v.real, v.imag] for v in vs] if cplx else vs] for o, vs in self.extra.items()],
        }

    def restore(self, state: dict) -> None:
        offs = np.asarray(state["offsets"], np.int64)
        if len(offs):
            self._grow(int(offs.max()) + 1)
            first = state["first"]
            if self.first.dtype.kind == "c":
                first = np.asarray(first[0], float) + 1j * np.asarray(first[1], float)
            self.first[offs] = first
            self.count[offs] = state["count"]
        self.points = len(offs)
        cplx = self.first.dtype.kind == "c"
        self.extra = {o: [complex(*v) for v in vs] if cplx else vs for o, vs in state["extra"]}
        self._cache = None

    def values(self, offset: int) -> list:
        if offset >= len(self.count) or not self.count[offset]:
            return []
        return [self.first[offset].item()] + list(self.extra.get(offset, ()))

    def _extras(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            offs = [o for o, vs in self.extra.items() for _ in vs]
            vals = [v for vs in self.extra.values() for v in vs]
            self._cache = (np.asarray(offs, np.int64), np.asarray(vals, self.first.dtype))
        return self._cache

    def mask(self, pred: Callable[[np.ndarray], np.ndarray], size: int) -> np.ndarray:
        """Offsets (< size) with at least one value satisfying the vectorised ``pred``."""
        out = np.zeros(size, bool)
        n = min(size, len(self.count))
        if n:
            out[:n] = (self.count[:n] > 0) & pred(self.first[:n])
        if self.extra:
            offs, vals = self._extras()
            hit = offs[pred(vals)]
            out[hit[hit < size]] = True
        return out

    def pairs(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, value)`` rows of the given offsets, one per value."""
        offsets = np.asarray(offsets, np.int64)
        offsets = offsets[offsets < len(self.count)]
        offsets = offsets[self.count[offsets] > 0]
        offs, vals = [offsets], [self.first[offsets]]
        if self.extra:
            e_offs, e_vals = self._extras()
            sel = np.isin(e_offs, offsets)
            offs.append(e_offs[sel])
            vals.append(e_vals[sel])
        return np.concatenate(offs), np.concatenate(vals)


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


_MISSING = object()


class FieldIndex:
    """One payload index. Subclasses say which values they hold (``_convert``) and which
    conditions they answer; every ``*_mask`` returns a bool mask of length ``size`` or
    None when the index does not handle that condition."""

    kind = ""
    dtype: Any = np.int64
    facetable = False
    orderable = False

    def __init__(self, path: JsonPath, params: dict | None = None):
        self.path = path
        self.params = params
        self.col = _Column(self.dtype)

    def _convert(self, value: Any) -> Any:
        """The index's encoding of one payload value, or None when it doesn't hold it."""
        raise NotImplementedError

    def _extract(self, values: Iterable) -> list:
        conv = self._convert
        return _unique(c for c in map(conv, values) if c is not None)

    def set(self, offset: int, payload: dict | None) -> None:
        self.col.put(offset, self._extract(values_at(payload, self.path)) if payload else [])

    def remove(self, offset: int) -> None:
        self.col.drop(offset)

    def build(self, payloads: list) -> None:
        """Index every payload at once (index creation, snapshot load); a fast path for
        top-level keys, since rebuilding indexes of 100k points must stay cheap."""
        conv, extract, key = self._convert, self._extract, self.path.first_key
        rows = []
        if self.path.rest:
            for o, p in enumerate(payloads):
                if p:
                    vals = extract(values_at(p, self.path))
                    if vals:
                        rows.append((o, vals))
        else:
            for o, p in enumerate(payloads):
                if not p:
                    continue
                v = p.get(key, _MISSING)
                if v is _MISSING:
                    continue
                if type(v) is list:
                    vals = extract(v)
                    if vals:
                        rows.append((o, vals))
                else:
                    c = conv(v)
                    if c is not None:
                        rows.append((o, [c]))
        self.col.load(rows)

    def points_count(self) -> int:
        return self.col.points

    def dump(self) -> dict:
        return {"col": self.col.dump()}

    def restore(self, state: dict) -> None:
        self.col.restore(state["col"])

    def match_value_mask(self, value: Any, size: int) -> np.ndarray | None:
        return None

    def match_any_mask(self, values: list, size: int, negate: bool = False) -> np.ndarray | None:
        return None

    def range_mask(self, bounds: dict, is_datetime: bool, size: int) -> np.ndarray | None:
        return None

    def geo_mask(self, vec_pred, exact, size: int) -> np.ndarray | None:
        return None

    def text_mask(self, text: str, mode: str, size: int) -> np.ndarray | None:
        return None

    def facet_values(self, offsets: np.ndarray) -> list[tuple[Any, int]]:
        """Each value held by the offsets with the number of offsets holding it."""
        _, vals = self.col.pairs(offsets)
        uniq, counts = np.unique(vals, return_counts=True)
        return [(self._decode(v.item()), int(c)) for v, c in zip(uniq, counts)]

    def _decode(self, v: Any) -> Any:
        return v


def _range_pred(bounds: dict) -> Callable[[np.ndarray], np.ndarray]:
    def pred(a: np.ndarray) -> np.ndarray:
        m = np.ones(a.shape, bool)
        if "gt" in bounds:
            m &= a > bounds["gt"]
        if "gte" in bounds:
            m &= a >= bounds["gte"]
        if "lt" in bounds:
            m &= a < bounds["lt"]
        if "lte" in bounds:
            m &= a <= bounds["lte"]
        return m

    return pred


class _VocabIndex(FieldIndex):
    """Values dictionary-encoded to int ids (keyword, uuid)."""

    dtype = np.int64
    facetable = True

    def __init__(self, path: JsonPath, params: dict | None = None):
        super().__init__(path, params)
        self.vocab: dict[Any, int] = {}
        self.rev: list[Any] = []

    def _encode(self, key: Any) -> int:
        i = self.vocab.get(key)
        if i is None:
            i = self.vocab[key] = len(self.rev)
            self.rev.append(key)
        return i

    def dump(self):
        return {"col": self.col.dump(), "vocab": [self._key_state(k) for k in self.rev]}

    def restore(self, state):
        self.rev = [self._key_from_state(k) for k in state["vocab"]]
        self.vocab = {k: i for i, k in enumerate(self.rev)}
        self.col.restore(state["col"])

    def _key_state(self, key: Any) -> Any:
        return key

    def _key_from_state(self, key: Any) -> Any:
        return key

    def _keys(self, values: list) -> list | None:
        """Vocabulary keys of condition values, or None when the index can't answer."""
        raise NotImplementedError

    def match_value_mask(self, value, size):
        keys = self._keys([value])
        if keys is None:
            return None
        i = self.vocab.get(keys[0])
        return np.zeros(size, bool) if i is None else self.col.mask(lambda a: a == i, size)

    def match_any_mask(self, values, size, negate=False):
        keys = self._keys(values)
        if keys is None:
            return None
        ids = np.asarray([self.vocab[k] for k in keys if k in self.vocab], np.int64)
        if negate:  # "except": some value of the point is outside the list
            return self.col.mask(lambda a: ~np.isin(a, ids), size)
        return self.col.mask(lambda a: np.isin(a, ids), size) if len(ids) else np.zeros(size, bool)

    def _decode(self, v):
        return self.rev[v]


class KeywordIndex(_VocabIndex):
    kind = "keyword"

    def _convert(self, value):
        if type(value) is not str:
            return None
        i = self.vocab.get(value)
        return self._encode(value) if i is None else i

    def _keys(self, values):
        return values if all(type(v) is str for v in values) else None


class UuidIndex(_VocabIndex):
    kind = "uuid"

    def _convert(self, value):
        u = parse_uuid(value)
        return None if u is None else self._encode(u)

    def _keys(self, values):
        keys = [parse_uuid(v) for v in values]
        return None if any(k is None for k in keys) else keys

    def _decode(self, v):
        return uuid_str(self.rev[v])

    def _key_state(self, key):
        return f"{key:032x}"  # 128-bit ints are beyond JSON numbers

    def _key_from_state(self, key):
        return int(key, 16)


class IntegerIndex(FieldIndex):
    kind = "integer"
    dtype = np.int64

    def __init__(self, path, params=None):
        super().__init__(path, params)
        self.lookup = (params or {}).get("lookup") is not False
        self.ranged = (params or {}).get("range") is not False
        self.facetable = self.lookup
        self.orderable = self.ranged

    def _convert(self, value):
        return as_int(value)

    def match_value_mask(self, value, size):
        if not self.lookup or as_int(value) is None:
            return None
        return self.col.mask(lambda a: a == value, size)

    def match_any_mask(self, values, size, negate=False):
        if not self.lookup or not values or any(as_int(v) is None for v in values):
            return None
        ids = np.asarray(values, np.int64)
        return self.col.mask((lambda a: ~np.isin(a, ids)) if negate else (lambda a: np.isin(a, ids)), size)

    def range_mask(self, bounds, is_datetime, size):
        if not self.ranged or is_datetime:
            return None
        # Integer bounds equivalent to the float ones, so big values compare exactly.
        lo, hi = I64_MIN, I64_MAX
        if "gt" in bounds:
            lo = max(lo, math.floor(bounds["gt"]) + 1)
        if "gte" in bounds:
            lo = max(lo, math.ceil(bounds["gte"]))
        if "lt" in bounds:
            hi = min(hi, math.ceil(bounds["lt"]) - 1)
        if "lte" in bounds:
            hi = min(hi, math.floor(bounds["lte"]))
        if lo > hi:
            return np.zeros(size, bool)
        return self.col.mask(lambda a: (a >= lo) & (a <= hi), size)


class FloatIndex(FieldIndex):
    kind = "float"
    dtype = np.float64
    orderable = True

    def _convert(self, value):
        return as_number(value)

    def range_mask(self, bounds, is_datetime, size):
        return None if is_datetime else self.col.mask(_range_pred(bounds), size)


class DatetimeIndex(FieldIndex):
    """Timestamps in microseconds (Qdrant's ``DateTimeWrapper::timestamp``)."""

    kind = "datetime"
    dtype = np.int64
    orderable = True

    def _convert(self, value):
        return parse_datetime(value)

    def range_mask(self, bounds, is_datetime, size):
        return self.col.mask(_range_pred(bounds), size) if is_datetime else None


class BoolIndex(FieldIndex):
    kind = "bool"
    dtype = np.int8
    facetable = True

    def _convert(self, value):
        return int(value) if type(value) is bool else None

    def match_value_mask(self, value, size):
        if type(value) is not bool:
            return None
        flag = int(value)
        return self.col.mask(lambda a: a == flag, size)

    def _decode(self, v):
        return bool(v)


class GeoIndex(FieldIndex):
    """Points as ``lon + i*lat``; only valid coordinates are indexed, as Qdrant's
    ``GeoPoint`` deserialisation demands."""

    kind = "geo"
    dtype = np.complex128

    def _convert(self, value):
        g = as_geo(value)
        if g is not None and -180 <= g[0] <= 180 and -90 <= g[1] <= 90:
            return complex(g[0], g[1])
        return None

    def geo_mask(self, vec_pred, exact, size):
        """``vec_pred(lon, lat)`` on arrays; ``exact(lon, lat)``, when given, refines the
        candidates ``vec_pred`` selected (polygons: bounding box, then the exact test)."""
        mask = self.col.mask(lambda a: vec_pred(a.real, a.imag), size)
        if exact is not None:
            for o in np.flatnonzero(mask).tolist():
                if not any(exact(v.real, v.imag) for v in self.col.values(o)):
                    mask[o] = False
        return mask


class TextIndex(FieldIndex):
    """Full-text index. A point's tokens are those of all its strings: "match text"
    wants every query token among them. Phrases are matched within one string, and only
    when the index was created with ``phrase_matching: true`` (otherwise Qdrant keeps no
    token positions and a phrase matches nothing)."""

    kind = "text"

    def __init__(self, path, params=None):
        super().__init__(path, params)
        self.tokenizer = Tokenizer(params)
        self.phrases = (params or {}).get("phrase_matching") is True
        self.docs: dict[int, list[list[str]]] = {}  # per offset: tokens of each string
        self.postings: dict[str, set[int]] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def _add(self, offset: int, docs: list[list[str]]) -> None:
        tokens = {t for doc in docs for t in doc}
        if not tokens:
            return
        self.docs[offset] = docs
        for token in tokens:
            self.postings.setdefault(token, set()).add(offset)
            self._arrays.pop(token, None)

    def set(self, offset, payload):
        self.remove(offset)
        if payload:
            strings = [v for v in values_at(payload, self.path) if type(v) is str]
            self._add(offset, [self.tokenizer.doc(v) for v in strings])

    def remove(self, offset):
        docs = self.docs.pop(offset, None)
        for token in {t for doc in docs or () for t in doc}:
            posting = self.postings[token]
            posting.discard(offset)
            if not posting:
                del self.postings[token]
            self._arrays.pop(token, None)

    def build(self, payloads):
        for o, p in enumerate(payloads):
            if p:
                self.set(o, p)

    def points_count(self):
        return len(self.docs)

    def dump(self):
        return {"docs": [[o, docs] for o, docs in self.docs.items()]}

    def restore(self, state):
        for o, docs in state["docs"]:
            self._add(o, docs)

    def _posting(self, token: str, size: int) -> np.ndarray:
        arr = self._arrays.get(token)
        if arr is None:
            posting = self.postings.get(token, ())
            arr = self._arrays[token] = np.fromiter(posting, np.int64, len(posting))
        mask = np.zeros(size, bool)
        mask[arr[arr < size]] = True
        return mask

    def text_mask(self, text, mode, size):
        tokens = self.tokenizer.query(text)
        if not tokens or (mode == "phrase" and not self.phrases):
            return np.zeros(size, bool)
        if mode == "any":
            mask = np.zeros(size, bool)
            for t in set(tokens):
                mask |= self._posting(t, size)
            return mask
        mask = np.ones(size, bool)
        for t in set(tokens):
            mask &= self._posting(t, size)
        if mode == "phrase":
            for o in np.flatnonzero(mask).tolist():
                mask[o] = any(has_phrase(doc, tokens) for doc in self.docs[o])
        return mask

    def check_strings(self, strings: list[str], text: str, mode: str) -> bool:
        """Qdrant's ``check_payload_match``: the condition against given strings (used
        for nested conditions, where the index's tokenizer still applies)."""
        docs = [self.tokenizer.doc(s) for s in strings]
        tokens = self.tokenizer.query(text)
        if not tokens:
            return False
        if mode == "phrase":
            return self.phrases and any(has_phrase(doc, tokens) for doc in docs)
        have = {t for doc in docs for t in doc}
        return any(t in have for t in tokens) if mode == "any" else all(t in have for t in tokens)


INDEX_TYPES: dict[str, type[FieldIndex]] = {
    cls.kind: cls
    for cls in (KeywordIndex, IntegerIndex, FloatIndex, BoolIndex, UuidIndex, DatetimeIndex, GeoIndex, TextIndex)
}


def make_index(path: JsonPath, kind: str, params: dict | None) -> FieldIndex:
    return INDEX_TYPES[kind](path, params)
