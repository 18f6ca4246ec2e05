"""Strict mode's pure functions (gateway.strict, gateway.rate_limits): the config
as Qdrant 1.15 merges and reports it, each check with Qdrant's exact text, and the
token buckets. Texts come from lib/collection/src/operations/verification/ and
Qdrant's tests/openapi/test_strict_mode.py."""

from __future__ import annotations

import orjson
import pytest

from gateway import models as g
from gateway import strict
from gateway.errors import BadRequest, RateLimited, ValidationError, error_response
from gateway.rate_limits import RateLimits, TokenBucket, read_cost, write_parts

VECTORS = {"size": 4, "distance": "Cosine"}


def config(**settings) -> dict:
    """A collection config with strict mode on and ``settings``."""
    return {"params": {"vectors": VECTORS}, "strict_mode_config": {"enabled": True, **settings}}


def refused(kind: str, body: dict, settings: dict, facts: strict.Facts = strict.Facts(), timeout=None) -> str:
    with pytest.raises(BadRequest) as caught:
        strict.verify(config(**settings), kind, body, facts, timeout)
    assert caught.value.status == 400
    return caught.value.text


def allowed(kind: str, body: dict, settings: dict, facts: strict.Facts = strict.Facts(), timeout=None) -> None:
    strict.verify(config(**settings), kind, body, facts, timeout)


def limit_text(value, limit, name: str) -> str:
    return (f'Bad request: Limit exceeded {value} > {limit} for "{name}". '
            f'Help: Reduce the "{name}" parameter to or below {limit}.')


def field(key: str, **condition) -> dict:
    return {"key": key, **condition}


def must(*conditions) -> dict:
    return {"must": list(conditions)}


# ----------------------------------------------------------------------- config


def test_a_new_collection_gets_qdrants_default():
    assert strict.created(None) == {"enabled": False}
    assert strict.created({"max_query_limit": 5, "enabled": None}) == {"enabled": False, "max_query_limit": 5}
    assert strict.created({"enabled": True}) == {"enabled": True}


def test_patch_replaces_given_fields_and_null_changes_nothing():
    current = strict.created({"enabled": True, "write_rate_limit": 1, "sparse_config": {"s": {"max_length": 3}}})
    patched = strict.merged(current, {"read_rate_limit": 2, "write_rate_limit": None, "max_query_limit": 7})
    assert patched == {"enabled": True, "max_query_limit": 7, "read_rate_limit": 2, "write_rate_limit": 1,
                       "sparse_config": {"s": {"max_length": 3}}}
    assert list(patched) == ["enabled", "max_query_limit", "read_rate_limit", "write_rate_limit", "sparse_config"]
    # the maps are replaced whole, names sorted, null members left out
    again = strict.merged(patched, {"sparse_config": {"z": {"max_length": None}, "b": {"max_length": 1}}})
    assert again["sparse_config"] == {"b": {"max_length": 1}, "z": {}}
    assert list(again["sparse_config"]) == ["b", "z"]
    assert current["write_rate_limit"] == 1  # inputs untouched


def test_only_an_enabled_config_is_active():
    assert strict.active({"strict_mode_config": {"enabled": False, "max_query_limit": 1}}) is None
    assert strict.active({"params": {}}) is None
    assert strict.active(config(max_query_limit=1)) == {"enabled": True, "max_query_limit": 1}
    strict.verify({"params": {"vectors": VECTORS}, "strict_mode_config": {"enabled": False, "max_query_limit": 1}},
                  "search", {"limit": 100})


@pytest.mark.parametrize("body, path", [
    ({"max_query_limit": 0}, "strict_mode_config.max_query_limit"),
    ({"max_timeout": 0}, "strict_mode_config.max_timeout"),
    ({"read_rate_limit": 0}, "strict_mode_config.read_rate_limit"),
    ({"write_rate_limit": 0}, "strict_mode_config.write_rate_limit"),
    ({"max_points_count": 0}, "strict_mode_config.max_points_count"),
    ({"sparse_config": {"b": {"max_length": 2}, "a": {"max_length": 0}}},
     "strict_mode_config.sparse_config.config[0].max_length"),
    ({"multivector_config": {"m": {"max_vectors": 0}}}, "strict_mode_config.multivector_config.config[0].max_vectors"),
])
def test_bad_values_are_qdrants_422(body, path):
    with pytest.raises(ValidationError) as caught:
        g.read(g.UpdateCollection, orjson.dumps({"strict_mode_config": body}))
    assert caught.value.status == 422
    assert caught.value.text == f"Validation error in JSON body: [{path}: value 0 invalid, must be 1 or larger]"


