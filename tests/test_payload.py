"""Key paths, payload writes, with_payload projection, payload indexes' schema, facets,
order_by values and snapshots of the payload store.

Where qdrant-client's local mode implements the same behaviour as Qdrant's server, the
tests compare with it; where they part ways (null deletes a key in set_payload, key paths
in delete_payload) the expected values are what Qdrant's own segment code produces
(checked with qdrant-edge, which runs it) and are written out literally.
"""

from __future__ import annotations

import copy

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from shard import filters, json_path
from shard.json_path import WILDCARD, JsonPath
from shard.payload import PayloadStore, facet, order_values, select_payload
from shard.types import BadInput, OrderBy, PayloadSelector

# ----------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "text, first, rest",
    [
        ("a", "a", ()),
        ("a.b", "a", ("b",)),
        ("a[]", "a", (WILDCARD,)),
        ("a[].b", "a", (WILDCARD, "b")),
        ("a[0][12].b-c_d", "a", (0, 12, "b-c_d")),
        ('a."b.c"', "a", ("b.c",)),
        ('"x y".z', "x y", ("z",)),
        ('foo[1][50].bar-baz[]."qux[.]quux"', "foo", (1, 50, "bar-baz", WILDCARD, "qux[.]quux")),
        ("Müesli", "Müesli", ()),
        ('""', "", ()),
    ],
)
def test_parse_paths(text, first, rest):
    path = json_path.parse(text)
    assert path == JsonPath(first, rest)
    assert json_path.parse(str(path)) == path


@pytest.mark.parametrize(
    "bad", ["", ".a", "a.", "a..b", "a[", "a[x]", "a[-1]", "a b", "[0]", 'a."b', "a[0]b", 'a."b\\"c"']
)
def test_parse_rejects_bad_paths(bad):
    with pytest.raises(BadInput, match="Invalid json path"):
        json_path.parse(bad)


def test_display_quotes_only_keys_that_need_it():
    assert str(json_path.parse('"a".b')) == "a.b"
    assert str(json_path.parse('a."b c"[0][]')) == 'a."b c"[0][]'
    assert json_path.canonical('"a"."b"') == "a.b"


NESTED = {
    "a": {"b": [{"c": 1}, {"c": 2}, {"d": {"e": 3}}]},
    "f": 3,
    "g": ["g0", "g1", "g2"],
    "arr": [{"a": [1, 2, 3]}, {"a": 4}, {"b": 5}],
    "n": None,
    "e": [],
}


@pytest.mark.parametrize(
    "path, raw, flat",
    [
        ("a.b[].c", [1, 2], [1, 2]),
        ("a.b[1].c", [2], [2]),
        ("a.b[3]", [], []),
        ("g[2]", ["g2"], ["g2"]),
        ("g", [["g0", "g1", "g2"]], ["g0", "g1", "g2"]),
        ("arr[].a", [[1, 2, 3], 4], [1, 2, 3, 4]),
        ("arr[].a[]", [1, 2, 3], [1, 2, 3]),
        ("n", [None], [None]),
        ("n[]", [], []),
        ("e", [[]], []),
        ("missing", [], []),
        ("f.x", [], []),
    ],
)
def test_value_get_and_values_at(path, raw, flat):
    # Expectations from Qdrant's json_path tests (lib/segment/src/json_path/mod.rs).
    assert json_path.value_get(NESTED, path) == raw
    assert json_path.values_at(NESTED, path) == flat


BASE = {"a": {"b": [{"c": 1}, {"c": 2}, {"d": {"e": 3}}], "x": 1}, "f": 3, "g": ["g0", "g1"], "n": None, "s": "str"}

