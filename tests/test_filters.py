"""Filter evaluation against three oracles, with and without payload indexes:

1. a naive per-point evaluator written here from Qdrant 1.15's server rules (chaotic
   payloads: every type in every field, nested arrays, nulls);
2. qdrant-client's local mode, ``QdrantClient(":memory:")``, on payloads where local mode
   and the server agree (local mode is looser about types, see ``shard.filters``);
3. Qdrant's own segment code through qdrant-edge, for the conditions whose semantics did
   not change after 1.15 (edge is a later Qdrant: it tokenizes unindexed text matches,
   sees ``[null]`` as null and lets ``values_count`` match a missing key).

Plus unit tests for each place where the server and local mode part ways. The context
is the smallest ``FilterContext``: a real ``PayloadStore`` plus ids and vector masks.
"""

from __future__ import annotations

import math
import re
import tempfile
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from shard import filters
from shard.payload import PayloadStore
from shard.types import BadInput

U1 = "550e8400-e29b-41d4-a716-446655440000"


class Ctx:
    """FilterContext over a real PayloadStore: offset i holds point id i."""

    def __init__(self, rows, indexes=(), dead=(), vectors=None, index_first=False):
        store = self.payloads = PayloadStore()
        indexes = list(indexes)
        for key, schema in indexes if index_first else ():
            store.create_index(key, schema)
        for i, row in enumerate(rows):
            store.set(i, row)
        for key, schema in () if index_first else indexes:
            store.create_index(key, schema)
        self.size, self.live, self.vectors = len(rows), np.ones(len(rows), bool), vectors or {}
        for o in dead:
            store.remove(o)
            self.live[o] = False

    def offsets_of(self, ids):
        return np.asarray([i for i in ids if isinstance(i, int) and i < self.size and self.live[i]], np.int64)

    def has_vector(self, name):
        return self.vectors.get(name, np.zeros(self.size, bool))


def run(flt, ctx):
    return np.flatnonzero(filters.evaluate(flt, ctx)).tolist()


# ============================================================ naive evaluator

_TOKEN = re.compile(r"\.?(?:\"([^\"]*)\"|([A-Za-z0-9_\-]+))|\[(\d*)\]")


def n_get(payload, key):
    """Raw values a key path reaches (independent of shard.json_path)."""
    steps = []
    for quoted, raw, idx in _TOKEN.findall(key):
        steps.append(("i", int(idx)) if idx else ("w",) if raw == "" and quoted == "" else ("k", quoted or raw))
    current = [payload]
    for step in steps:
        nxt = []
        for v in current:
            if step[0] == "k" and isinstance(v, dict) and step[1] in v:
                nxt.append(v[step[1]])
            elif step[0] == "i" and isinstance(v, list) and step[1] < len(v):
                nxt.append(v[step[1]])
            elif step[0] == "w" and isinstance(v, list):
                nxt.extend(v)
        current = nxt
    return current


def n_flat(values):
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


def n_i64(x):
    return type(x) is int and -(2**63) <= x < 2**63


def n_num(x):
    return float(x) if type(x) in (int, float) else None


