"""Qdrant 1.15's strict mode, as pure functions of the config and a request body.

A collection's ``strict_mode_config`` is kept in its config (so in the Raft
metadata, the same on every gateway and across restarts). When its ``enabled``
is true, every point request is checked before anything happens, as Qdrant's
``StrictModeVerification`` does (lib/collection/src/operations/verification/,
one file per request kind), in Qdrant's order: the kind's own checks (batch
size, collection size, payload index count, prefetches, full scans, formula,
group_by),
then ``limit``, the read filter then the write filter (unindexed keys, then
``filter_max_conditions`` and ``condition_max_size``), ``exact``, the search
params (``oversampling``, ``hnsw_ef``, ``exact``); for reads, ``timeout`` last.
Every refusal is 400 "Bad request: ..." (``gateway.errors``), so nothing changes.

The read and write rate limits, which Qdrant applies as it runs a request,
are ``gateway.rate_limits``.

``verify`` needs what only the shards know -- the payload indexes and the point
count -- in ``Facts``; ``needs`` says which, so they are fetched only then.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway import errors
from gateway.errors import BadRequest
from gateway.models.serde import rust_display_float
from shard.json_path import canonical
from shard.types import BadInput

# StrictModeConfig's fields in Qdrant's order: the order GET /collections/{name} shows.
FIELDS = (
    "enabled", "max_query_limit", "max_timeout", "unindexed_filtering_retrieve", "unindexed_filtering_update",
    "search_max_hnsw_ef", "search_allow_exact", "search_max_oversampling", "upsert_max_batchsize",
    "max_collection_vector_size_bytes", "read_rate_limit", "write_rate_limit", "max_collection_payload_size_bytes",
    "max_points_count", "filter_max_conditions", "condition_max_size", "multivector_config", "sparse_config",
    "max_payload_index_count",
)  # fmt: skip
# What a collection created without one gets: Qdrant 1.15's config.yaml sets
# ``storage.collection.strict_mode: {enabled: false}`` (removed in 1.16, qdrant#7369).
DEFAULT = {"enabled": False}
DEFAULT_LIMIT = 10  # CollectionQueryRequest / CollectionPrefetch without a limit
DEFAULT_GROUP_SIZE = 3

READS = frozenset({
    "search", "search_batch", "recommend", "recommend_batch", "discover", "discover_batch", "query", "query_batch",
    "search_groups", "recommend_groups", "query_groups", "matrix", "scroll", "count", "facet", "retrieve",
})  # fmt: skip
_FILTERED_WRITES = frozenset({
    "delete_points", "delete_vectors", "set_payload", "overwrite_payload", "delete_payload", "clear_payload", "batch",
})  # fmt: skip


# ---------------------------------------------------------------------- config


def created(given: dict[str, Any] | None) -> dict[str, Any]:
    """The strict mode config of a new collection: Qdrant's default updated with the
    request's (toc/create_collection.rs)."""
    return merged(DEFAULT, given)


def merged(current: dict[str, Any] | None, diff: dict[str, Any] | None) -> dict[str, Any]:
    """``current`` with every non-null field of ``diff`` replacing its own (config_diff.rs
    ``DiffConfig<StrictModeConfig>``: null means unchanged, so a limit cannot be
    unset; the two maps are replaced whole). Nulls are left out, as Qdrant reports."""
    out = dict(current or {})
    for key, value in (diff or {}).items():
        if value is None:
            continue
        if key in ("multivector_config", "sparse_config"):
            value = {name: {k: v for k, v in value[name].items() if v is not None} for name in sorted(value)}
        out[key] = value
    return {key: out[key] for key in FIELDS if key in out}


def active(collection_config: dict[str, Any]) -> dict[str, Any] | None:
    """The collection's strict mode config when it is enabled, else None."""
    config = collection_config.get("strict_mode_config")
    return config if config and config.get("enabled") else None


# ------------------------------------------------------------------ unindexed keys