def test_zero_is_accepted_where_qdrant_accepts_it():
    body = {"strict_mode_config": {"upsert_max_batchsize": 0, "filter_max_conditions": 0, "search_max_hnsw_ef": 0,
                                   "max_payload_index_count": 0, "condition_max_size": 0}}
    parsed = g.read(g.CreateCollection, orjson.dumps({"vectors": VECTORS, **body}))
    assert parsed["strict_mode_config"] == body["strict_mode_config"]


# ----------------------------------------------------------------------- limits


def test_limit_of_each_read_kind():
    assert refused("search", {"limit": 10}, {"max_query_limit": 4}) == limit_text(10, 4, "limit")
    allowed("search", {"limit": 4}, {"max_query_limit": 4})
    assert refused("recommend_batch", {"searches": [{"limit": 1}, {"limit": 5}]}, {"max_query_limit": 4}) \
        == limit_text(5, 4, "limit")
    # groups count limit x group_size (qdrant#6353); the matrix limit x sample
    assert refused("search_groups", {"limit": 10, "group_size": 3, "group_by": "k"}, {"max_query_limit": 15}) \
        == limit_text(30, 15, "limit")
    assert refused("query_groups", {"group_by": "k"}, {"max_query_limit": 15}) == limit_text(30, 15, "limit")
    assert refused("matrix", {"sample": 10, "limit": 2}, {"max_query_limit": 15}) == limit_text(20, 15, "limit")
    allowed("matrix", {"sample": 10}, {"max_query_limit": 15})  # no defaults: only what is given counts
    # the universal query counts its default limit (10), and each prefetch's
    assert refused("query", {}, {"max_query_limit": 5}) == limit_text(10, 5, "limit")
    assert refused("query", {"limit": 5, "prefetch": [{"limit": 6}]}, {"max_query_limit": 5}) \
        == limit_text(6, 5, "limit")
    # scroll and facet: only a given limit (Qdrant 1.15)
    allowed("scroll", {}, {"max_query_limit": 5})
    assert refused("scroll", {"limit": 6}, {"max_query_limit": 5}) == limit_text(6, 5, "limit")
    assert refused("facet", {"key": "k", "limit": 6}, {"max_query_limit": 5}) == limit_text(6, 5, "limit")


def test_timeout_is_checked_after_the_request():
    assert refused("search", {"limit": 1}, {"max_timeout": 2}, timeout=3) == limit_text(3, 2, "timeout")
    allowed("search", {"limit": 1}, {"max_timeout": 2}, timeout=2)
    assert refused("search", {"limit": 9}, {"max_timeout": 2, "max_query_limit": 5}, timeout=3) \
        == limit_text(9, 5, "limit")


def test_search_params():
    assert refused("search", {"limit": 1, "params": {"hnsw_ef": 5}}, {"search_max_hnsw_ef": 4}) \
        == limit_text(5, 4, "hnsw_ef")
    assert refused("query", {"params": {"quantization": {"oversampling": 2.0}}}, {"search_max_oversampling": 1.9}) \
        == limit_text(2, 1.9, "oversampling")
    allowed("search", {"limit": 1, "params": {"quantization": {"oversampling": 2.0}}}, {"search_max_oversampling": 2.0})
    exact = "Bad request: Exact search disabled!. Help: Set exact=false."
    assert refused("search", {"limit": 1, "params": {"exact": True}}, {"search_allow_exact": False}) == exact
    allowed("search", {"limit": 1, "params": {"exact": True}}, {"search_allow_exact": True})
    # count's exact defaults to true
    assert refused("count", {}, {"search_allow_exact": False}) == exact
    allowed("count", {"exact": False}, {"search_allow_exact": False})
    allowed("facet", {"key": "k"}, {"search_allow_exact": False})


# -------------------------------------------------------------- unindexed keys

KEYWORD = {"data_type": "keyword", "points": 3}


def unindexed(key: str, schemas: str, what: str = "filter") -> str:
    return (f'Bad request: Index required but not found for "{key}" of one of the following types: [{schemas}]. '
            f"Help: Create an index for this key or use a different {what}.")