def n_dt(x):
    try:
        dt = datetime.fromisoformat(x)
    except (TypeError, ValueError):
        return None
    return round((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp() * 1e6)


def n_uuid(x):
    try:
        return uuid.UUID(x).int if type(x) is str and len(x) in (32, 36, 38, 45) else None
    except ValueError:
        return None


def n_geo(x):
    if type(x) is dict and type(x.get("lat")) in (int, float) and type(x.get("lon")) in (int, float):
        return float(x["lon"]), float(x["lat"])
    return None


def n_haversine(lon1, lat1, lon2, lat2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 6371008.8 * 2 * math.asin(math.sqrt(a))


def n_winding_inside(x, y, ring):
    wn = 0
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        cross = (x2 - x1) * (y - y1) - (x - x1) * (y2 - y1)
        if y1 <= y < y2 and cross > 0:
            wn += 1
        elif y2 <= y < y1 and cross < 0:
            wn -= 1
    return wn != 0


def n_geo_ok(kind, spec, g):
    lon, lat = g
    if kind == "geo_radius":
        c = spec["center"]
        return n_haversine(c["lon"], c["lat"], lon, lat) < spec["radius"]
    if kind == "geo_bounding_box":
        tl, br = spec["top_left"], spec["bottom_right"]
        if tl["lon"] > br["lon"]:
            lon_ok = lon > tl["lon"] or lon < br["lon"]
        else:
            lon_ok = tl["lon"] < lon < br["lon"]
        return lon_ok and br["lat"] < lat < tl["lat"]
    ring = lambda r: [(p["lon"], p["lat"]) for p in r["points"]]  # noqa: E731
    return n_winding_inside(lon, lat, ring(spec["exterior"])) and not any(
        n_winding_inside(lon, lat, ring(h)) for h in spec.get("interiors") or []
    )


def n_tokens(text):
    return re.findall(r"[^\W_]+", text.lower())


def n_text_index(mode, arg, strings, phrases=False):
    doc = [t for s in strings for t in n_tokens(s)]
    q = n_tokens(arg)
    if not q:
        return False
    if mode == "phrase":  # within one string, and only with phrase_matching
        return phrases and any(n_tokens(s)[i : i + len(q)] == q for s in strings for i in range(len(n_tokens(s))))
    if mode == "text_any":
        return any(t in doc for t in q)
    return all(t in doc for t in q)


def n_match_ok(m, x):
    if "value" in m:
        return type(x) is type(m["value"]) and x == m["value"]
    for mode in ("text", "phrase"):
        if mode in m:
            return type(x) is str and m[mode] in x
    if "text_any" in m:
        return type(x) is str and any(w in x for w in m["text_any"].split())
    if "any" in m:
        return (type(x) is str or n_i64(x)) and x in m["any"]
    lst = m["except"]
    if x is None:
        return False
    if not lst or type(lst[0]) is str:
        return x not in lst if type(x) is str else True
    if type(x) in (int, float):
        return x not in lst if n_i64(x) else True
    return True


def n_range_ok(r, x):
    bounds = {k: v for k, v in r.items() if v is not None}
    is_dt = any(type(v) is str for v in bounds.values())
    conv = n_dt if is_dt else n_num
    n = conv(x)
    if n is None:
        return False
    ops = {"gt": n.__gt__, "gte": n.__ge__, "lt": n.__lt__, "lte": n.__le__}
    return all(ops[k](conv(v)) for k, v in bounds.items())


CLAUSES = ("match", "range", "geo_radius", "geo_bounding_box", "geo_polygon", "values_count", "is_empty", "is_null")


def n_index_semantics(kind, c, values):
    """Qdrant's answer from an index of ``kind``, or None when it falls back to the payload."""
    flat = n_flat(values)
    m, r = c.get("match") or {}, c.get("range")
    strs = [x for x in flat if type(x) is str]
    if kind == "keyword":
        if "value" in m and type(m["value"]) is str:
            return m["value"] in strs
        for op in ("any", "except"):
            if op in m and all(type(v) is str for v in m[op]):
                return any(s in m[op] for s in strs) if op == "any" else any(s not in m[op] for s in strs)
    if kind == "integer":
        ints = [x for x in flat if n_i64(x)]
        if "value" in m and n_i64(m["value"]):
            return m["value"] in ints
        for op in ("any", "except"):
            if op in m and m[op] and all(n_i64(v) for v in m[op]):
                return any(i in m[op] for i in ints) if op == "any" else any(i not in m[op] for i in ints)
        if r is not None and not any(type(v) is str for v in r.values()):
            return any(n_range_ok(r, i) for i in ints)
    if kind == "float" and r is not None and not any(type(v) is str for v in r.values()):
        return any(n_range_ok(r, x) for x in flat if type(x) in (int, float))
    if kind == "datetime" and r is not None and any(type(v) is str for v in r.values()):
        return any(n_range_ok(r, x) for x in flat)
    if kind == "bool" and "value" in m and type(m["value"]) is bool:
        return m["value"] in [x for x in flat if type(x) is bool]
    if kind == "uuid":
        uuids = {u for u in map(n_uuid, flat) if u is not None}
        if "value" in m and n_uuid(m["value"]) is not None:
            return n_uuid(m["value"]) in uuids
        for op in ("any", "except"):
            if op in m and all(n_uuid(v) is not None for v in m[op]):
                want = {n_uuid(v) for v in m[op]}
                return bool(uuids & want) if op == "any" else bool(uuids - want)
    if kind == "geo":
        for g_kind in ("geo_radius", "geo_bounding_box", "geo_polygon"):
            if g_kind in c:
                geos = [g for g in map(n_geo, flat) if g and -180 <= g[0] <= 180 and -90 <= g[1] <= 90]
                return any(n_geo_ok(g_kind, c[g_kind], g) for g in geos)
    if kind == "text":
        for mode in ("text", "phrase", "text_any"):
            if mode in m:
                return n_text_index(mode, m[mode], strs)
    return None


def n_field(c, payload, indexes, top):
    values = n_get(payload, c["key"])
    present = [k for k in CLAUSES if c.get(k) is not None]
    if top and c["key"] in indexes and len(present) == 1 and present[0] not in ("values_count", "is_empty", "is_null"):
        answer = n_index_semantics(indexes[c["key"]], c, values)
        if answer is not None:
            return answer
    if not values:
        if c.get("is_empty") is not None:
            return c["is_empty"]
        return c.get("is_null") is not None and not c["is_null"]
    if c.get("values_count") is not None:
        vc = c["values_count"]
        counts = [0 if v is None else len(v) if type(v) is list else 1 for v in values]
        ops = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
        return any(all(ops[k](n, b) for k, b in vc.items() if b is not None) for n in counts)
    for flag, in_list in (("is_empty", lambda v: not v), ("is_null", lambda v: None in v)):
        if c.get(flag) is not None:
            f = c[flag]
            return any(f if v is None else in_list(v) == f if type(v) is list else not f for v in values)

    def ok(x):
        if "match" in c and n_match_ok(c["match"], x) or "range" in c and n_range_ok(c["range"], x):
            return True
        geo_kinds = ("geo_radius", "geo_bounding_box", "geo_polygon")
        return any(k in c and n_geo(x) and n_geo_ok(k, c[k], n_geo(x)) for k in geo_kinds)

    return any(ok(x) for x in n_flat(values))


def as_list(x):
    return None if x is None else [x] if isinstance(x, dict) else x


def n_filter(f, payload, pid, vectors, indexes, top=True):
    should = as_list(f.get("should"))
    if should == [] and top:
        should = None  # the server's optimized path drops an empty `should`
    if should is not None and not any(n_cond(c, payload, pid, vectors, indexes, top) for c in should):
        return False
    ms = f.get("min_should")
    if ms is not None and sum(n_cond(c, payload, pid, vectors, indexes, top) for c in ms["conditions"]) < ms["min_count"]:
        return False
    if not all(n_cond(c, payload, pid, vectors, indexes, top) for c in as_list(f.get("must")) or []):
        return False
    return not any(n_cond(c, payload, pid, vectors, indexes, top) for c in as_list(f.get("must_not")) or [])


def n_cond(c, payload, pid, vectors, indexes, top):
    if "key" in c:
        return n_field(c, payload, indexes, top)
    if "is_empty" in c:
        return all(v is None or v == [] and type(v) is list for v in n_get(payload, c["is_empty"]["key"]))
    if "is_null" in c:
        return any(v is None for v in n_get(payload, c["is_null"]["key"]))
    if "has_id" in c:
        return top and pid in c["has_id"]
    if "has_vector" in c:
        return top and bool(vectors.get(c["has_vector"], False))
    if "nested" in c:
        key = c["nested"]["key"]
        key = key if key.endswith("[]") else key + "[]"
        inner = c["nested"]["filter"]
        return any(type(v) is dict and n_filter(inner, v, None, {}, {}, False) for v in n_get(payload, key))
    return n_filter(c, payload, pid, vectors, indexes, top)


def naive(flt, rows, dead=(), vectors=None, indexes=None):
    vectors = vectors or {}
    out = []
    for i, row in enumerate(rows):
        vec = {name: bool(mask[i]) for name, mask in vectors.items()}
        if i not in dead and (flt is None or n_filter(flt, row, i, vec, indexes or {})):
            out.append(i)
    return out


# ================================================================= strategies

DTS = ["2020-01-01T00:00:00Z", "2021-06-01", "2020-03-01T12:30:00+02:00", "2020-03-01 12:30:00", "2019-12-31T23:59:59.500Z"]
SCALARS = ["a", "b", "", "A b", "b c", -1, 0, 1, 2, 5, 1.0, 1.5, -0.5, True, False, None, U1, U1.upper(), "2020-13-01"] + DTS
coord = st.floats(-60, 60, allow_nan=False).map(lambda v: round(v, 6))
valid_geo = st.builds(lambda lat, lon: {"lat": lat, "lon": lon}, coord, coord)
geo_points = valid_geo | st.just({"lat": 100.0, "lon": 1.5})
leaf = st.sampled_from(SCALARS) | geo_points
chaos_value = st.recursive(
    leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["x", "y"]), kids, max_size=2), max_leaves=6
)
objects = st.lists(st.dictionaries(st.sampled_from(["x", "y"]), chaos_value, max_size=2), max_size=3)
FIELDS = ["k", "i", "f", "b", "g", "d", "u", "t", "o"]
chaos_payloads = st.dictionaries(st.sampled_from(FIELDS), chaos_value | objects, max_size=5)
KEYS = FIELDS + ["o.x", "o[].x", "o[0].x", "k[]", "o[].y"]


