"""Qdrant filters over one shard: compile the REST ``Filter`` JSON once, then evaluate
it to a bool mask over offsets, and estimate its cardinality for the search planner.

Semantics are Qdrant 1.15's server ones (lib/segment/src/payload_storage:
``query_checker.rs``, ``condition_checker.rs``), which differ from qdrant-client's local
mode in places, all deliberate here:

- ``match`` is typed: an integer matches only JSON integers (never ``true``, never
  ``1.0``), a bool only bools, a string only strings.
- ``except`` is false for null and for a missing key, and true for any value that is not
  of the list's type (a number against a list of strings, an object, a nested array).
- ``range`` reads numbers only (bools are not numbers); with string bounds it is a
  datetime range over strings Qdrant can parse.
- ``values_count`` counts each value the path reaches (null 0, array its length, anything
  else 1) and needs one of them to satisfy every bound; a missing key never matches.
- ``nested`` reads ``key[]``: only objects inside an array are tested, each against the
  whole inner filter; ``has_id`` and ``has_vector`` are false inside it.
- geo bounding boxes are strict and may cross the antimeridian; radius is haversine in
  meters with the geo crate's Earth radius; polygon edges and hole edges are outside.
- ``text``/``phrase`` without a text index are substring tests; with one, token tests.
- an empty ``should`` list is ignored (Qdrant's ``optimize_filter`` drops it), except
  inside ``nested``, where Qdrant's plain ``check_payload`` makes it match nothing;
  ``min_should`` needs ``min_count`` of its conditions (Qdrant's answer to an
  unsatisfiable one depends on its query plan; here it never matches).

Later Qdrant versions changed two of these: ``is_null`` became true for ``[null]`` and
``values_count`` matches a missing key as 0 values; this module follows 1.15.

Conditions a payload index can answer are evaluated with numpy from the index (see
``shard.payload_index`` for the few places where Qdrant's index semantics differ from a
payload scan); the rest run in Python over the offsets still in play.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from shard import json_path
from shard.json_path import JsonPath, value_get
from shard.payload import PayloadStore
from shard.payload_index.base import FieldIndex
from shard.payload_index.geo import as_geo, haversine_m, haversine_np, polygon_contains
from shard.payload_index.text import TextIndex
from shard.payload_index.values import as_int, as_number, parse_datetime, parse_uuid, uuid_str
from shard.types import BadInput


class FilterContext(Protocol):
    size: int  # number of offsets
    live: np.ndarray  # bool (size,): offsets that hold a point
    payloads: PayloadStore

    def offsets_of(self, ids: list) -> np.ndarray: ...

    def has_vector(self, name: str) -> np.ndarray: ...


Lookup = Callable[[JsonPath], "FieldIndex | None"]


def _scan(check: Callable[[dict], bool], ctx: FilterContext, cand: np.ndarray) -> np.ndarray:
    """``cand`` narrowed to the offsets whose payload passes ``check`` (pure Python)."""
    stored = ctx.payloads.payload_list()
    empty: dict = {}
    hits = [o for o in np.flatnonzero(cand).tolist() if check(stored[o] or empty if o < len(stored) else empty)]
    out = np.zeros(len(cand), bool)
    out[hits] = True
    return out


@dataclass
class Estimation:
    """Qdrant's ``CardinalityEstimation`` without primary clauses."""

    min: int
    exp: int
    max: int