@pytest.mark.parametrize("condition, schemas", [
    (field("k", match={"value": "Berlin"}), "keyword"),
    (field("k", match={"value": "550e8400-e29b-41d4-a716-446655440000"}), "keyword, uuid"),
    (field("k", match={"value": 3}), "integer"),
    (field("k", match={"value": True}), "bool"),
    (field("k", match={"any": [1, 2]}), "integer"),
    (field("k", match={"except": ["a"]}), "keyword"),
    (field("k", match={"text": "a b"}), "text"),
    (field("k", match={"phrase": "a b"}), "text (with phrase_matching: true)"),
    (field("k", range={"gte": 1.5}), "float, integer"),
    (field("k", range={"gte": "2024-01-01T00:00:00Z"}), "datetime"),
    (field("k", geo_radius={"center": {"lon": 0, "lat": 0}, "radius": 1.0}), "geo"),
    ({"is_empty": {"key": "k"}},
     "bool, datetime, float, geo, integer, keyword, text, text (with phrase_matching: true), uuid"),
])
def test_each_condition_names_the_indexes_that_serve_it(condition, schemas):
    assert refused("search", {"limit": 1, "filter": must(condition)}, {"unindexed_filtering_retrieve": False}) \
        == unindexed("k", schemas)
    allowed("search", {"limit": 1, "filter": must(condition)}, {"unindexed_filtering_retrieve": True})


@pytest.mark.parametrize("condition, entry, ok", [
    (field("k", match={"value": "x"}), KEYWORD, True),
    (field("k", range={"lt": 3}), KEYWORD, False),  # an index of the wrong kind
    (field("k", range={"lt": 3}), {"data_type": "integer"}, True),
    (field("k", range={"lt": 3}), {"data_type": "integer", "params": {"type": "integer", "range": False}}, False),
    (field("k", match={"value": 3}), {"data_type": "integer", "params": {"type": "integer", "range": False}}, True),
    (field("k", match={"phrase": "a"}), {"data_type": "text"}, False),
    (field("k", match={"phrase": "a"}),
     {"data_type": "text", "params": {"type": "text", "phrase_matching": True}}, True),
    (field("k", match={"value": "550e8400-e29b-41d4-a716-446655440000"}), {"data_type": "uuid"}, True),
    ({"is_null": {"key": "k"}}, {"data_type": "geo"}, True),  # any index will do
])
def test_an_index_must_serve_the_condition(condition, entry, ok):
    facts = strict.Facts(schema={"k": entry})
    body, settings = {"limit": 1, "filter": must(condition)}, {"unindexed_filtering_retrieve": False}
    if ok:
        allowed("search", body, settings, facts)
    else:
        assert refused("search", body, settings, facts).startswith('Bad request: Index required but not found for "k"')


def test_nested_keys_carry_the_array_marker():
    flt = must({"nested": {"key": "country.cities", "filter": must(field("population", range={"gte": 8}))}})
    text = refused("scroll", {"filter": flt}, {"unindexed_filtering_retrieve": False})
    assert text == unindexed("country.cities[].population", "float, integer")
    facts = strict.Facts(schema={"country.cities[].population": {"data_type": "float"}})
    allowed("scroll", {"filter": flt}, {"unindexed_filtering_retrieve": False}, facts)


def test_the_first_unindexed_condition_is_named():
    facts = strict.Facts(schema={"a": KEYWORD})
    flt = {"must": [field("a", match={"value": "x"})], "should": [field("b", match={"value": 1})],
           "must_not": [{"has_id": [1]}, field("c", match={"value": "y"})]}
    # must, then must_not, then should
    assert refused("count", {"filter": flt, "exact": False}, {"unindexed_filtering_retrieve": False}, facts) \
        == unindexed("c", "keyword")
    assert strict.unindexed_key({"min_should": {"conditions": [field("d", match={"value": "x"})], "min_count": 1}},
                                {}) == ("d", ["keyword"])
    assert strict.unindexed_key(must({"has_id": [1]}, {"has_vector": "v"}), {}) is None


def test_write_filters_are_checked_by_their_own_setting():
    flt = must(field("city", match={"value": "Berlin"}))
    settings = {"unindexed_filtering_update": False, "unindexed_filtering_retrieve": True}
    for kind, body in (("delete_points", {"filter": flt}), ("set_payload", {"payload": {}, "filter": flt}),
                       ("delete_vectors", {"vector": ["v"], "filter": flt}), ("clear_payload", {"filter": flt}),
                       ("batch", {"operations": [{"upsert": {"points": []}}, {"delete": {"filter": flt}}]})):
        assert refused(kind, body, settings) == unindexed("city", "keyword")
    allowed("delete_points", {"points": [1, 2]}, settings)
    allowed("search", {"limit": 1, "filter": flt}, settings)