def subset(pool, keys=("gt", "gte", "lt", "lte"), min_size=0):
    return st.dictionaries(st.sampled_from(keys), st.sampled_from(pool), min_size=min_size, max_size=2)


str_lists = st.lists(st.sampled_from(["a", "b", "c", U1, U1.upper()]), max_size=3)
int_lists = st.lists(st.sampled_from([-1, 0, 1, 2, 5]), min_size=1, max_size=3)
match_clauses = st.one_of(
    st.builds(lambda v: {"value": v}, st.sampled_from(["a", "b", "", 1, 0, 5, -1, True, False, U1])),
    st.builds(lambda v: {"any": v}, str_lists | int_lists),
    st.builds(lambda v: {"except": v}, str_lists | int_lists),
    st.builds(lambda m, v: {m: v}, st.sampled_from(["text", "phrase", "text_any"]), st.sampled_from(["a", "b", "", "A", "b c", "A b"])),
)
ranges = subset([-1, 0, 0.5, 1, 1.5, 2, 5], min_size=0) | subset(DTS[:3], min_size=1)


def _ring(x, y, s):
    corners = [(x, y), (x + s, y), (x + s, y + s), (x, y + s), (x, y)]
    return {"points": [{"lon": a, "lat": b} for a, b in corners]}


def _square(x, y, size, hole):
    out = {"exterior": _ring(x, y, size)}
    if hole:
        out["interiors"] = [_ring(x + size / 4, y + size / 4, size / 2)]
    return out


qcoord = coord.map(lambda v: v + 5e-7)  # query coordinates never equal a stored one: no edge cases
point = st.builds(lambda lat, lon: {"lat": lat, "lon": lon}, qcoord, qcoord)
geo_clauses = st.one_of(
    st.builds(lambda c, r: ("geo_radius", {"center": c, "radius": r}), point, st.sampled_from([1e5, 1e6, 3e6])),
    st.builds(
        lambda a, b: ("geo_bounding_box", {"top_left": {"lon": a["lon"], "lat": max(a["lat"], b["lat"])},
                                            "bottom_right": {"lon": b["lon"], "lat": min(a["lat"], b["lat"])}}),
        point, point,
    ),
    st.builds(lambda c, s, h: ("geo_polygon", _square(c["lon"], c["lat"], s, h)), point, st.sampled_from([10.0, 40.0]), st.booleans()),
)