# (key, value) -> the payload Qdrant's segment code leaves (recorded with qdrant-edge).
SET_CASES = [
    (None, {"c": 5, "f": None}, {"a": BASE["a"], "c": 5, "g": ["g0", "g1"], "n": None, "s": "str"}),
    ("a", {"b": 5}, {**BASE, "a": {"b": 5, "x": 1}}),
    ("a.b[1]", {"c": 9}, {**BASE, "a": {"b": [{"c": 1}, {"c": 9}, {"d": {"e": 3}}], "x": 1}}),
    ("a.b[7]", {"c": 9}, BASE),
    ("a.b[]", {"z": 1}, {**BASE, "a": {"b": [{"c": 1, "z": 1}, {"c": 2, "z": 1}, {"d": {"e": 3}, "z": 1}], "x": 1}}),
    (
        "a.b[].c",
        {"z": 1},
        {**BASE, "a": {"b": [{"c": {"z": 1}}, {"c": {"z": 1}}, {"c": {"z": 1}, "d": {"e": 3}}], "x": 1}},
    ),
    ("new.deep", {"q": 1}, {**BASE, "new": {"deep": {"q": 1}}}),
    ("new[0]", {"q": 1}, {**BASE, "new": []}),
    ("new[].x", {"q": 1}, {**BASE, "new": []}),
    ("f.x", {"q": 1}, {**BASE, "f": {"x": {"q": 1}}}),
    ("g[]", {"q": 1}, {**BASE, "g": [{"q": 1}, {"q": 1}]}),
    ("s", {"q": None}, {**BASE, "s": {}}),
    ("n[0]", {"q": 1}, {**BASE, "n": []}),
    ("g[1]", {"q": 1}, {**BASE, "g": ["g0", {"q": 1}]}),
]


@pytest.mark.parametrize("key, value, expected", SET_CASES)
def test_merge_follows_qdrant_value_set(key, value, expected):
    store = PayloadStore()
    store.set(0, BASE)
    store.merge(0, value, key)
    assert store.get(0) == expected
    assert BASE["a"]["b"][0] == {"c": 1}, "the caller's payload is never mutated"


DELETE_CASES = [
    ("a.b[].c", {**BASE, "a": {"b": [{}, {}, {"d": {"e": 3}}], "x": 1}}),
    ("a.b[0]", BASE),  # deleting by array index is a no-op in Qdrant
    ("a.b[]", {**BASE, "a": {"b": [], "x": 1}}),
    ("a.b[0].c", {**BASE, "a": {"b": [{}, {"c": 2}, {"d": {"e": 3}}], "x": 1}}),
    ("a", {k: v for k, v in BASE.items() if k != "a"}),
    ("a.x", {**BASE, "a": {"b": BASE["a"]["b"]}}),
    ("zz", BASE),
    ("f.x", BASE),
]


@pytest.mark.parametrize("key, expected", DELETE_CASES)
def test_delete_keys_follows_qdrant_value_remove(key, expected):
    store = PayloadStore()
    store.set(0, BASE)
    store.delete_keys(0, [key])
    assert store.get(0) == expected


# ----------------------------------------------------- against qdrant local mode

scalars = st.sampled_from(["a", "b", 1, 2, 2.5, True, False])
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), kids, max_size=3),
    max_leaves=8,
)
payloads = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=4)
no_null_payloads = payloads  # scalars holds no null: local mode keeps nulls, Qdrant deletes
key_paths = st.sampled_from(["a", "b", "a.b", "a.c", "a[]", "a[0]", "a[1]", "a[].b", "b.a[0].c", "c[].a.b", "d[0][]"])


@pytest.fixture(scope="module")
def local():
    client = QdrantClient(":memory:")
    yield client
    client.close()


def _local_collection(client: QdrantClient, payload: dict) -> None:
    if client.collection_exists("p"):
        client.delete_collection("p")
    client.create_collection("p", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    client.upsert("p", [models.PointStruct(id=1, vector=[0.1, 0.2], payload=payload)])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, value=no_null_payloads, key=st.none() | key_paths)