def _unknown(total: int) -> Estimation:
    return Estimation(0, total // 2, total)


def _exact(n: int) -> Estimation:
    return Estimation(n, n, n)


# ------------------------------------------------------------------ conditions


class _Node:
    rank = 1  # evaluation order inside `must`: cheap numpy nodes first

    def mask(self, ctx: FilterContext, cand: np.ndarray) -> np.ndarray:
        return _scan(self.check, ctx, cand)

    def check(self, payload: dict) -> bool:
        raise NotImplementedError

    def estimate(self, ctx: FilterContext, live: np.ndarray, total: int) -> Estimation:
        return _unknown(total)


class _HasId(_Node):
    rank = 0

    def __init__(self, ids: list):
        self.ids = [_point_id(i) for i in ids]

    def _full(self, ctx, size):
        offs = np.asarray(ctx.offsets_of(self.ids), np.int64)
        out = np.zeros(size, bool)
        out[offs[(offs >= 0) & (offs < size)]] = True
        return out

    def mask(self, ctx, cand):
        return cand & self._full(ctx, len(cand))

    def check(self, payload):
        return False  # has_id never matches inside `nested` (no id tracker there)

    def estimate(self, ctx, live, total):
        return _exact(int((self._full(ctx, len(live)) & live).sum()))


class _HasVector(_Node):
    rank = 0

    def __init__(self, name: str):
        if not isinstance(name, str):
            raise BadInput(f"has_vector expects a vector name, got {name!r}")
        self.name = name

    def _full(self, ctx, size):
        has = np.asarray(ctx.has_vector(self.name), bool)[:size]
        if len(has) < size:
            has = np.concatenate([has, np.zeros(size - len(has), bool)])
        return has

    def mask(self, ctx, cand):
        return cand & self._full(ctx, len(cand))

    def check(self, payload):
        return False  # has_vector never matches inside `nested`

    def estimate(self, ctx, live, total):
        return _exact(int((self._full(ctx, len(live)) & live).sum()))


class _IsEmpty(_Node):
    """Missing, null, ``[]`` — or every value the path reaches is one of those."""

    def __init__(self, path: JsonPath):
        self.path = path

    def check(self, payload):
        return all(v is None or (type(v) is list and not v) for v in value_get(payload, self.path))


class _IsNull(_Node):
    """Some value the path reaches is null (``[null]`` is an array, not null)."""

    def __init__(self, path: JsonPath):
        self.path = path

    def check(self, payload):
        return any(v is None for v in value_get(payload, self.path))


class _Nested(_Node):
    rank = 2

    def __init__(self, spec: Any, lookup: Lookup):
        if not isinstance(spec, dict) or "key" not in spec:
            raise BadInput("nested condition needs `key` and `filter`")
        self.path = json_path.parse(spec["key"]).array_key()
        path = self.path
        self.filter = _Filter(spec.get("filter") or {}, lambda sub: lookup(path.extend(sub)))

    def check(self, payload):
        return any(type(v) is dict and self.filter.check(v) for v in value_get(payload, self.path))


def _point_id(value: Any) -> int | str:
    if type(value) is int and 0 <= value < 2**64:
        return value
    parsed = parse_uuid(value)
    if parsed is None:
        raise BadInput(
            f"value {value!r} is not a valid point ID, valid values are either an unsigned integer or a UUID"
        )
    return uuid_str(parsed)


# --------------------------------------------------------------- field condition


def _parse_any_list(values: Any, what: str) -> list:
    """``any``/``except`` lists are all strings or all integers (Qdrant's AnyVariants)."""
    if not isinstance(values, list):
        raise BadInput(f"match `{what}` expects a list")
    if all(type(v) is str for v in values) or all(as_int(v) is not None for v in values):
        return values
    raise BadInput(f"match `{what}` expects a list of strings or a list of integers")


def _match_checker(match: Any) -> tuple[str, Any, Callable[[Any], bool]]:
    """``(kind, argument, per-value checker)`` of a ``match`` clause."""
    if not isinstance(match, dict):
        raise BadInput(f"Invalid match condition: {match!r}")
    if "value" in match:
        want = match["value"]
        kind = type(want)
        if kind not in (str, bool) and as_int(want) is None:
            raise BadInput(f"match value must be a string, an integer or a bool, got {want!r}")
        return "value", want, lambda x: type(x) is kind and x == want
    for mode in ("text", "phrase", "text_any"):
        if mode in match:
            text = match[mode]
            if not isinstance(text, str):
                raise BadInput(f"match `{mode}` expects a string")
            if mode == "text_any":
                words = text.split()
                return mode, text, lambda x: type(x) is str and any(w in x for w in words)
            return mode, text, lambda x: type(x) is str and text in x
    if "any" in match:
        values = _parse_any_list(match["any"], "any")
        pool = set(values)
        return "any", values, lambda x: (type(x) is str or as_int(x) is not None) and x in pool
    if "except" in match:
        values = _parse_any_list(match["except"], "except")
        pool = set(values)
        strings = not values or type(values[0]) is str  # `[]` deserialises as strings

        def except_check(x: Any) -> bool:
            if x is None:
                return False
            if strings:
                return x not in pool if type(x) is str else True
            if type(x) is int or type(x) is float:
                n = as_int(x)
                return True if n is None else n not in pool
            return True

        return "except", values, except_check
    raise BadInput(f"Invalid match condition: {match!r}")


def _range_checker(spec: Any) -> tuple[dict, bool, Callable[[Any], bool]]:
    """``(bounds, is_datetime, per-value checker)``; string bounds make a datetime range
    compared in microseconds (Qdrant's ``RangeInterface`` deserialisation)."""
    if not isinstance(spec, dict):
        raise BadInput(f"Invalid range condition: {spec!r}")
    raw = {k: spec[k] for k in ("gt", "gte", "lt", "lte") if spec.get(k) is not None}
    is_dt = any(isinstance(v, str) for v in raw.values())
    bounds: dict = {}
    for k, v in raw.items():
        b = parse_datetime(v) if is_dt else as_number(v)
        if b is None:
            if is_dt:
                raise BadInput(
                    f"'{v}' does not match accepted datetime format (RFC3339). Example: 2014-01-01T00:00:00Z"
                )
            raise BadInput(f"range bound `{k}` must be a number, got {v!r}")
        bounds[k] = b
    read = parse_datetime if is_dt else as_number
    gt, gte, lt, lte = (bounds.get(k) for k in ("gt", "gte", "lt", "lte"))

    def check(x: Any) -> bool:
        n = read(x)
        return (
            n is not None
            and (gt is None or n > gt)
            and (gte is None or n >= gte)
            and (lt is None or n < lt)
            and (lte is None or n <= lte)
        )

    return bounds, is_dt, check


def _point(spec: Any, what: str) -> tuple[float, float]:
    g = as_geo(spec)
    if g is None:
        raise BadInput(f"{what} must be a geo point with `lon` and `lat`")
    return g


def _ring(spec: Any) -> list[tuple[float, float]]:
    points = spec.get("points") if isinstance(spec, dict) else None
    if not isinstance(points, list) or len(points) < 4:
        n = len(points) if isinstance(points, list) else 0
        raise BadInput(f"Validation failed: polygon invalid, the size must be at least 4, got {n}")
    return [_point(p, "polygon point") for p in points]


def _geo_checkers(kind: str, spec: Any) -> tuple[Callable, Callable | None, Callable[[float, float], bool]]:
    """``(vectorised predicate, exact refinement or None, scalar predicate)`` on lon/lat."""
    if not isinstance(spec, dict):
        raise BadInput(f"Invalid {kind} condition")
    if kind == "geo_radius":
        c_lon, c_lat = _point(spec.get("center"), "geo_radius center")
        radius = as_number(spec.get("radius"))
        if radius is None:
            raise BadInput("geo_radius needs a numeric radius")
        return (
            lambda lon, lat: haversine_np(c_lon, c_lat, lon, lat) < radius,
            None,
            lambda lon, lat: haversine_m(c_lon, c_lat, lon, lat) < radius,
        )
    if kind == "geo_bounding_box":
        tl_lon, tl_lat = _point(spec.get("top_left"), "top_left")
        br_lon, br_lat = _point(spec.get("bottom_right"), "bottom_right")
        wraps = tl_lon > br_lon  # crosses the antimeridian

        def vec(lon, lat):
            lon_ok = ((lon > tl_lon) | (lon < br_lon)) if wraps else ((lon > tl_lon) & (lon < br_lon))
            return lon_ok & (lat > br_lat) & (lat < tl_lat)

        def one(lon, lat):
            lon_ok = (lon > tl_lon or lon < br_lon) if wraps else (tl_lon < lon < br_lon)
            return lon_ok and br_lat < lat < tl_lat

        return vec, None, one
    exterior = _ring(spec.get("exterior"))
    interiors = [_ring(r) for r in spec.get("interiors") or []]
    xs, ys = [p[0] for p in exterior], [p[1] for p in exterior]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def exact(lon, lat):
        return polygon_contains(lon, lat, exterior, interiors)

    return lambda lon, lat: (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1), exact, exact


def _count_ok(bounds: dict, count: int) -> bool:
    return (
        ("lt" not in bounds or count < bounds["lt"])
        and ("gt" not in bounds or count > bounds["gt"])
        and ("lte" not in bounds or count <= bounds["lte"])
        and ("gte" not in bounds or count >= bounds["gte"])
    )


def _fc_is_empty(flag: bool, v: Any) -> bool:
    if v is None:
        return flag
    if type(v) is list:
        return (not v) == flag
    return not flag


def _fc_is_null(flag: bool, v: Any) -> bool:
    if v is None:
        return flag
    if type(v) is list:
        return any(x is None for x in v) == flag
    return not flag


class _Field(_Node):
    """A FieldCondition. Several clauses in one condition are ORed per value, except that
    ``values_count``, then ``is_empty``, then ``is_null`` take precedence (Qdrant's
    ``ValueChecker for FieldCondition``)."""

    def __init__(self, spec: dict, lookup: Lookup, top_level: bool):
        self.path = json_path.parse(spec["key"])
        present = {k: spec[k] for k in _CLAUSES if spec.get(k) is not None}
        if not present:
            raise BadInput("Validation error in body: At least one field condition must be specified")
        checkers: list[Callable[[Any], bool]] = []
        self.text_mode: str | None = None
        self._index_query: Callable[[FieldIndex, int], np.ndarray | None] | None = None
        if "match" in present:
            kind, arg, check = _match_checker(present["match"])
            checkers.append(check)
            if kind in ("text", "phrase", "text_any"):
                self.text_mode, self.text = ("any" if kind == "text_any" else "all" if kind == "text" else kind), arg
            self._index_query = _index_match(kind, arg)
        if "range" in present:
            bounds, is_dt, check = _range_checker(present["range"])
            checkers.append(check)
            self._index_query = lambda index, size: index.range_mask(bounds, is_dt, size)
        for kind in ("geo_radius", "geo_bounding_box", "geo_polygon"):
            if kind in present:
                vec, exact, one = _geo_checkers(kind, present[kind])
                checkers.append(lambda x, one=one: (g := as_geo(x)) is not None and one(*g))
                self._index_query = lambda index, size, vec=vec, exact=exact: index.geo_mask(vec, exact, size)
        self.values_count = None
        if "values_count" in present:
            vc = present["values_count"]
            if not isinstance(vc, dict):
                raise BadInput("values_count expects an object")
            self.values_count = {k: v for k, v in vc.items() if k in ("lt", "gt", "lte", "gte") and v is not None}
            if any(type(v) is not int or v < 0 for v in self.values_count.values()):
                raise BadInput("values_count bounds must be non-negative integers")
        self.is_empty, self.is_null = present.get("is_empty"), present.get("is_null")
        if any(flag is not None and type(flag) is not bool for flag in (self.is_empty, self.is_null)):
            raise BadInput("is_empty and is_null of a field condition must be booleans")
        self.checkers = checkers
        single = len(present) == 1 and self.values_count is None and self.is_empty is None and self.is_null is None
        index = lookup(self.path) if lookup is not None else None
        self.index = index if top_level and single and self._index_query is not None else None
        self.text_index = index if isinstance(index, TextIndex) and self.text_mode else None
        self.rank = 0 if self.index is not None else 1

    def _value_ok(self, x: Any) -> bool:
        return any(c(x) for c in self.checkers)

    def check(self, payload: dict) -> bool:
        values = value_get(payload, self.path)
        if not values:
            if self.is_empty is not None:
                return self.is_empty
            return self.is_null is not None and not self.is_null
        if self.values_count is not None:
            return any(
                _count_ok(self.values_count, 0 if v is None else len(v) if type(v) is list else 1) for v in values
            )
        if self.is_empty is not None:
            return any(_fc_is_empty(self.is_empty, v) for v in values)
        if self.is_null is not None:
            return any(_fc_is_null(self.is_null, v) for v in values)
        if self.text_index is not None:  # Qdrant's special_check_condition: the index's tokenizer
            for v in values:
                strings = [v] if type(v) is str else [s for s in v if type(s) is str] if type(v) is list else []
                if strings and self.text_index.check_strings(strings, self.text, self.text_mode):
                    return True
            return False
        ok = self._value_ok
        for v in values:
            if type(v) is list:
                if any(ok(x) for x in v):
                    return True
            elif ok(v):
                return True
        return False

    def _from_index(self, size: int) -> np.ndarray | None:
        return self._index_query(self.index, size) if self.index is not None else None

    def mask(self, ctx, cand):
        full = self._from_index(len(cand))
        if full is None:
            return _scan(self.check, ctx, cand)
        return cand & full

    def estimate(self, ctx, live, total):
        full = self._from_index(len(live))
        return _unknown(total) if full is None else _exact(int((full & live).sum()))


_CLAUSES = ("match", "range", "geo_radius", "geo_bounding_box", "geo_polygon", "values_count", "is_empty", "is_null")


def _index_match(kind: str, arg: Any) -> Callable[[FieldIndex, int], np.ndarray | None]:
    if kind == "value":
        return lambda index, size: index.match_value_mask(arg, size)
    if kind == "any":
        return lambda index, size: index.match_any_mask(arg, size)
    if kind == "except":
        return lambda index, size: index.match_any_mask(arg, size, negate=True)
    mode = "any" if kind == "text_any" else "all" if kind == "text" else "phrase"
    return lambda index, size: index.text_mask(arg, mode, size)


# ----------------------------------------------------------------------- filter


def _as_list(value: Any, what: str) -> list | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise BadInput(f"`{what}` expects a condition or a list of conditions")


def _condition(spec: Any, lookup: Lookup, top_level: bool) -> _Node:
    if not isinstance(spec, dict):
        raise BadInput(f"Invalid condition: {spec!r}")
    if "key" in spec:
        return _Field(spec, lookup, top_level)
    if "is_empty" in spec:
        return _IsEmpty(json_path.parse((spec["is_empty"] or {}).get("key")))
    if "is_null" in spec:
        return _IsNull(json_path.parse((spec["is_null"] or {}).get("key")))
    if "has_id" in spec:
        ids = spec["has_id"]
        if not isinstance(ids, list):
            raise BadInput("has_id expects a list of point ids")
        return _HasId(ids)
    if "has_vector" in spec:
        return _HasVector(spec["has_vector"])
    if "nested" in spec:
        return _Nested(spec["nested"], lookup)
    if set(spec) <= _FILTER_KEYS:
        return _Filter(spec, lookup, top_level)
    raise BadInput(f"Invalid condition: {spec!r}")


_FILTER_KEYS = {"must", "should", "must_not", "min_should"}


class _Filter(_Node):
    rank = 2

    def __init__(self, spec: dict, lookup: Lookup, top_level: bool = False):
        if not isinstance(spec, dict):
            raise BadInput(f"Invalid filter: {spec!r}")

        def nodes(key: str) -> list[_Node] | None:
            items = _as_list(spec.get(key), key)
            return None if items is None else [_condition(c, lookup, top_level) for c in items]

        self.must = sorted(nodes("must") or [], key=lambda n: n.rank)
        self.should = nodes("should")
        self.must_not = sorted(nodes("must_not") or [], key=lambda n: n.rank)
        self.min_should: tuple[list[_Node], int] | None = None
        ms = spec.get("min_should")
        if ms is not None:
            if not isinstance(ms, dict) or not isinstance(ms.get("min_count"), int):
                raise BadInput("min_should needs `conditions` and `min_count`")
            items = _as_list(ms.get("conditions"), "min_should.conditions") or []
            self.min_should = ([_condition(c, lookup, top_level) for c in items], ms["min_count"])

    def mask(self, ctx, cand):
        m = cand
        for node in self.must:
            if not m.any():
                return m
            m = node.mask(ctx, m)
        if self.should:  # an empty `should` is dropped, as Qdrant's optimize_filter does
            acc = np.zeros(len(m), bool)
            rest = m
            for node in self.should:
                if not rest.any():
                    break
                hit = node.mask(ctx, rest)
                acc |= hit
                rest = rest & ~hit
            m = acc
        if self.min_should is not None:
            conditions, need = self.min_should
            if need > 0:
                counts = np.zeros(len(m), np.int32)
                for node in conditions:
                    counts += node.mask(ctx, m)
                m = m & (counts >= need)
        for node in self.must_not:
            if not m.any():
                return m
            m = m & ~node.mask(ctx, m)
        return m

    def check(self, payload):
        """The payload-level check Qdrant runs inside ``nested`` (``check_payload``), where,
        unlike the optimized top-level path, an empty ``should`` matches nothing."""
        if self.should is not None and not any(n.check(payload) for n in self.should):
            return False
        if self.min_should is not None:
            conditions, need = self.min_should
            if sum(1 for n in conditions if n.check(payload)) < need:
                return False
        return all(n.check(payload) for n in self.must) and not any(n.check(payload) for n in self.must_not)

    def estimate(self, ctx, live, total):
        """Qdrant's ``estimate_filter`` (lib/segment/src/index/query_estimator.rs)."""
        parts = []
        if self.must:
            parts.append(_combine_must([n.estimate(ctx, live, total) for n in self.must], total))
        if self.should:
            parts.append(_combine_should([n.estimate(ctx, live, total) for n in self.should], total))
        if self.min_should is not None:
            conditions, need = self.min_should
            parts.append(_combine_min_should([n.estimate(ctx, live, total) for n in conditions], need, total))
        if self.must_not:
            inverted = [_invert(n.estimate(ctx, live, total), total) for n in self.must_not]
            parts.append(_combine_must(inverted, total))
        return _combine_must(parts, total)


def _combine_must(estimations: list[Estimation], total: int) -> Estimation:
    low = total
    for e in estimations:
        low = max(0, low + e.min - total)
    high = min((e.max for e in estimations), default=total)
    prob = 1.0
    for e in estimations:
        prob *= e.exp / total if total else 0.0
    return Estimation(low, round(prob * total), high)


def _expected_should(values: list[int], total: int) -> int:
    if total == 0:
        return 0
    miss = 1.0
    for x in values:
        miss *= 1.0 - x / total
    return round((1.0 - miss) * total)


def _combine_should(estimations: list[Estimation], total: int) -> Estimation:
    return Estimation(
        max((e.min for e in estimations), default=0),
        _expected_should([e.exp for e in estimations], total),
        min(sum(e.max for e in estimations), total),
    )


def _combine_min_should(estimations: list[Estimation], need: int, total: int) -> Estimation:
    """Qdrant: the union of the intersections of every ``need``-subset; beyond a few
    combinations, the union of all (``approximate_min_should_estimations``)."""
    from itertools import combinations
    from math import comb

    if need > len(estimations):
        return _exact(0)
    if comb(len(estimations), need) > 1000:
        union = _combine_should(estimations, total)
        return Estimation(0, union.exp, union.max)
    groups = [_combine_must(list(g), total) for g in combinations(estimations, need)]
    return _combine_should(groups, total)


def _invert(e: Estimation, total: int) -> Estimation:
    return Estimation(max(0, total - e.max), max(0, total - e.exp), max(0, total - e.min))


# ---------------------------------------------------------------------- entry


def compile_filter(spec: dict, store: PayloadStore) -> _Filter:
    """Parse a REST Filter once; BadInput when it is malformed."""
    return _Filter(spec, store.index_for, top_level=True)


def _live(ctx: FilterContext) -> np.ndarray:
    size = int(ctx.size)
    live = np.asarray(ctx.live, bool)[:size]
    if len(live) < size:
        live = np.concatenate([live, np.zeros(size - len(live), bool)])
    return live


def evaluate(filter: dict | None, ctx: FilterContext) -> np.ndarray:
    """Bool mask (size,) of the live offsets that pass ``filter`` (None: every live one)."""
    live = _live(ctx).copy()
    if filter is None:
        return live
    return compile_filter(filter, ctx.payloads).mask(ctx, live)


def estimate(filter: dict | None, ctx: FilterContext) -> Estimation:
    """Cheap (min, exp, max) of how many live points pass ``filter``: exact for conditions
    an index answers, has_id and has_vector; "unknown" (0, n/2, n) for the rest,
    combined with Qdrant's query-estimator rules."""
    live = _live(ctx)
    total = int(live.sum())
    if filter is None:
        return _exact(total)
    return compile_filter(filter, ctx.payloads).estimate(ctx, live, total)


def estimate_cardinality(filter: dict | None, ctx: FilterContext) -> int:
    """The expected count of ``estimate`` (what the search planner compares)."""
    return estimate(filter, ctx).exp