def field_conditions(keys):
    key = st.sampled_from(keys)
    return st.one_of(
        st.builds(lambda k, m: {"key": k, "match": m}, key, match_clauses),
        st.builds(lambda k, r: {"key": k, "range": r}, key, ranges),
        st.builds(lambda k, g: {"key": k, g[0]: g[1]}, key, geo_clauses),
        st.builds(lambda k, v: {"key": k, "values_count": v}, key, subset([0, 1, 2, 3], min_size=1)),
        st.builds(lambda k, f, v: {"key": k, f: v}, key, st.sampled_from(["is_empty", "is_null"]), st.booleans()),
        st.builds(lambda k: {"is_empty": {"key": k}}, key),
        st.builds(lambda k: {"is_null": {"key": k}}, key),
    )


def filters_of(leaves, empty_should=True):
    """Filters nesting ``leaves``: each clause a single condition or a list of them."""

    def build(conds):
        min_should = st.builds(lambda c, k: {"conditions": c, "min_count": k}, st.lists(conds, max_size=3), st.integers(0, 3))
        clauses = {
            "must": conds | st.lists(conds, max_size=3),
            "should": conds | st.lists(conds, min_size=0 if empty_should else 1, max_size=3),
            "must_not": conds | st.lists(conds, max_size=2),
            "min_should": min_should,
        }
        return st.fixed_dictionaries({}, optional=clauses)

    def as_filter(c):
        return c if set(c) <= {"must", "should", "must_not", "min_should"} else {"must": [c]}

    return st.recursive(leaves, build, max_leaves=6).map(as_filter)


nested = st.builds(
    lambda key, f: {"nested": {"key": key, "filter": f}},
    st.sampled_from(["o", "o[]"]),
    filters_of(field_conditions(["x", "y", "x[]"]) | st.builds(lambda ids: {"has_id": ids}, st.lists(st.integers(0, 5), max_size=3))),
)
has_ids = st.builds(lambda ids: {"has_id": ids}, st.lists(st.integers(0, 12), max_size=4))
has_vectors = st.builds(lambda n: {"has_vector": n}, st.sampled_from(["v", "w", "missing"]))
chaos_leaves = field_conditions(KEYS) | nested | has_ids | has_vectors
chaos_filters = filters_of(chaos_leaves)

ALL_INDEXES = {"k": "keyword", "i": "integer", "f": "float", "b": "bool", "g": "geo", "d": "datetime", "u": "uuid", "t": "text"}
mismatched = {"k": "integer", "i": "keyword", "t": "keyword", "d": "text"}
any_kind = st.sampled_from(sorted(set(ALL_INDEXES.values())))
index_sets = st.sampled_from([{}, ALL_INDEXES, mismatched]) | st.dictionaries(st.sampled_from(list(ALL_INDEXES)), any_kind, max_size=4)


# ===================================================== property: naive oracle


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(chaos_payloads, min_size=1, max_size=12),
    flts=st.lists(chaos_filters, min_size=1, max_size=4),
    indexes=index_sets,
    dead=st.sets(st.integers(0, 11), max_size=3),
    index_first=st.booleans(),
    data=st.data(),
)
def test_evaluate_matches_naive_evaluator(rows, flts, indexes, dead, index_first, data):
    dead = {d for d in dead if d < len(rows)}
    masks = st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))
    vectors = {n: np.array(data.draw(masks), bool) for n in ("v", "w")}
    ctx = Ctx(rows, indexes.items(), dead, vectors, index_first)
    for flt in flts:
        expected = naive(flt, rows, dead, vectors, indexes)
        assert run(flt, ctx) == expected, flt
        est = filters.estimate(flt, ctx)
        assert 0 <= est.min <= est.max <= len(rows) - len(dead)
    assert run(None, ctx) == [i for i in range(len(rows)) if i not in dead]


# ================================================ property: qdrant local mode