def test_merge_matches_local_mode(local, payload, value, key):
    _local_collection(local, payload)
    local.set_payload("p", payload=value, points=[1], key=key)
    expected = local.retrieve("p", [1], with_payload=True)[0].payload
    store = PayloadStore()
    store.set(0, payload)
    store.merge(0, value, key)
    assert store.get(0) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, keys=st.lists(st.sampled_from(["a", "b", "c", "x"]), max_size=3))
def test_delete_top_level_keys_matches_local_mode(local, payload, keys):
    _local_collection(local, payload)
    local.delete_payload("p", keys=keys, points=[1])
    expected = local.retrieve("p", [1], with_payload=True)[0].payload
    store = PayloadStore()
    store.set(0, payload)
    store.delete_keys(0, keys)
    assert store.get(0) == expected


selector_paths = st.lists(
    st.sampled_from(["a", "b", "a.b", "a[]", "a[].b", "a.c", "c[].a", "d"]), min_size=1, max_size=3
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, include=st.none() | selector_paths, exclude=selector_paths)
def test_select_payload_matches_local_mode(local, payload, include, exclude):
    _local_collection(local, payload)
    if include is not None:
        selector, mine = models.PayloadSelectorInclude(include=include), PayloadSelector(include=tuple(include))
    else:
        selector, mine = models.PayloadSelectorExclude(exclude=exclude), PayloadSelector(exclude=tuple(exclude))
    expected = local.retrieve("p", [1], with_payload=selector)[0].payload
    assert select_payload(payload, mine) == expected


def test_select_payload_none_and_whole():
    payload = {"a": 1}
    assert select_payload(payload, None) is None
    whole = select_payload(payload, PayloadSelector())
    assert whole == payload and whole is not payload


# ----------------------------------------------------------------- the store


def test_get_set_clear_remove_and_index_counts():
    store = PayloadStore()
    assert store.get(5) == {}
    store.create_index("color", "keyword")
    store.set(0, {"color": "red"})
    store.set(1, {"color": ["red", "blue"]})
    store.set(2, {"color": 3})
    assert store.payload_schema() == {"color": {"data_type": "keyword", "points": 2}}
    store.clear(1)
    assert store.get(1) == {} and store.payload_schema()["color"]["points"] == 1
    store.merge(1, {"color": "blue"})
    store.remove(0)
    assert store.get(0) == {}
    assert store.payload_schema()["color"]["points"] == 1
    assert facet(store, np.arange(3), "color", 10) == [("blue", 1)]


def test_payload_schema_json_matches_qdrant():
    store = PayloadStore()
    store.set(0, {"k": "x", "i": 1, "f": 1.5, "t": "hello world", "g": {"lat": 1.0, "lon": 2.0}, "b": True})
    store.create_index("k", "keyword")
    store.create_index("i", {"type": "integer", "lookup": False})
    store.create_index("f", {"type": "float"})
    store.create_index("t", {"type": "text", "lowercase": True})
    store.create_index("g", {"type": "geo", "on_disk": True})
    store.create_index("b", "bool")
    store.create_index("kt", {"type": "keyword", "is_tenant": True})
    assert store.payload_schema() == {
        "k": {"data_type": "keyword", "points": 1},
        "i": {
            "data_type": "integer",
            "params": {"type": "integer", "lookup": False, "range": None, "is_principal": None},
            "points": 1,
        },
        "f": {"data_type": "float", "params": {"type": "float", "is_principal": None}, "points": 1},
        "t": {"data_type": "text", "params": {"type": "text", "tokenizer": "word", "lowercase": True}, "points": 1},
        "g": {"data_type": "geo", "params": {"type": "geo", "on_disk": True}, "points": 1},
        "b": {"data_type": "bool", "points": 1},
        "kt": {"data_type": "keyword", "params": {"type": "keyword", "is_tenant": True}, "points": 0},
    }
    store.create_index("k", "integer")  # another schema replaces the index
    store.delete_index("t")
    store.delete_index("never-indexed")
    schema = store.payload_schema()
    assert schema["k"] == {"data_type": "integer", "points": 0} and "t" not in schema