def test_formula_payload_variables_need_a_numeric_index():
    query = {"prefetch": [{"query": [0.1, 0.2, 0.3, 0.4]}],
             "query": {"formula": {"sum": ["discount_price", "$score"]}, "defaults": {"discount_price": 0}}}
    assert refused("query", query, {"unindexed_filtering_retrieve": False}) \
        == unindexed("discount_price", "float, integer", "formula expression")
    facts = strict.Facts(schema={"discount_price": {"data_type": "float"}})
    allowed("query", query, {"unindexed_filtering_retrieve": False}, facts)
    geo = {"query": {"formula": {"mult": [{"geo_distance": {"origin": {"lon": 0, "lat": 0}, "to": "loc"}}, 2]}}}
    assert refused("query", geo, {"unindexed_filtering_retrieve": False}) \
        == unindexed("loc", "geo", "formula expression")


def test_group_by_needs_an_index_that_matches():
    settings = {"unindexed_filtering_retrieve": False}
    assert refused("query_groups", {"group_by": "doc", "limit": 1, "group_size": 1}, settings) == (
        'Bad request: Index required but not found for "doc". Help: Create an index supporting `match` for this key.')
    facts = strict.Facts(schema={"doc": {"data_type": "float"}})
    assert refused("query_groups", {"group_by": "doc", "limit": 1, "group_size": 1}, settings, facts) == (
        'Bad request: Index of type "Float" found for "doc". Help: Create an index supporting `match` for this key.')
    allowed("query_groups", {"group_by": "doc", "limit": 1, "group_size": 1}, settings,
            strict.Facts(schema={"doc": KEYWORD}))


def test_filter_size_limits():
    flt = must(*(field("price", match={"value": i}) for i in range(6)))
    assert refused("search", {"limit": 1, "filter": flt}, {"filter_max_conditions": 5}) == (
        "Bad request: Filter condition limit reached (6 > 5). Help: Reduce the amount of conditions of your filter.")
    allowed("search", {"limit": 1, "filter": must(*flt["must"][:5])}, {"filter_max_conditions": 5})
    nested = must({"nested": {"key": "city", "filter": must(field("a", match={"any": [1, 2, 3]}),
                                                             field("b", match={"any": [1, 1, 2]}))}})
    assert strict.conditions_count(nested) == 2  # a nested filter counts its conditions, not itself
    assert strict.condition_size(nested) == 3
    assert strict.condition_size(must({"has_id": [1, 2, 2]}, must(field("x", match={"except": ["a", "b"]})))) == 2
    assert refused("scroll", {"filter": nested}, {"condition_max_size": 2}) == (
        "Bad request: Condition size limit reached (3 > 2). Help: Reduce the size of your condition.")
    # unindexed keys are named before the filter's size
    assert refused("scroll", {"filter": nested}, {"condition_max_size": 2, "unindexed_filtering_retrieve": False}) \
        == unindexed("city[].a", "integer")


# ------------------------------------------------------------------------ writes


def test_upsert_and_update_batch_sizes():
    points = {"points": [{"id": i, "vector": [1, 2, 3, 4]} for i in range(6)]}
    batch = {"batch": {"ids": list(range(6)), "vectors": [[1, 2, 3, 4]] * 6}}
    for body in (points, batch):
        assert refused("upsert", body, {"upsert_max_batchsize": 5}) == limit_text(6, 5, "upsert limit")
        allowed("upsert", body, {"upsert_max_batchsize": 6})
    assert refused("batch", {"operations": [{"upsert": batch}]}, {"upsert_max_batchsize": 5}) \
        == limit_text(6, 5, "upsert limit")
    assert refused("update_vectors", points, {"upsert_max_batchsize": 5}) == limit_text(6, 5, "update limit")


def test_points_count_is_refused_once_reached():
    body = {"points": [{"id": 1, "vector": [1, 2, 3, 4]}]}
    allowed("upsert", body, {"max_points_count": 10}, strict.Facts(points_count=9))
    assert refused("upsert", body, {"max_points_count": 10}, strict.Facts(points_count=10)) \
        == "Bad request: Max points count limit of 10 reached!"
    assert strict.needs(config(max_points_count=10), "upsert") == (False, True)
    assert strict.needs(config(max_points_count=10), "search") == (False, False)