safe_payloads = st.fixed_dictionaries(
    {},
    optional={
        "k": st.sampled_from(["a", "b", "c"]) | st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        "i": st.sampled_from([-1, 0, 1, 2, 5]) | st.lists(st.sampled_from([-1, 0, 1, 2, 5]), max_size=3),
        "f": st.sampled_from([0.5, 1.5, 2.5, -0.5, 1, 3]) | st.lists(st.sampled_from([0.5, 1.5, 2]), max_size=3),
        "b": st.booleans(),
        "n": st.sampled_from([None, [], "a", [None], [1, None], 3, ["a", "b"]]),
        "o": st.lists(st.fixed_dictionaries({"x": st.integers(0, 3), "y": st.sampled_from(["a", "b"])}), min_size=1, max_size=3),
        "g": valid_geo,
        "d": st.sampled_from(DTS[:4]),
        "t": st.sampled_from(["hello world", "Hello", "world peace", "a b c"]),
    },
)
safe_leaves = st.one_of(
    st.builds(lambda k, v: {"key": k, "match": {"value": v}}, st.just("k"), st.sampled_from(["a", "b", "z"])),
    st.builds(lambda k, v: {"key": k, "match": {"value": v}}, st.sampled_from(["i", "o[].x"]), st.sampled_from([0, 1, 5])),
    st.builds(lambda v: {"key": "b", "match": {"value": v}}, st.booleans()),
    st.builds(lambda k, v: {"key": k, "match": {"any": v}}, st.sampled_from(["k", "i", "n"]), st.lists(st.sampled_from(["a", "b"]), max_size=2) | int_lists),
    # local mode's `except` matches null (`None not in [...]`); Qdrant's never does: no nulls here
    st.builds(lambda k, v: {"key": k, "match": {"except": v}}, st.sampled_from(["k", "i"]), st.lists(st.sampled_from(["a", "b"]), max_size=2) | int_lists),
    st.builds(lambda v: {"key": "t", "match": {"text": v}}, st.sampled_from(["hello", "world", "Hello w", "o"])),
    st.builds(lambda k, r: {"key": k, "range": r}, st.sampled_from(["i", "f", "k", "o[].x"]), subset([-1, 0, 0.5, 1, 1.5, 2], min_size=1)),
    st.builds(lambda k, r: {"key": k, "range": r}, st.sampled_from(["d", "i"]), subset(DTS[:3], min_size=1)),
    st.builds(lambda k, v: {"key": k, "values_count": v}, st.sampled_from(["k", "i", "n", "o"]), subset([0, 1, 2, 3], min_size=1, keys=("gt", "gte", "lt", "lte"))),
    st.builds(lambda k, c: {c: {"key": k}}, st.sampled_from(["k", "n", "o", "zz", "o[].x"]), st.sampled_from(["is_empty", "is_null"])),
    st.builds(lambda g: {"key": "g", g[0]: g[1]}, geo_clauses),
    st.builds(lambda ids: {"has_id": ids}, st.lists(st.integers(0, 12), max_size=4)),
    st.builds(
        lambda f: {"nested": {"key": "o", "filter": f}},
        filters_of(st.builds(lambda k, v: {"key": k, "match": {"value": v}}, st.sampled_from(["x", "y"]), st.sampled_from([0, 1, "a"]))
                   | st.builds(lambda r: {"key": "x", "range": r}, subset([0, 1, 2], min_size=1)), empty_should=False),
    ),
)
SAFE_INDEXES = {"k": "keyword", "i": "integer", "f": "float", "b": "bool", "g": "geo", "d": "datetime"}