@pytest.mark.parametrize(
    "schema", ["nope", {"type": "vector"}, {"lookup": True}, {"type": "integer", "lookup": False, "range": False}]
)
def test_bad_index_schemas_are_refused(schema):
    with pytest.raises(BadInput):
        PayloadStore().check_index_schema("a", schema)


def test_index_points_count_what_qdrant_indexes():
    # Counts recorded from Qdrant's segment code (qdrant-edge) on the same payloads.
    store = PayloadStore()
    rows = [
        {"k": "a"},
        {"k": ["a", "b"]},
        {"k": []},
        {"k": None},
        {"k": 5},
        {"k": [5, "c"]},
        {},
        {"k": [["a"]]},
        {"n": 1},
        {"n": 1.5},
        {"n": True},
        {"n": [1, 2.5]},
        {"t": "Hello World"},
        {"t": "!!!"},
        {"t": ""},
        {"g": {"lat": 10, "lon": 20}},
        {"g": {"lat": 100, "lon": 20}},
        {"g": [{"lat": 1, "lon": 2}, {"lat": 3, "lon": 4}]},
        {"d": "2020-01-01T00:00:00Z"},
        {"d": "garbage"},
        {"d": "2020-01-01"},
        {"u": "550e8400-e29b-41d4-a716-446655440000"},
        {"u": "550E8400E29B41D4A716446655440000"},
        {"u": "nope"},
        {"b": True},
        {"b": [True, False]},
        {"b": 1},
    ]
    for i, row in enumerate(rows):
        store.set(i, row)
    for field, kind in [
        ("k", "keyword"),
        ("n", "integer"),
        ("t", "text"),
        ("g", "geo"),
        ("d", "datetime"),
        ("u", "uuid"),
        ("b", "bool"),
    ]:
        store.create_index(field, kind)
    counts = {name: info["points"] for name, info in store.payload_schema().items()}
    assert counts == {"k": 3, "n": 2, "t": 1, "g": 2, "d": 2, "u": 2, "b": 2}


# ------------------------------------------------------------ facet & order_by


def test_facet_counts_points_per_value():
    store = PayloadStore()
    rows = [{"c": "red"}, {"c": ["red", "red", "blue"]}, {"c": "blue"}, {"c": "green"}, {"c": 1}, {}, {"c": "blue"}]
    for i, row in enumerate(rows):
        store.set(i, row)
    store.create_index("c", "keyword")
    assert facet(store, np.arange(7), "c", 10) == [("blue", 3), ("red", 2), ("green", 1)]
    assert facet(store, np.arange(7), "c", 2) == [("blue", 3), ("red", 2)]
    assert facet(store, np.array([0, 3]), "c", 10) == [("green", 1), ("red", 1)]


def test_facet_on_integer_bool_and_uuid_indexes():
    store = PayloadStore()
    u = "550e8400-e29b-41d4-a716-446655440000"
    rows = [{"i": 3, "b": True, "u": u.upper()}, {"i": [3, 1], "b": [False, True], "u": u}, {"i": 1.0, "b": 1}]
    for i, row in enumerate(rows):
        store.set(i, row)
    for field, kind in [("i", "integer"), ("b", "bool"), ("u", "uuid")]:
        store.create_index(field, kind)
    offsets = np.arange(3)
    assert facet(store, offsets, "i", 10) == [(3, 2), (1, 1)]
    assert facet(store, offsets, "b", 10) == [(True, 2), (False, 1)]
    assert facet(store, offsets, "u", 10) == [(u, 2)]


@pytest.mark.parametrize("schema", [None, "text", "float", {"type": "integer", "lookup": False}])
def test_facet_needs_a_map_index(schema):
    store = PayloadStore()
    store.set(0, {"c": 1})
    if schema is not None:
        store.create_index("c", schema)
    with pytest.raises(BadInput) as err:
        facet(store, np.arange(1), "c", 10)
    assert str(err.value) == (
        "No appropriate index for faceting: `c`. Please create one to facet on this field. Check "
        "https://qdrant.tech/documentation/concepts/indexing/#payload-index to see which payload schemas "
        "support Match conditions"
    )