# Qdrant's FieldIndexType, each with the index type it names in an error
# (problems/unindexed_field.rs; PayloadFieldSchema's Display).
_SCHEMA_NAMES = {
    "int_match": "integer", "int_range": "integer", "keyword": "keyword", "float_range": "float", "text": "text",
    "text_phrase": "text (with phrase_matching: true)", "bool": "bool", "uuid_match": "uuid", "uuid_range": "uuid",
    "datetime": "datetime", "geo": "geo",
}  # fmt: skip
_ANY_INDEX = tuple(_SCHEMA_NAMES)
_UUID = re.compile(
    r"(?:urn:uuid:)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}|[0-9a-fA-F]{32}"
)  # what the uuid crate's parse_str takes


def capabilities(entry: dict[str, Any]) -> set[str]:
    """What a payload index (a ``payload_schema`` entry) can serve (schema_capabilities)."""
    kind, params = entry["data_type"], entry.get("params") or {}
    if kind == "integer":
        return {name for name, on in (("int_match", params.get("lookup", True) is not False),
                                      ("int_range", params.get("range", True) is not False)) if on}
    if kind == "text":
        return {"text", "text_phrase"} if params.get("phrase_matching") else {"text"}
    return {"keyword": {"keyword"}, "float": {"float_range"}, "bool": {"bool"}, "geo": {"geo"},
            "datetime": {"datetime"}, "uuid": {"uuid_match", "uuid_range"}}.get(kind, set())


def _strings_index(values: list) -> list[str]:
    return (["uuid_match"] if all(_UUID.fullmatch(v) for v in values) else []) + ["keyword"]


def _match_index(match: dict[str, Any]) -> list[str]:
    if "value" in match:
        value = match["value"]
        if isinstance(value, bool):
            return ["bool"]
        if isinstance(value, int):
            return ["int_match"]
        return _strings_index([value])
    if "text" in match or "text_any" in match:
        return ["text"]
    if "phrase" in match:
        return ["text_phrase"]
    values = match.get("any", match.get("except")) or []
    if values and not isinstance(values[0], str):
        return ["int_match"]
    return _strings_index(values)  # an empty list reads as strings, as serde's untagged enum does


def _field_index(condition: dict[str, Any]) -> list[str]:
    """infer_index_from_field_condition: the index types any of which serves it."""
    needed: list[str] = []
    if condition.get("match") is not None:
        needed += _match_index(condition["match"])
    bounds = condition.get("range")
    if bounds is not None:
        is_datetime = any(isinstance(v, str) for v in bounds.values())
        needed += ["datetime"] if is_datetime else ["float_range", "int_range"]
    if any(condition.get(k) is not None for k in ("geo_bounding_box", "geo_radius", "geo_polygon")):
        needed.append("geo")
    if any(condition.get(k) is not None for k in ("values_count", "is_empty", "is_null")):
        needed += _ANY_INDEX
    return needed


def _conditions(flt: dict[str, Any]) -> list[dict[str, Any]]:
    """Filter::iter_conditions: must, must_not, should, then min_should's."""
    out = [*(flt.get("must") or []), *(flt.get("must_not") or []), *(flt.get("should") or [])]
    return out + list((flt.get("min_should") or {}).get("conditions") or [])


def _join(prefix: str | None, key: str) -> str:
    """The full key, canonical as payload index names are (JsonPath::extend_or_new)."""
    return canonical(key if prefix is None else f"{prefix}.{key}")