@pytest.fixture(scope="module")
def local():
    client = QdrantClient(":memory:")
    yield client
    client.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    rows=st.lists(safe_payloads, min_size=1, max_size=12),
    # local mode's empty `should` matches nothing; the server ignores it
    flts=st.lists(filters_of(safe_leaves, empty_should=False), min_size=1, max_size=5),
    indexed=st.sets(st.sampled_from(sorted(SAFE_INDEXES))),
)
def test_evaluate_matches_local_mode(local, rows, flts, indexed):
    if local.collection_exists("f"):
        local.delete_collection("f")
    local.create_collection("f", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    local.upsert("f", [models.PointStruct(id=i, vector=[0.1, 0.2], payload=row) for i, row in enumerate(rows)])
    ctx = Ctx(rows, [(k, SAFE_INDEXES[k]) for k in indexed])
    for flt in flts:
        points, _ = local.scroll("f", scroll_filter=models.Filter.model_validate(flt), limit=100, with_payload=False)
        assert run(flt, ctx) == sorted(p.id for p in points), flt


# ================================================== property: qdrant segment code

try:  # Qdrant's segment code; installed with the bench extras
    import qdrant_edge as qe
except ImportError:  # pragma: no cover
    qe = None
EDGE_INDEXES = {"k": "Keyword", "i": "Integer", "f": "Float", "g": "Geo", "d": "Datetime", "u": "Uuid", "t": "Text"}


MATCHES = {"value": "MatchValue", "any": "MatchAny", "except": "MatchExcept", "text": "MatchText", "phrase": "MatchPhrase"}


def to_edge(f):
    """A REST filter as qdrant-edge objects."""

    def pt(p):
        return qe.GeoPoint(lon=p["lon"], lat=p["lat"])

    def field(c):
        kw = {k: c[k] for k in ("is_empty", "is_null") if k in c}
        if "match" in c:
            ((op, v),) = c["match"].items()
            kw["match"] = getattr(qe, MATCHES.get(op, "MatchTextAny"))(v)
        if "range" in c:
            dt = any(isinstance(v, str) for v in c["range"].values())
            kw["range"] = (qe.RangeDateTime if dt else qe.RangeFloat)(**c["range"])
        if "geo_radius" in c:
            kw["geo_radius"] = qe.GeoRadius(pt(c["geo_radius"]["center"]), c["geo_radius"]["radius"])
        if "geo_bounding_box" in c:
            box = c["geo_bounding_box"]
            kw["geo_bounding_box"] = qe.GeoBoundingBox(pt(box["top_left"]), pt(box["bottom_right"]))
        if "geo_polygon" in c:
            ext, holes = c["geo_polygon"]["exterior"], c["geo_polygon"].get("interiors") or []
            kw["geo_polygon"] = qe.GeoPolygon([pt(x) for x in ext["points"]], [[pt(x) for x in h["points"]] for h in holes] or None)
        if "values_count" in c:
            kw["values_count"] = qe.ValuesCount(**c["values_count"])
        return qe.FieldCondition(c["key"], **kw)

    def cond(c):
        if "key" in c:
            return field(c)
        if "is_empty" in c:
            return qe.IsEmptyCondition(c["is_empty"]["key"])
        if "has_id" in c:
            return qe.HasIdCondition(set(c["has_id"]))
        if "nested" in c:
            return qe.NestedCondition(c["nested"]["key"], to_edge(c["nested"]["filter"]))
        return to_edge(c)

    kw = {k: [cond(c) for c in as_list(f[k])] for k in ("must", "should", "must_not") if k in f}
    if "min_should" in f:
        kw["min_should"] = qe.MinShould([cond(c) for c in f["min_should"]["conditions"]], f["min_should"]["min_count"])
    return qe.Filter(**kw)


def edge_safe(c, indexed, nested=False):
    """Conditions whose meaning is the same in Qdrant 1.15 and in qdrant-edge's Qdrant."""
    if "has_vector" in c or ("is_null" in c and "key" not in c):
        return False  # edge: no named vectors here; later Qdrant sees [null] as null
    if "nested" in c:
        return filter_ok(c["nested"]["filter"], lambda x: edge_safe(x, indexed, True))
    if "has_id" in c or "is_empty" in c:
        return True
    if "key" not in c:
        return filter_ok(c, lambda x: edge_safe(x, indexed, nested))
    m, key, on_index = c.get("match") or {}, c["key"], indexed and not nested
    if _is_text(c) and not (on_index and key == "t"):
        return False  # later Qdrant tokenizes unindexed text matches
    if type(m.get("value")) is bool:
        return False  # qdrant-edge's binding turns True into 1
    vc = c.get("values_count")
    if vc is not None and vc.get("gt") is None and (vc.get("gte") or 0) < 1:
        return False  # later Qdrant lets a missing key count as 0 values
    strings = any(isinstance(v, str) for v in [m.get("value"), *m.get("any", []), *m.get("except", [])])
    dt_range = any(isinstance(v, str) for v in (c.get("range") or {}).values())
    if on_index and key in ("i", "f") and (strings or (c.get("range") is not None and dt_range)):
        return False  # later Qdrant answers these type mismatches from the index
    if on_index and key == "d" and (strings or (c.get("range") is not None and not dt_range)):
        return False
    return True


def _is_text(c):
    return any(k in (c.get("match") or {}) for k in ("text", "phrase", "text_any"))


def filter_ok(f, ok):
    ms = f.get("min_should") or {"conditions": [], "min_count": 0}
    if ms["min_count"] > len(ms["conditions"]):
        return False  # Qdrant's answer to an unsatisfiable min_should depends on its query plan
    conds = [c for k in ("must", "should", "must_not") for c in as_list(f.get(k)) or []]
    return all(ok(c) for c in conds + ms["conditions"])


no_integral_floats = st.sampled_from([s for s in SCALARS if s != 1.0]) | geo_points  # later Qdrant indexes 1.0 as 1
edge_values = st.recursive(no_integral_floats, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["x", "y"]), kids, max_size=2), max_leaves=6)
edge_payloads = st.dictionaries(st.sampled_from(FIELDS), edge_values, max_size=5)


@pytest.fixture(scope="module")
def edge_shards():
    """Two qdrant-edge shards, reused by every example: without and with indexes."""
    with tempfile.TemporaryDirectory() as root:
        shards = {}
        for indexed in (False, True):
            config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=2, distance=qe.Distance.Dot))
            shards[indexed] = qe.EdgeShard.create(f"{root}/{indexed}", config)
            for key, kind in EDGE_INDEXES.items() if indexed else ():
                shards[indexed].update(qe.UpdateOperation.create_field_index(key, getattr(qe.PayloadSchemaType, kind)))
        yield shards
        for shard in shards.values():
            shard.close()


@pytest.mark.skipif(qe is None, reason="qdrant-edge-py is not installed")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(edge_payloads, min_size=1, max_size=12), flts=st.lists(chaos_filters, min_size=1, max_size=6), indexed=st.booleans())
def test_evaluate_matches_qdrant_segment_code(edge_shards, rows, flts, indexed):
    shard = edge_shards[indexed]
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(i, [0.1, 0.2], row) for i, row in enumerate(rows)]))
    try:
        ctx = Ctx(rows, [(k, v.lower()) for k, v in EDGE_INDEXES.items()] if indexed else [])
        for flt in flts:
            if not filter_ok(flt, lambda c: edge_safe(c, indexed)):
                continue
            try:
                edge_filter = to_edge(flt)
            except (TypeError, ValueError):
                continue  # a condition the binding cannot express (e.g. an empty `any` list)
            records, _ = shard.scroll(qe.ScrollRequest(limit=100, filter=edge_filter, with_payload=False))
            assert run(flt, ctx) == sorted(r.id for r in records), flt
    finally:
        shard.update(qe.UpdateOperation.delete_points(list(range(len(rows)))))


# ================================================= where server and local differ