def test_order_values_sort_filter_and_start_from():
    store = PayloadStore()
    rows = [{"p": 5}, {"p": [1, 7]}, {"p": 3.5}, {"p": "x"}, {"p": 3}, {}]
    for i, row in enumerate(rows):
        store.set(i, row)
    store.create_index("p", "integer")
    offsets = np.arange(6)
    assert order_values(store, offsets, OrderBy("p")) == [(1, 1), (4, 3), (0, 5), (1, 7)]
    assert order_values(store, offsets, OrderBy("p", "desc"), 2) == [(1, 7), (0, 5)]
    assert order_values(store, offsets, OrderBy("p", "asc", start_from=3)) == [(4, 3), (0, 5), (1, 7)]
    assert order_values(store, offsets, OrderBy("p", "desc", start_from=4.5)) == [(4, 3), (1, 1)]
    assert order_values(store, np.array([0, 2]), "p") == [(0, 5)]
    store.create_index("p", "float")
    assert order_values(store, offsets, OrderBy("p")) == [(1, 1.0), (4, 3.0), (2, 3.5), (0, 5.0), (1, 7.0)]


def test_order_values_on_datetimes_are_microseconds():
    store = PayloadStore()
    store.set(0, {"t": "2021-01-01T00:00:00Z"})
    store.set(1, {"t": "2020-01-01T01:00:00+01:00"})
    store.create_index("t", "datetime")
    micros_2020 = 1577836800 * 10**6
    assert order_values(store, np.arange(2), OrderBy("t")) == [(1, micros_2020), (0, 1609459200 * 10**6)]
    assert order_values(store, np.arange(2), OrderBy("t", start_from="2020-06-01T00:00:00Z")) == [
        (0, 1609459200 * 10**6)
    ]


@pytest.mark.parametrize("schema", [None, "keyword", {"type": "integer", "range": False}])
def test_order_by_needs_a_range_index(schema):
    store = PayloadStore()
    store.set(0, {"p": 1})
    if schema is not None:
        store.create_index("p", schema)
    with pytest.raises(BadInput) as err:
        order_values(store, np.arange(1), OrderBy("p"))
    assert str(err.value) == (
        "No range index for `order_by` key: `p`. Please create one to use `order_by`. Check "
        "https://qdrant.tech/documentation/concepts/indexing/#payload-index to see which payload schemas "
        "support Range conditions"
    )


# ------------------------------------------------------------------- snapshots


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.none() | payloads, max_size=12))
def test_state_round_trip(rows):
    store = PayloadStore()
    store.create_index("a", "keyword")
    store.create_index("b", {"type": "integer", "range": False})
    for i, row in enumerate(rows):
        if row is None:
            store.set(i, {"a": "gone"})
            store.remove(i)
        else:
            store.set(i, row)
    state = orjson.loads(orjson.dumps(store.to_state()))
    back = PayloadStore.from_state(state)
    assert [back.get(i) for i in range(len(rows))] == [store.get(i) for i in range(len(rows))]
    assert back.payload_schema() == store.payload_schema()
    offsets = np.arange(len(rows))
    assert facet(back, offsets, "a", 100) == facet(store, offsets, "a", 100)


def test_state_of_100k_payloads_round_trips():
    """(Its speed is measured by ``python -m bench.micro``.)"""
    colors = ["red", "green", "blue", "black"]
    rows = [{"color": colors[i % 4], "n": i, "tags": [colors[i % 3], "x"]} for i in range(100_000)]
    store = PayloadStore.from_state({"payloads": rows, "indexes": []})
    store.create_index("color", "keyword")
    store.create_index("n", "integer")
    back = PayloadStore.from_state(orjson.loads(orjson.dumps(store.to_state())))
    assert back.payload_schema() == store.payload_schema()
    assert back.get(99_999) == rows[99_999] and back.get(0) == rows[0]