def test_vector_storage_size():
    assert strict.vector_storage_bytes(config(), 15) == 15 * 16
    named = {"params": {"vectors": {"a": {"size": 2, "distance": "Dot", "datatype": "uint8"}, "b": VECTORS}}}
    assert strict.vector_storage_bytes(named, 3) == 3 * (2 + 16)
    body = {"points": [{"id": 1, "vector": [1, 2, 3, 4]}]}
    assert refused("upsert", body, {"max_collection_vector_size_bytes": 240}, strict.Facts(points_count=15)) \
        == "Bad request: Max vector storage size limit of 0.00022888184MB reached!"
    allowed("upsert", body, {"max_collection_vector_size_bytes": 240}, strict.Facts(points_count=14))


def test_sparse_and_multivector_lengths():
    sparse = {"points": [{"id": 1, "vector": {"s": {"indices": [1, 2, 3, 4, 5, 6], "values": [0.1] * 6}}}]}
    assert refused("upsert", sparse, {"sparse_config": {"s": {"max_length": 4}}}) \
        == "Bad request: Sparse vector 's' has a limit of 4 indices, but 6 were provided!"
    allowed("upsert", sparse, {"sparse_config": {"t": {"max_length": 4}}})
    multi = {"batch": {"ids": [1], "vectors": {"m": [[[1.0, 2.0]] * 6]}}}
    assert refused("upsert", multi, {"multivector_config": {"m": {"max_vectors": 5}}}) \
        == "Bad request: Multivector 'm' has a limit of 5 vectors, but 6 were provided!"
    unnamed = {"points": [{"id": 1, "vector": [[1.0, 2.0]] * 6}]}
    assert refused("update_vectors", unnamed, {"multivector_config": {"": {"max_vectors": 5}}}).startswith(
        "Bad request: Multivector '' has a limit of 5")


def test_payload_index_count():
    facts = strict.Facts(schema={"a": KEYWORD, "b": KEYWORD})
    assert refused("create_index", {"field_name": "c"}, {"max_payload_index_count": 2}, facts) == (
        "Bad request: Collection already has the maximum number of payload indices (2). "
        "Help: Please delete an existing index before creating a new one.")
    allowed("create_index", {"field_name": "c"}, {"max_payload_index_count": 3}, facts)
    assert strict.needs(config(max_payload_index_count=2), "create_index") == (True, False)


# ------------------------------------------------------------------ rate limits


def test_token_bucket_as_qdrant():
    bucket = TokenBucket(10, now=0.0)
    bucket.take([10], 0.0, "Write")
    with pytest.raises(RateLimited) as caught:
        bucket.take([10], 0.001, "Write")
    assert caught.value.status == 429
    assert caught.value.text == ("Rate limiting exceeded: Write rate limit exceeded: Operation requires 10 tokens "
                                 "but only 0.0 were available. Retry after 60s")
    assert dict(caught.value.headers) == {"Retry-After": "60"}
    with pytest.raises(RateLimited) as caught:
        bucket.take([11], 100.0, "Read")
    assert caught.value.text == ("Rate limiting exceeded: Read rate limit exceeded, request larger than rate limiter "
                                 "capacity, please try to split your request")
    assert dict(caught.value.headers) == {}
    bucket.take([5], 30.0, "Write")  # 30 s refill 5 tokens
    with pytest.raises(RateLimited):
        bucket.take([1], 30.0, "Write")
    status, body = error_response(caught.value)
    assert status == 429 and body["status"]["error"].startswith("Rate limiting exceeded: ")


def test_a_refused_take_takes_nothing():
    bucket = TokenBucket(4, now=0.0)
    with pytest.raises(RateLimited):
        bucket.take([3, 3], 0.0, "Write")
    bucket.take([4], 0.0, "Write")


def test_buckets_per_collection_and_reset_on_change():
    limits = RateLimits()
    cfg = {"enabled": True, "read_rate_limit": 1}
    limits.take("inc-a", cfg, False, [1], 0.0)
    limits.take("inc-b", cfg, False, [1], 0.0)  # another collection
    limits.take("inc-a", cfg, True, [50], 0.0)  # no write limit
    with pytest.raises(RateLimited) as caught:
        limits.take("inc-a", cfg, False, [1], 1.0)
    assert 55 < int(caught.value.headers["Retry-After"]) <= 60
    limits.take("inc-a", {**cfg, "max_query_limit": 3}, False, [1], 1.0)  # a new config: a full bucket