def both(rows, flt, indexes=()):
    """Matches without and with the given indexes."""
    return run(flt, Ctx(rows)), run(flt, Ctx(rows, indexes))


def must(*conds):
    return {"must": list(conds)}


def test_match_is_typed():
    rows = [{"a": 1}, {"a": True}, {"a": 1.0}, {"a": "1"}, {"a": [2, 1]}]
    assert both(rows, must({"key": "a", "match": {"value": 1}}), [("a", "integer")]) == ([0, 4], [0, 4])
    assert both(rows, must({"key": "a", "match": {"value": True}}), [("a", "bool")]) == ([1], [1])
    assert both(rows, must({"key": "a", "match": {"value": "1"}}), [("a", "keyword")]) == ([3], [3])
    assert both(rows, must({"key": "a", "match": {"any": [1, 2]}}), [("a", "integer")]) == ([0, 4], [0, 4])
    assert run(must({"key": "a", "range": {"gte": 1}}), Ctx(rows)) == [0, 2, 4]  # bools are not numbers


def test_except_semantics_and_its_index_form():
    rows = [{"a": "x"}, {"a": None}, {}, {"a": []}, {"a": 5}, {"a": {"b": 1}}, {"a": [["x"]]}, {"a": ["x", "y"]}, {"a": 1.5}, {"a": [None]}]
    plain, indexed = both(rows, must({"key": "a", "match": {"except": ["x"]}}), [("a", "keyword")])
    assert plain == [4, 5, 6, 7, 8]  # null, missing and [] never match; other types always do
    assert indexed == [7]  # a keyword index only knows strings (Qdrant's map index)
    plain, indexed = both(rows, must({"key": "a", "match": {"except": [5]}}), [("a", "integer")])
    assert plain == [0, 5, 6, 7, 8] and indexed == []


def test_nested_tests_each_array_element_against_the_whole_filter():
    rows = [{"o": {"x": 1, "y": "b"}}, {"o": [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]}]
    rows += [{"o": [{"x": 1, "y": "b"}]}, {"o": [[{"x": 1, "y": "b"}]]}]
    inner = must({"key": "x", "match": {"value": 1}}, {"key": "y", "match": {"value": "b"}})
    assert run(must({"nested": {"key": "o", "filter": inner}}), Ctx(rows)) == [2]
    assert run(must({"nested": {"key": "o[]", "filter": inner}}), Ctx(rows)) == [2]
    assert run(inner | {"must": [{"key": "o[].x", "match": {"value": 1}}, {"key": "o[].y", "match": {"value": "b"}}]}, Ctx(rows)) == [1, 2]
    has_id = must({"nested": {"key": "o", "filter": must({"has_id": [0, 1, 2, 3]})}})
    assert run(has_id, Ctx(rows)) == []


def test_values_count_counts_each_value():
    rows = [{}, {"a": None}, {"a": 7}, {"a": [1, 2]}, {"a": []}, {"o": [{"b": [1, 2, 3]}, {"b": 1}]}]
    ctx = Ctx(rows)
    assert run(must({"key": "a", "values_count": {"lt": 1}}), ctx) == [1, 4]  # a missing key never matches
    assert run(must({"key": "a", "values_count": {"gte": 2}}), ctx) == [3]
    assert run(must({"key": "o[].b", "values_count": {"gt": 2}}), ctx) == [5]
    assert run(must({"key": "o[].b", "values_count": {"gt": 1, "lt": 3}}), ctx) == []  # one value must satisfy both


def test_is_empty_and_is_null():
    rows = [{}, {"a": None}, {"a": []}, {"a": [None]}, {"a": 0}, {"a": ""}, {"o": [{"b": None}, {"b": 1}]}]
    ctx = Ctx(rows)
    assert run(must({"is_empty": {"key": "a"}}), ctx) == [0, 1, 2, 6]
    assert run(must({"is_null": {"key": "a"}}), ctx) == [1]  # [null] is an array (Qdrant 1.15)
    assert run(must({"is_null": {"key": "o[].b"}}), ctx) == [6]
    assert run(must({"is_empty": {"key": "o[].b"}}), ctx) == [0, 1, 2, 3, 4, 5]
    assert run(must({"key": "a", "is_null": True}), ctx) == [1, 3]  # the field form looks into arrays
    assert run(must({"key": "a", "is_empty": False}), ctx) == [3, 4, 5]


def test_geo_conditions():
    rows = [{"g": {"lat": 10.0, "lon": 10.0}}, {"g": {"lat": 0.0, "lon": 179.5}}]
    rows += [{"g": [{"lat": 5.0, "lon": 5.0}, {"lat": 50.0, "lon": 50.0}]}, {"g": {"lat": 10, "lon": 0}}]
    box = {"top_left": {"lon": 0.0, "lat": 10.0}, "bottom_right": {"lon": 10.0, "lat": 0.0}}
    assert both(rows, must({"key": "g", "geo_bounding_box": box}), [("g", "geo")]) == ([2], [2])  # edges are outside
    wrap = {"top_left": {"lon": 170.0, "lat": 5.0}, "bottom_right": {"lon": -170.0, "lat": -5.0}}
    assert both(rows, must({"key": "g", "geo_bounding_box": wrap}), [("g", "geo")]) == ([1], [1])
    radius = {"center": {"lon": 10.0, "lat": 10.1}, "radius": 11_200.0}  # 0.1° of latitude is ~11.12 km
    assert both(rows, must({"key": "g", "geo_radius": radius}), [("g", "geo")]) == ([0], [0])
    poly = {"exterior": _ring(0.0, 0.0, 20.0), "interiors": [_ring(4.0, 4.0, 2.0)]}
    # (10, 10) is inside, (5, 5) in the hole, (0, 10) on the exterior edge: outside
    assert both(rows, must({"key": "g", "geo_polygon": poly}), [("g", "geo")]) == ([0], [0])