class _Unindexed:
    """problems/unindexed_field.rs ``Extractor``: keys whose conditions no payload
    index can serve, each with the index types that would."""

    def __init__(self, schema: dict[str, dict[str, Any]]):
        self.schema = schema
        self.found: dict[str, list[str]] = {}

    def need(self, key: str, indexes: list[str] | tuple[str, ...]) -> None:
        try:
            key = canonical(key)
        except BadInput:
            return  # not a payload key (a formula variable that fails to parse fails later, as in Qdrant)
        entry = self.schema.get(key)
        if entry is None or not capabilities(entry) & set(indexes):
            self.found.setdefault(key, []).extend(indexes)

    def condition(self, prefix: str | None, cond: dict[str, Any]) -> None:
        if "key" in cond:
            self.need(_join(prefix, cond["key"]), _field_index(cond))
        elif isinstance(cond.get("is_empty"), dict):
            self.need(_join(prefix, cond["is_empty"]["key"]), _ANY_INDEX)
        elif isinstance(cond.get("is_null"), dict):
            self.need(_join(prefix, cond["is_null"]["key"]), _ANY_INDEX)
        elif "nested" in cond:
            key = cond["nested"]["key"]
            # The nested key with its array marker (``a[].b``), as the index is
            # named (qdrant#7264, Qdrant 1.15.5).
            self.filter(_join(prefix, key if key.endswith("[]") else key + "[]"), cond["nested"]["filter"])
        elif "has_id" not in cond and "has_vector" not in cond:
            self.filter(prefix, cond)  # a filter as a condition

    def filter(self, prefix: str | None, flt: dict[str, Any]) -> None:
        for cond in _conditions(flt):
            self.condition(prefix, cond)

    def expression(self, expr: Any) -> None:
        """update_from_expression: payload variables need a numeric index."""
        if isinstance(expr, str):
            if not expr.startswith("$score"):
                self.need(expr, ("int_match", "int_range", "float_range"))
        elif isinstance(expr, dict):
            ((op, arg),) = expr.items() if len(expr) == 1 else ((None, None),)
            if op == "geo_distance":
                self.need(arg["to"], ("geo",))
            elif op == "datetime_key":
                self.need(arg, ("datetime",))
            elif op in ("mult", "sum"):
                for item in arg:
                    self.expression(item)
            elif op in ("neg", "abs", "sqrt", "exp", "log10", "ln"):
                self.expression(arg)
            elif op in ("div", "pow"):
                for part in ("left", "right") if op == "div" else ("base", "exponent"):
                    self.expression(arg[part])
            elif op in ("lin_decay", "exp_decay", "gauss_decay"):
                self.expression(arg["x"])
                if arg.get("target") is not None:
                    self.expression(arg["target"])
            elif op != "datetime":
                self.condition(None, expr)

    def first(self) -> tuple[str, list[str]] | None:
        """The first key found, with its index types named as Qdrant lists them
        (sorted, without repeats)."""
        for key, indexes in self.found.items():
            return key, sorted({_SCHEMA_NAMES[i] for i in indexes})
        return None


def unindexed_key(flt: dict[str, Any], schema: dict[str, dict[str, Any]]) -> tuple[str, list[str]] | None:
    """The first key of ``flt`` that needs a payload index it lacks, and the index
    types that would serve it (Collection::one_unindexed_key: the top-level
    conditions in turn, stopping at the first that has one)."""
    extractor = _Unindexed(schema)
    for cond in _conditions(flt):
        extractor.condition(None, cond)
        if extractor.found:
            break
    return extractor.first()


def conditions_count(flt: dict[str, Any]) -> int:
    """Filter::total_conditions_count: a nested filter or a filter as a condition
    counts its own conditions, every other condition 1."""
    total = 0
    for cond in _conditions(flt):
        if "nested" in cond:
            total += conditions_count(cond["nested"]["filter"])
        elif "key" in cond or "has_id" in cond or "has_vector" in cond or _is_key_condition(cond):
            total += 1
        else:
            total += conditions_count(cond)
    return total


def condition_size(flt: dict[str, Any]) -> int:
    """Filter::max_condition_input_size: the most values one condition lists
    (``match.any``/``except`` and ``has_id``, without repeats)."""
    sizes = [0]
    for cond in _conditions(flt):
        if "key" in cond:
            match = cond.get("match") or {}
            values = match.get("any", match.get("except"))
            sizes.append(len(set(values)) if isinstance(values, list) else 0)
        elif "has_id" in cond:
            sizes.append(len(set(map(str, cond["has_id"]))))
        elif "nested" in cond:
            sizes.append(condition_size(cond["nested"]["filter"]))
        elif not _is_key_condition(cond) and "has_vector" not in cond:
            sizes.append(condition_size(cond))
    return max(sizes)