def test_costs():
    flt = must(field("a", match={"value": 1}), field("b", match={"value": 2}))
    assert read_cost("search", {"limit": 1}) == 1
    assert read_cost("search", {"limit": 1, "filter": flt}) == 3
    assert read_cost("recommend", {"positive": [1, 2, 3, 4, 5], "strategy": "best_score", "limit": 10}) == 5
    assert read_cost("recommend", {"positive": [1, 2, 3], "limit": 10}) == 1
    assert read_cost("discover", {"target": 1, "context": [{"positive": 1, "negative": 2}], "limit": 1}) == 3
    assert read_cost("scroll", {"filter": must(*(field("p", match={"value": i}) for i in range(11)))}) == 12
    assert read_cost("retrieve", {"ids": [1, 2, 3, 4, 5]}) == 5
    assert read_cost("search_batch", {"searches": [{"limit": 1}, {"limit": 1, "filter": flt}]}) == 4
    assert read_cost("query", {"prefetch": [{"query": [1.0]}, {"filter": flt}], "query": {"fusion": "rrf"}}) == 5
    assert write_parts("upsert", {"points": [{"id": 1}, {"id": 2}]}) == [2]
    assert write_parts("upsert", {"batch": {"ids": [1, 2, 3]}}) == [3]
    assert write_parts("delete_points", {"points": [1]}) == [1]
    assert write_parts("set_payload", {"payload": {}, "filter": flt}) == [flt]
    assert write_parts("create_index", {"field_name": "x"}) == [1]
    assert write_parts("batch", {"operations": [{"upsert": {"points": [{"id": 1}]}}, {"delete": {"filter": flt}}]}) \
        == [1, flt]


def test_full_scan_without_a_graph():
    graphless = {"params": {"vectors": {"v": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 0}}, "w": VECTORS},
                            "sparse_vectors": {"s": {}}},
                 "hnsw_config": {"m": 16, "payload_m": 16},
                 "strict_mode_config": {"enabled": True, "search_allow_exact": False}}

    def check(body: dict, facts: strict.Facts = strict.Facts()):
        strict.verify(graphless, "query", body, facts)

    with pytest.raises(BadRequest) as caught:
        check({"query": [1, 0, 0, 0], "using": "v", "limit": 1})
    assert caught.value.text == (
        "Bad request: Request is forbidden on 'v' because global vector indexing is disabled (hnsw_config.m = 0). "
        "Help: Use tenant-specific filter, enable global vector indexing or enable strict mode `search_allow_exact` "
        "option")
    check({"query": [1, 0, 0, 0], "using": "w", "limit": 1})  # w has its graph
    check({"query": {"indices": [1], "values": [1.0]}, "using": "s", "limit": 1})  # sparse: always indexed
    check({"query": {"fusion": "rrf"}, "prefetch": [{"query": [1, 0, 0, 0], "using": "w"}], "limit": 1})
    # a request rescoring its prefetches scans nothing itself; the prefetch does
    check({"query": [1, 0, 0, 0], "using": "v", "prefetch": [{"query": [1, 0, 0, 0], "using": "w"}], "limit": 1})
    with pytest.raises(BadRequest):
        check({"query": {"fusion": "rrf"}, "prefetch": [{"query": [1, 0, 0, 0], "using": "v"}], "limit": 1})
    tenant = {"must": [field("org", match={"value": "a"})]}
    tenants = strict.Facts(schema={"org": {"data_type": "keyword", "params": {"type": "keyword", "is_tenant": True}}})
    check({"query": [1, 0, 0, 0], "using": "v", "limit": 1, "filter": tenant}, tenants)
    with pytest.raises(BadRequest):
        check({"query": [1, 0, 0, 0], "using": "v", "limit": 1, "filter": tenant},
              strict.Facts(schema={"org": KEYWORD}))
    graphless["params"]["vectors"]["v"]["hnsw_config"]["payload_m"] = 0
    with pytest.raises(BadRequest) as caught:
        check({"query": [1, 0, 0, 0], "using": "v", "limit": 1, "filter": tenant}, tenants)
    assert caught.value.text.startswith(
        "Bad request: Request is forbidden on 'v' because vector indexing is disabled (hnsw_config.m = 0 and "
        "hnsw_config.payload_m = 0). Help: Enable vector indexing")
    assert strict.needs(graphless, "query") == (True, False)
    assert strict.needs(graphless, "search") == (False, False)