@pytest.mark.parametrize(
    "text, ok",
    [
        ("2020-01-01T00:00:00Z", True), ("2020-01-01T00:00:00.123456+02:00", True), ("2020-01-01 00:00:00", True),
        ("2020-01-01T00:00:00+0200", True), ("2020-01-01T00:00:00+02", True), ("2020-01-01", True),
        ("2020-01-01 10:30", True), ("2020-01-01T10:30", False), ("2020-13-01", False), ("01/01/2020", False), ("", False),
    ],
)
def test_datetime_range_formats(text, ok):
    rows = [{"t": text}]
    flt = must({"key": "t", "range": {"gte": "1999-01-01T00:00:00Z", "lt": "2021-01-01"}})
    assert both(rows, flt, [("t", "datetime")]) == (([0], [0]) if ok else ([], []))


def test_datetime_offsets_are_compared_in_utc():
    rows = [{"t": "2020-01-01T01:00:00+02:00"}, {"t": "2020-01-01T00:00:00Z"}]
    flt = must({"key": "t", "range": {"lt": "2020-01-01T00:00:00+00:00"}})
    assert both(rows, flt, [("t", "datetime")]) == ([0], [0])


def test_empty_should_is_ignored_but_not_inside_nested():
    rows = [{"o": [{"x": 1}]}, {}]
    assert run({"should": []}, Ctx(rows)) == [0, 1]
    assert run(must({"should": [], "must": []}), Ctx(rows)) == [0, 1]
    assert run(must({"nested": {"key": "o", "filter": {"should": []}}}), Ctx(rows)) == []
    assert run({"min_should": {"conditions": [], "min_count": 1}}, Ctx(rows)) == []
    assert run({"min_should": {"conditions": [], "min_count": 0}}, Ctx(rows)) == [0, 1]


def test_min_should_has_id_has_vector_and_dead_points():
    rows = [{"a": 1}, {"a": 2, "b": 1}, {"b": 1}, {"a": 1, "b": 1}]
    vectors = {"img": np.array([True, False, True, True])}
    ctx = Ctx(rows, dead=[3], vectors=vectors)
    two = {"min_should": {"conditions": [{"key": "a", "match": {"value": 1}}, {"key": "b", "match": {"value": 1}}, {"has_id": [2]}], "min_count": 2}}
    assert run(two, ctx) == [2]
    assert run(must({"has_vector": "img"}), ctx) == [0, 2]
    assert run(must({"has_vector": "other"}), ctx) == []
    assert run({"must_not": {"has_id": [0, U1]}}, ctx) == [1, 2]
    assert run(None, ctx) == [0, 1, 2]


@pytest.mark.parametrize(
    "flt",
    [
        must({"key": "a"}), must({"key": "a", "match": {"any": ["a", 1]}}), must({"key": "a", "match": {"value": 1.5}}),
        must({"key": "a", "match": {"nope": 1}}), must({"key": "a", "range": {"gte": "yesterday"}}),
        must({"key": "a", "range": {"gte": "2020-01-01", "lt": 5}}), must({"key": "a..b", "match": {"value": 1}}),
        must({"has_id": ["not-an-id"]}), must({"what": 1}), must({"key": "a", "values_count": {"gt": -1}}),
        must({"key": "g", "geo_polygon": {"exterior": {"points": [{"lon": 0, "lat": 0}]}}}), {"must": 5},
    ],
)
def test_malformed_filters_are_bad_input(flt):
    with pytest.raises(BadInput):
        filters.evaluate(flt, Ctx([{"a": 1}]))


def test_estimates_follow_qdrant_query_estimator():
    rows = [{"k": "a" if i < 30 else "b", "n": i} for i in range(100)]
    ctx = Ctx(rows, [("k", "keyword")], dead=[99])
    est = filters.estimate
    assert est(None, ctx) == filters.Estimation(99, 99, 99)
    assert est(must({"key": "k", "match": {"value": "a"}}), ctx) == filters.Estimation(30, 30, 30)
    assert est(must({"key": "n", "match": {"value": 3}}), ctx) == filters.Estimation(0, 49, 99)  # unindexed: unknown
    both_est = est(must({"key": "k", "match": {"value": "a"}}, {"key": "n", "match": {"value": 3}}), ctx)
    assert both_est == filters.Estimation(0, round(30 * 49 / 99), 30)
    assert est({"must_not": [{"key": "k", "match": {"value": "a"}}]}, ctx) == filters.Estimation(69, 69, 69)
    assert est({"should": [{"has_id": [1, 2, 500]}, {"key": "k", "match": {"value": "a"}}]}, ctx).max == 32
    assert filters.estimate_cardinality(must({"key": "k", "match": {"value": "b"}}), ctx) == 69