def _is_key_condition(cond: dict[str, Any]) -> bool:
    return isinstance(cond.get("is_empty"), dict) or isinstance(cond.get("is_null"), dict)


# ----------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Facts:
    """What the shards know: the payload indexes (``payload_schema``, any shard's:
    every shard has the same ones) and the collection's point count."""

    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    points_count: int = 0
    payload_bytes: int = 0  # the collection's payloads as JSON: its payload storage size


def needs(collection_config: dict[str, Any], kind: str) -> tuple[bool, bool]:
    """(payload indexes, point count): whether ``verify`` needs them for ``kind``."""
    strict = active(collection_config) or {}
    schema = (kind in READS and kind != "retrieve" and strict.get("unindexed_filtering_retrieve") is False
              or kind in _FILTERED_WRITES and strict.get("unindexed_filtering_update") is False
              or kind == "create_index" and strict.get("max_payload_index_count") is not None
              or kind in ("query", "query_batch", "query_groups") and strict.get("search_allow_exact") is False
              and _some_graph_off(collection_config))
    sizes = any(strict.get(k) is not None for k in
                ("max_points_count", "max_collection_vector_size_bytes", "max_collection_payload_size_bytes"))
    payload = strict.get("max_collection_payload_size_bytes") is not None
    return schema, (sizes and kind in ("upsert", "update_vectors", "batch")
                    or payload and kind in ("set_payload", "overwrite_payload"))


def _some_graph_off(collection_config: dict[str, Any]) -> bool:
    """Whether any dense vector has ``m`` = 0 (then a full scan check reads the indexes)."""
    vectors = collection_config["params"]["vectors"]
    common = (collection_config.get("hnsw_config") or {}).get("m", 16)
    for params in [vectors] if "size" in vectors else vectors.values():
        own = (params.get("hnsw_config") or {}).get("m")
        if (own if own is not None else common) == 0:
            return True
    return False


def verify(collection_config: dict[str, Any], kind: str, body: dict[str, Any], facts: Facts = Facts(),
           timeout: int | None = None) -> None:
    """Raise Qdrant's strict mode error for this request, or return. ``timeout`` is
    a read's ``timeout`` parameter (writes pass none, as Qdrant does)."""
    strict = active(collection_config)
    if strict is None:
        return
    check = _Checks(strict, facts, collection_config)
    _KINDS[kind](check, body)
    if timeout is not None:
        _limit(timeout, strict.get("max_timeout"), "timeout")


def _limit(value: int | float | None, limit: int | float | None, name: str) -> None:
    """check_limit_opt."""
    if value is not None and limit is not None and value > limit:
        shown = [rust_display_float(float(v)) if isinstance(v, float) else v for v in (value, limit)]
        raise BadRequest(errors.strict_limit_exceeded(shown[0], shown[1], name))