def test_stored_payloads_are_private_copies():
    store = PayloadStore()
    payload = {"a": {"b": [1]}}
    store.set(0, payload)
    payload["a"]["b"].append(2)
    assert store.get(0) == {"a": {"b": [1]}}
    before = copy.deepcopy(store.get(0))
    store.merge(0, {"c": 1}, "a")
    assert before == {"a": {"b": [1]}}


# ------------------------------------------------ indexes answering filters

U1 = "550e8400-e29b-41d4-a716-446655440000"
ALL_INDEXES = {
    "k": "keyword",
    "i": "integer",
    "f": "float",
    "b": "bool",
    "g": "geo",
    "d": "datetime",
    "u": "uuid",
    "t": "text",
}


class Ctx:
    """The smallest FilterContext: a PayloadStore with every offset live."""

    def __init__(self, rows, indexes=()):
        self.payloads = PayloadStore()
        for i, row in enumerate(rows):
            self.payloads.set(i, row)
        for key, schema in indexes:
            self.payloads.create_index(key, schema)
        self.size, self.live = len(rows), np.ones(len(rows), bool)

    def offsets_of(self, ids):
        return np.asarray([i for i in ids if isinstance(i, int) and i < self.size], np.int64)

    def has_vector(self, name):
        return np.zeros(self.size, bool)


def run(flt, ctx):
    return np.flatnonzero(filters.evaluate(flt, ctx)).tolist()


def must(*conds):
    return {"must": list(conds)}


def both(rows, flt, indexes=()):
    """Matches without and with the given indexes."""
    return run(flt, Ctx(rows)), run(flt, Ctx(rows, indexes))


def test_uuid_index_compares_parsed_uuids():
    rows = [{"u": U1}, {"u": U1.upper()}, {"u": U1.replace("-", "")}, {"u": "nope"}]
    assert both(rows, must({"key": "u", "match": {"value": U1}}), [("u", "uuid")]) == ([0], [0, 1, 2])
    # a value that is not a UUID makes Qdrant fall back to comparing strings
    assert both(rows, must({"key": "u", "match": {"any": [U1.upper(), "nope"]}}), [("u", "uuid")]) == ([1, 3], [1, 3])


def test_text_match_substring_without_index_tokens_with_one():
    rows = [{"t": "Hello World"}, {"t": "say hello"}, {"t": ["world", "hello"]}, {"t": "hello-world!"}, {"t": 5}]
    assert both(rows, must({"key": "t", "match": {"text": "ello"}}), [("t", "text")]) == ([0, 1, 2, 3], [])
    assert both(rows, must({"key": "t", "match": {"text": "hello world"}}), [("t", "text")]) == ([], [0, 2, 3])
    assert both(rows, must({"key": "t", "match": {"phrase": "hello world"}}), [("t", "text")]) == ([], [])
    phrases = [("t", {"type": "text", "phrase_matching": True})]
    assert both(
        rows + [{"t": ["hello", "world"]}], must({"key": "t", "match": {"phrase": "hello world"}}), phrases
    ) == ([], [0, 3])
    assert both(rows, must({"key": "t", "match": {"text_any": "say nothing"}}), [("t", "text")]) == ([1], [1])
    assert both(rows, must({"key": "t", "match": {"text": ""}}), [("t", "text")]) == ([0, 1, 2, 3], [])


def test_text_index_applies_inside_nested():
    rows = [{"items": [{"title": "goodness only"}]}, {"items": [{"title": "good cheap"}]}]
    flt = must({"nested": {"key": "items", "filter": must({"key": "title", "match": {"text": "good"}})}})
    assert both(rows, flt, [("items[].title", "text")]) == ([0, 1], [1])


def test_index_state_round_trip_keeps_results():
    rows = [
        {
            "k": ["a", "b"],
            "i": 3,
            "f": 1.5,
            "b": True,
            "g": {"lat": 1.0, "lon": 2.0},
            "d": "2020-01-01",
            "u": U1,
            "t": "hello world",
        },
        {
            "k": "c",
            "i": [1, 9],
            "f": -2,
            "b": [False],
            "g": [{"lat": 3.0, "lon": 4.0}],
            "d": "2021-01-01T00:00:00Z",
            "u": U1.upper(),
            "t": "bye",
        },
    ]
    ctx = Ctx(rows, ALL_INDEXES.items())
    back = PayloadStore.from_state(orjson.loads(orjson.dumps(ctx.payloads.to_state())))
    assert back.payload_schema() == ctx.payloads.payload_schema()
    queries = [
        must({"key": "k", "match": {"except": ["a"]}}),
        must({"key": "i", "range": {"gt": 2}}),
        must({"key": "f", "range": {"lt": 0}}),
        must({"key": "b", "match": {"value": False}}),
        must({"key": "g", "geo_radius": {"center": {"lat": 3.0, "lon": 4.0}, "radius": 10.0}}),
        must({"key": "d", "range": {"gte": "2020-06-01"}}),
        must({"key": "u", "match": {"value": U1}}),
        must({"key": "t", "match": {"text": "world"}}),
    ]
    restored = Ctx(rows)
    restored.payloads = back
    assert (
        [run(q, restored) for q in queries]
        == [run(q, ctx) for q in queries]
        == [[0, 1], [0, 1], [1], [1], [1], [1], [0, 1], [0]]
    )


def test_indexed_match_on_100k_points():
    """Indexed matches over 100k points find exactly what they should (their speed
    is measured by ``python -m bench.micro``)."""
    n = 100_000
    rows = [
        {"c": ("red", "green", "blue")[i % 3], "n": i % 1000, "flag": i % 2 == 0, "u": U1 if i % 7 == 0 else None}
        for i in range(n)
    ]
    ctx = Ctx([])
    ctx.payloads = PayloadStore.from_state({"payloads": rows, "indexes": []})
    for key, kind in (("c", "keyword"), ("n", "integer"), ("flag", "bool"), ("u", "uuid")):
        ctx.payloads.create_index(key, kind)
    ctx.size, ctx.live = n, np.ones(n, bool)
    for flt, count in [
        (must({"key": "c", "match": {"value": "red"}}), 33_334),
        (must({"key": "n", "match": {"any": [1, 2]}}), 200),
        (must({"key": "flag", "match": {"value": True}}), 50_000),
        (must({"key": "u", "match": {"value": U1}}), 14_286),
    ]:
        assert int(filters.evaluate(flt, ctx).sum()) == count, flt


def test_nbytes_follows_every_kind_of_payload_write():
    """The payloads' JSON size, measured on demand and then kept up by the writes
    since (set, merge, key deletion, clear, removal), whatever their order."""
    import random

    rng = random.Random(5)
    store = PayloadStore()
    for offset in range(50):
        store.set(offset, {"a": offset, "text": "x" * rng.randrange(20)})
    for step in range(300):
        offset = rng.randrange(60)
        kind = rng.randrange(5)
        if kind == 0:
            store.set(offset, {"b": [1, 2, 3][: rng.randrange(4)]})
        elif kind == 1:
            store.merge(offset, {"c": "y" * rng.randrange(10)})
        elif kind == 2:
            store.delete_keys(offset, ["a", "c"])
        elif kind == 3:
            store.clear(offset)
        else:
            store.remove(offset)
        if step % 7 == 0:  # asked now and then, as strict mode asks before a write
            want = sum(len(orjson.dumps(p)) for p in store.payload_list() if p)
            assert store.nbytes == want
    assert store.nbytes == sum(len(orjson.dumps(p)) for p in store.payload_list() if p)
    assert PayloadStore.from_state(store.to_state()).nbytes == store.nbytes