@dataclass
class _Checks:
    strict: dict[str, Any]
    facts: Facts
    collection_config: dict[str, Any]

    def item(self, limit: int | None = None, read_filter: dict | None = None, write_filter: dict | None = None,
             exact: bool | None = None, params: dict | None = None) -> None:
        """StrictModeVerification::check_strict_mode after the kind's own checks."""
        _limit(limit, self.strict.get("max_query_limit"), "limit")
        self.filter(read_filter, self.strict.get("unindexed_filtering_retrieve"))
        self.filter(write_filter, self.strict.get("unindexed_filtering_update"))
        self.exact(exact)
        if params is not None:  # SearchParams' own check: oversampling, hnsw_ef, exact
            _limit((params.get("quantization") or {}).get("oversampling"), self.strict.get("search_max_oversampling"),
                   "oversampling")
            _limit(params.get("hnsw_ef"), self.strict.get("search_max_hnsw_ef"), "hnsw_ef")
            self.exact(params.get("exact") or False)

    def exact(self, exact: bool | None) -> None:
        if self.strict.get("search_allow_exact") is False and exact:
            raise BadRequest(errors.strict_disabled("Exact search", "exact"))

    def filter(self, flt: dict | None, allow_unindexed: bool | None) -> None:
        if flt is None:
            return
        if allow_unindexed is False:
            found = unindexed_key(flt, self.facts.schema)
            if found is not None:
                raise BadRequest(errors.strict_unindexed(*found))
        limit = self.strict.get("filter_max_conditions")
        if limit is not None and conditions_count(flt) > limit:
            raise BadRequest(errors.strict_filter_conditions(conditions_count(flt), limit))
        limit = self.strict.get("condition_max_size")
        if limit is not None and condition_size(flt) > limit:
            raise BadRequest(errors.strict_condition_size(condition_size(flt), limit))

    def formula(self, query: Any) -> None:
        if self.strict.get("unindexed_filtering_retrieve") is False and isinstance(query, dict) and "formula" in query:
            extractor = _Unindexed(self.facts.schema)
            extractor.expression(query["formula"])
            found = extractor.first()
            if found is not None:
                raise BadRequest(errors.strict_unindexed(*found, what="formula expression"))

    def full_scan(self, query: Any, using: str | None, flt: dict | None) -> None:
        """query.rs check_fullscan: with ``search_allow_exact: false``, a vector query
        (not fusion, order_by, formula or sample) on a dense vector whose HNSW graph
        is off (``m`` = 0) needs a filter on a tenant key, and ``payload_m`` > 0."""
        if self.strict.get("search_allow_exact") is not False or query is None:
            return
        if isinstance(query, dict) and any(k in query for k in ("fusion", "order_by", "formula", "sample")):
            return
        using = using or ""
        params = self.collection_config["params"]
        if using in (params.get("sparse_vectors") or {}):
            return  # sparse vectors are always indexed
        vectors = params["vectors"]
        own = ((vectors if "size" in vectors else {}) if using == "" else vectors.get(using) or {}).get("hnsw_config")
        own, common = own or {}, self.collection_config.get("hnsw_config") or {}
        m = own["m"] if own.get("m") is not None else common.get("m", 16)
        if m > 0:
            return
        payload_m = next((v for v in (own.get("payload_m"), common.get("payload_m")) if v is not None), m)
        tenant = any(_is_tenant(self.facts.schema.get(canonical(key)))
                     for key in map(_targeted_key, _conditions(flt or {})) if key is not None)
        if not tenant or payload_m == 0:
            raise BadRequest(errors.strict_full_scan(using, payload_m_too=tenant))

    def group_by(self, key: str) -> None:
        """check_grouping_field: the group_by key needs an index that matches values."""
        if self.strict.get("unindexed_filtering_retrieve") is not False:
            return
        entry = self.facts.schema.get(canonical(key))
        if entry is None:
            raise BadRequest(errors.strict_group_by_unindexed(key))
        kind, params = entry["data_type"], entry.get("params")
        matches = kind in ("keyword", "uuid", "bool") or kind == "integer" and (
            params is None or params.get("lookup") is True)  # Qdrant asks lookup == Some(true) of params
        if not matches:
            raise BadRequest(errors.strict_group_by_kind(kind.capitalize(), key))

    def sizes(self) -> None:
        """check_collection_size_limit: refused once the collection has reached a
        limit (not when this request would pass it), as Qdrant checks."""
        limit = self.strict.get("max_collection_vector_size_bytes")
        if limit is not None and vector_storage_bytes(self.collection_config, self.facts.points_count) >= limit:
            raise BadRequest(errors.strict_vector_storage(_megabytes(limit)))
        self.payload_size()
        limit = self.strict.get("max_points_count")
        if limit is not None and self.facts.points_count >= limit:
            raise BadRequest(errors.strict_points_count(limit))

    def payload_size(self) -> None:
        """check_collection_payload_size_limit: the payloads' size, measured as their
        JSON bytes (Qdrant measures its payload storage's files)."""
        limit = self.strict.get("max_collection_payload_size_bytes")
        if limit is not None and self.facts.payload_bytes >= limit:
            raise BadRequest(errors.strict_payload_storage(_megabytes(limit)))

    def vectors(self, points: list[dict[str, Any]]) -> None:
        """Multivector lengths, then sparse vector lengths (update.rs), of each
        point's vectors by name."""
        multi = {n: c["max_vectors"] for n, c in (self.strict.get("multivector_config") or {}).items()
                 if c.get("max_vectors") is not None}
        for name, vector in ((n, v) for named in points for n, v in named.items()):
            if _is_multi(vector) and name in multi and len(vector) > multi[name]:
                raise BadRequest(errors.strict_multivector_length(name, multi[name], len(vector)))
        sparse = {n: c["max_length"] for n, c in (self.strict.get("sparse_config") or {}).items()
                  if c.get("max_length") is not None}
        for name, vector in ((n, v) for named in points for n, v in named.items()):
            if isinstance(vector, dict) and "indices" in vector and name in sparse:
                given = len(vector["indices"])
                if given > sparse[name] or len(vector.get("values") or ()) > sparse[name]:
                    raise BadRequest(errors.strict_sparse_length(name, sparse[name], given))


def _targeted_key(cond: dict[str, Any]) -> str | None:
    """Condition::targeted_key: the payload key a condition reads first."""
    if "key" in cond:
        return cond["key"]
    if _is_key_condition(cond):
        return (cond.get("is_empty") or cond.get("is_null"))["key"]
    if "nested" in cond:
        key = cond["nested"]["key"]
        return key if key.endswith("[]") else key + "[]"
    if "has_id" in cond or "has_vector" in cond:
        return None
    return next((k for k in map(_targeted_key, _conditions(cond)) if k is not None), None)


def _is_tenant(entry: dict[str, Any] | None) -> bool:
    """A keyword or uuid index with ``is_tenant`` (tenant_optimization)."""
    return bool(entry and entry["data_type"] in ("keyword", "uuid") and (entry.get("params") or {}).get("is_tenant"))


def vector_storage_bytes(collection_config: dict[str, Any], points_count: int) -> int:
    """The dense vectors' size, as if every point held every dense vector (Qdrant
    sums its segments' vector storages; Shoal estimates from the point count)."""
    vectors = collection_config["params"]["vectors"]
    params = [vectors] if "size" in vectors else list(vectors.values())
    element = {"float32": 4, "float16": 2, "uint8": 1}
    return points_count * sum(p["size"] * element.get(p.get("datatype") or "float32", 4) for p in params)


def _is_multi(vector: Any) -> bool:
    return isinstance(vector, list) and bool(vector) and isinstance(vector[0], list)


def _named(vector: Any) -> dict[str, Any]:
    """A point's vectors by name; an unnamed multivector is the default (``""``)."""
    if isinstance(vector, dict) and "indices" not in vector:
        return vector
    return {"": vector} if _is_multi(vector) else {}


# -- the request kinds: what each checks, in Qdrant's order.


def _search(c: _Checks, body: dict) -> None:
    c.item(limit=body.get("limit"), read_filter=body.get("filter"), params=body.get("params"))


def _groups(c: _Checks, body: dict) -> None:
    c.item(limit=body["limit"] * body["group_size"], read_filter=body.get("filter"), params=body.get("params"))


def _query(c: _Checks, body: dict, nested: bool = False) -> None:
    """CollectionQueryRequest and CollectionPrefetch (``nested``): the prefetches
    (each in full), a full scan, the formula, then the request's own checks
    (limit default 10)."""
    for prefetch in body.get("prefetch") or []:
        _query(c, prefetch, nested=True)
    if nested or not body.get("prefetch"):  # a request that rescores its prefetches scans nothing itself
        c.full_scan(body.get("query"), body.get("using"), body.get("filter"))
    c.formula(body.get("query"))
    c.item(limit=body.get("limit") or DEFAULT_LIMIT, read_filter=body.get("filter"), params=body.get("params"))


def _query_groups(c: _Checks, body: dict) -> None:
    """CollectionQueryGroupsRequest: its prefetches go unchecked in Qdrant 1.15
    (qdrant#10520), and so here."""
    if not body.get("prefetch"):
        c.full_scan(body.get("query"), body.get("using"), body.get("filter"))
    c.formula(body.get("query"))
    c.group_by(body["group_by"])
    limit = (body.get("limit") or DEFAULT_LIMIT) * (body.get("group_size") or DEFAULT_GROUP_SIZE)
    c.item(limit=limit, read_filter=body.get("filter"), params=body.get("params"))


def _matrix(c: _Checks, body: dict) -> None:
    """SearchMatrixRequestInternal: limit x sample of those given (no defaults)."""
    given = [v for v in (body.get("limit"), body.get("sample")) if v is not None]
    c.item(limit=math.prod(given) if given else None, read_filter=body.get("filter"))


def _upsert(c: _Checks, body: dict) -> None:
    batch = body.get("batch")
    _limit(len(batch["ids"]) if batch is not None else len(body["points"]), c.strict.get("upsert_max_batchsize"),
           "upsert limit")
    c.sizes()
    if batch is None:
        c.vectors([_named(point.get("vector")) for point in body["points"]])
    elif isinstance(batch["vectors"], dict):
        c.vectors([{name: vector} for name, column in batch["vectors"].items() for vector in column])
    else:
        c.vectors([_named(vector) for vector in batch["vectors"]])


def _update_vectors(c: _Checks, body: dict) -> None:
    _limit(len(body["points"]), c.strict.get("upsert_max_batchsize"), "update limit")
    c.sizes()
    c.vectors([_named(point["vector"]) for point in body["points"]])


def _by_filter(c: _Checks, body: dict) -> None:
    c.item(write_filter=body.get("filter"))


def _set_payload(c: _Checks, body: dict) -> None:
    """SetPayload's check_custom (the payload storage size), then its filter."""
    c.payload_size()
    _by_filter(c, body)


def _megabytes(limit: int) -> str:
    """A limit in MiB as Rust displays an f32 (240 bytes: "0.00022888184")."""
    return np.format_float_positional(np.float32(limit / (1024 * 1024)), trim="-")


def _batch(c: _Checks, body: dict) -> None:
    for operation in body["operations"]:
        ((kind, data),) = operation.items()
        _KINDS[kind](c, data)  # "delete" is delete_points


def _create_index(c: _Checks, body: dict) -> None:
    limit = c.strict.get("max_payload_index_count")
    if limit is not None and len(c.facts.schema) >= limit:
        raise BadRequest(errors.strict_payload_index_count(limit))


def _nothing(c: _Checks, body: dict) -> None:
    pass


_KINDS = {
    "search": _search, "recommend": _search, "discover": _search,
    "search_batch": lambda c, b: [_search(c, s) for s in b["searches"]],
    "recommend_batch": lambda c, b: [_search(c, s) for s in b["searches"]],
    "discover_batch": lambda c, b: [_search(c, s) for s in b["searches"]],
    "query": _query, "query_batch": lambda c, b: [_query(c, s) for s in b["searches"]],
    "search_groups": _groups, "recommend_groups": _groups, "query_groups": _query_groups, "matrix": _matrix,
    "scroll": lambda c, b: c.item(limit=b.get("limit"), read_filter=b.get("filter")),
    "count": lambda c, b: c.item(read_filter=b.get("filter"), exact=b.get("exact", True)),
    "facet": lambda c, b: c.item(limit=b.get("limit"), read_filter=b.get("filter"), exact=b.get("exact")),
    "retrieve": _nothing, "delete_index": _nothing,
    "upsert": _upsert, "update_vectors": _update_vectors, "delete_points": _by_filter, "delete": _by_filter,
    "clear_payload": _by_filter,
    "delete_vectors": _by_filter, "set_payload": _set_payload, "overwrite_payload": _set_payload,
    "delete_payload": _by_filter, "batch": _batch, "create_index": _create_index,
}  # fmt: skip
