"""Payloads by offset, the payload indexes over them, and the reads built on them:
with_payload projection, facets and scroll ``order_by`` values.

Write semantics are Qdrant's server ones (``Payload::merge``, ``JsonPath::value_set``,
``JsonPath::value_remove``), which differ from qdrant-client's local mode: ``set_payload``
deletes keys whose new value is null, and ``delete_payload`` follows key paths.

Stored payloads are private copies: callers may keep or reuse what they pass in, and
must treat what ``get`` returns as read-only (it is the stored dict, not a copy, so that
reading 100k payloads costs nothing).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson

from shard import json_path
from shard.json_path import JsonPath
from shard.payload_index import make_index
from shard.payload_index.base import FieldIndex
from shard.payload_index.values import parse_datetime
from shard.types import BadInput, OrderBy, PayloadSelector

_EMPTY: dict = {}

# How each index type's params serialise in collection info, as Qdrant's serde derives
# do (lib/segment/src/data_types/index.rs): "null" fields are always written (null when
# unset), "skip" fields only when set; text's tokenizer defaults to "word".
_PARAM_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "keyword": (("is_tenant", "skip"), ("on_disk", "skip")),
    "integer": (("lookup", "null"), ("range", "null"), ("is_principal", "null"), ("on_disk", "skip")),
    "float": (("is_principal", "null"), ("on_disk", "skip")),
    "geo": (("on_disk", "skip"),),
    "text": (
        ("tokenizer", "word"),
        ("min_token_len", "skip"),
        ("max_token_len", "skip"),
        ("lowercase", "skip"),
        ("phrase_matching", "skip"),
        ("stopwords", "skip"),
        ("on_disk", "skip"),
        ("stemmer", "skip"),
    ),
    "bool": (("on_disk", "skip"),),
    "datetime": (("is_principal", "null"), ("on_disk", "skip")),
    "uuid": (("is_tenant", "skip"), ("on_disk", "skip")),
}
_TOKENIZERS = ("prefix", "whitespace", "word", "multilingual")
_FACET_TYPES = "keyword, integer, uuid, bool"


def normalize_schema(schema: str | dict) -> tuple[str, dict | None]:
    """``(data_type, params)`` of a REST field schema: a type name, or a params object
    with ``type``. Params come back in the shape Qdrant reports them."""
    if isinstance(schema, str):
        kind, params = schema, None
    elif isinstance(schema, dict) and isinstance(schema.get("type"), str):
        kind, params = schema["type"], schema
    else:
        raise BadInput(f"Invalid field schema: {schema!r}")
    if kind not in _PARAM_FIELDS:
        raise BadInput(f"Unknown payload schema type: {kind!r}")
    if params is None:
        return kind, None
    out: dict[str, Any] = {"type": kind}
    for name, rule in _PARAM_FIELDS[kind]:
        value = params.get(name)
        if value is not None:
            out[name] = value
        elif rule == "null":
            out[name] = None
        elif rule != "skip":
            out[name] = rule
    if kind == "integer" and out["lookup"] is False and out["range"] is False:
        raise BadInput(
            "Validation error in body: [lookup: the 'lookup' and 'range' capabilities can't be both disabled]"
        )
    if kind == "text" and out["tokenizer"] not in _TOKENIZERS:
        raise BadInput(f"Unknown tokenizer type: {out['tokenizer']!r}")
    return kind, out


def _copy(payload: dict) -> dict:
    """A deep copy of a JSON object (orjson round trip; deepcopy for what orjson refuses,
    such as integers beyond 64 bits)."""
    try:
        return orjson.loads(orjson.dumps(payload))
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(payload)


class PayloadStore:
    """Payloads by offset, plus the payload indexes."""

    def __init__(self) -> None:
        self._payloads: list[dict | None] = []
        self._indexes: dict[str, FieldIndex] = {}
        self._schemas: dict[str, tuple[str, dict | None]] = {}
        self._sizes = np.zeros(0, dtype=np.int64)  # by offset: its payload's JSON bytes, when last measured
        self._nbytes = 0  # their sum
        self._unsized: set[int] | None = None  # offsets changed since; None: nothing measured yet

    # ------------------------------------------------------------------ payloads

    def get(self, offset: int) -> dict:
        """The payload at ``offset`` ({} when none). Read-only: it is the stored dict."""
        if offset < len(self._payloads):
            return self._payloads[offset] or _EMPTY
        return _EMPTY

    def payload_list(self) -> list[dict | None]:
        """The stored payloads by offset (None: no point), for scans. Read-only."""
        return self._payloads

    def _store(self, offset: int, payload: dict | None) -> None:
        if offset >= len(self._payloads):
            self._payloads.extend([None] * (offset + 1 - len(self._payloads)))
        self._payloads[offset] = payload
        if self._unsized is not None:
            self._unsized.add(offset)
        for index in self._indexes.values():
            index.set(offset, payload)

    def set(self, offset: int, payload: dict | None) -> None:
        """Replace the whole payload (upsert, overwrite_payload)."""
        self._store(offset, _copy(payload) if payload else {})

    def merge(self, offset: int, payload: dict, key: str | None = None) -> None:
        """set_payload: merge ``payload`` into the point's, at ``key`` when given."""
        path = json_path.parse(key) if key is not None else None
        current = _copy(self.get(offset))
        json_path.value_set(current, path, _copy(payload))
        self._store(offset, current)

    def delete_keys(self, offset: int, keys: list[str]) -> None:
        """delete_payload: remove every key path of ``keys``."""
        paths = [json_path.parse(k) for k in keys]
        current = _copy(self.get(offset))
        for path in paths:
            json_path.value_remove(current, path)
        self._store(offset, current)

    def clear(self, offset: int) -> None:
        self._store(offset, {})

    def remove(self, offset: int) -> None:
        """The point is gone: drop its payload and its index entries."""
        if offset < len(self._payloads):
            self._payloads[offset] = None
            if self._unsized is not None:
                self._unsized.add(offset)
        for index in self._indexes.values():
            index.remove(offset)

    @property
    def nbytes(self) -> int:
        """The payloads' JSON bytes in all: strict mode's payload storage size.
        Measured when asked (strict mode's limit is its only reader), then kept:
        a later call serialises only the payloads changed since, and writes cost
        nothing until a first call."""
        if self._unsized is None:
            self._sizes = np.array([len(orjson.dumps(p)) if p else 0 for p in self._payloads], dtype=np.int64)
            self._nbytes, self._unsized = int(self._sizes.sum()), set()
        elif self._unsized:
            if len(self._sizes) < len(self._payloads):
                self._sizes = np.concatenate([self._sizes, np.zeros(len(self._payloads) - len(self._sizes), dtype=np.int64)])
            for offset in self._unsized:
                payload = self._payloads[offset]
                size = len(orjson.dumps(payload)) if payload else 0
                self._nbytes += size - int(self._sizes[offset])
                self._sizes[offset] = size
            self._unsized = set()
        return self._nbytes

    # ------------------------------------------------------------------- indexes

    def check_index_schema(self, field: str, schema: str | dict) -> None:
        """Raise BadInput when ``create_index(field, schema)`` would be refused."""
        json_path.parse(field)
        normalize_schema(schema)

    def create_index(self, field: str, schema: str | dict, _state: dict | None = None) -> None:
        """Index ``field``; an index on the same key with another schema is replaced."""
        name = json_path.canonical(field)
        kind, params = normalize_schema(schema)
        if self._schemas.get(name) == (kind, params):
            return
        index = make_index(json_path.parse(name), kind, params)
        if _state is None:
            index.build(self._payloads)
        else:
            index.restore(_state)
        self._indexes[name] = index
        self._schemas[name] = (kind, params)

    def delete_index(self, field: str) -> None:
        name = json_path.canonical(field)
        self._indexes.pop(name, None)
        self._schemas.pop(name, None)

    def index_for(self, field: str | JsonPath) -> FieldIndex | None:
        if not self._indexes:
            return None
        return self._indexes.get(json_path.canonical(field))

    def indexes(self) -> dict[str, FieldIndex]:
        return dict(self._indexes)

    def payload_schema(self) -> dict[str, dict[str, Any]]:
        """Collection info's ``payload_schema``: ``{field: {data_type, params?, points}}``."""
        out = {}
        for name, (kind, params) in self._schemas.items():
            info: dict[str, Any] = {"data_type": kind}
            if params is not None:
                info["params"] = dict(params)
            info["points"] = self._indexes[name].points_count()
            out[name] = info
        return out

    # -------------------------------------------------------------------- state

    def to_state(self) -> dict:
        """Plain JSON data (orjson-ready): the payloads, shared rather than copied, and
        each index with its contents, so that loading needs no payload scan."""
        return {
            "payloads": self._payloads,
            "indexes": [
                [name, kind, params, self._indexes[name].dump()] for name, (kind, params) in self._schemas.items()
            ],
        }

    @classmethod
    def from_state(cls, state: dict) -> PayloadStore:
        store = cls()
        store._payloads = list(state.get("payloads") or [])
        for entry in state.get("indexes") or []:
            name, kind, params = entry[:3]
            store.create_index(name, params if params is not None else kind, entry[3] if len(entry) > 3 else None)
        return store


# ------------------------------------------------------------------------ reads


def select_payload(payload: dict, selector: PayloadSelector | None) -> dict | None:
    """with_payload: None when no payload is wanted; else the payload narrowed to the
    selector's include paths, then without its exclude paths (Qdrant's
    ``PayloadSelector::process``). Includes keep a node whose path and an include path
    agree on their common prefix; arrays are walked as ``[]``, so ``a.b`` does not reach
    into an array at ``a`` (``a[].b`` does)."""
    if selector is None:
        return None
    out = payload
    if selector.include is not None:
        patterns = [json_path.parse(p) for p in selector.include]
        out = json_path.value_filter(out, lambda path: any(json_path.check_include_pattern(path, p) for p in patterns))
    if selector.exclude is not None:
        patterns = [json_path.parse(p) for p in selector.exclude]
        out = json_path.value_filter(
            out, lambda path: not any(json_path.check_exclude_pattern(p, path) for p in patterns)
        )
    return dict(out) if out is payload else out


def facet(store: PayloadStore, offsets: np.ndarray, key: str, limit: int) -> list[tuple[Any, int]]:
    """Values of ``key`` among ``offsets`` with how many points hold each, by count
    descending then value ascending, at most ``limit``. Needs a keyword, integer (with
    lookup), uuid or bool index, as Qdrant's facet does."""
    index = store.index_for(key)
    if index is None or not index.facetable:
        raise BadInput(
            f"No appropriate index for faceting: `{json_path.canonical(key)}`. Please create one to facet "
            "on this field. Check https://qdrant.tech/documentation/concepts/indexing/#payload-index "
            "to see which payload schemas support Match conditions"
        )
    hits = index.facet_values(np.asarray(offsets, np.int64))
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits[:limit]


def _range_index(store: PayloadStore, key: str) -> FieldIndex:
    index = store.index_for(key)
    if index is None or not index.orderable:
        raise BadInput(
            f"No range index for `order_by` key: `{json_path.canonical(key)}`. Please create one to use "
            "`order_by`. Check https://qdrant.tech/documentation/concepts/indexing/#payload-index to "
            "see which payload schemas support Range conditions"
        )
    return index


def order_values(
    store: PayloadStore, offsets: np.ndarray, order_by: OrderBy | str, limit: int | None = None
) -> list[tuple[int, int | float]]:
    """scroll ``order_by``: ``(offset, order_value)`` pairs of the given offsets, one per
    indexed value (a point with several values appears once per value, as in Qdrant),
    sorted in the requested direction from ``start_from``; ties by offset. Order values
    are ints for integer and datetime (microseconds) indexes, floats for float ones.
    Needs an integer (with range), float or datetime index."""
    if isinstance(order_by, str):
        order_by = OrderBy(order_by)
    index = _range_index(store, order_by.key)
    offs, vals = index.col.pairs(np.asarray(offsets, np.int64))
    start = order_by.start_from
    if isinstance(start, str):
        start = parse_datetime(start)
        if start is None:
            raise BadInput(f"'{order_by.start_from}' does not match accepted datetime format (RFC3339)")
    desc = order_by.direction == "desc"
    if start is not None:
        keep = vals <= start if desc else vals >= start
        offs, vals = offs[keep], vals[keep]
    order = np.lexsort((offs, -vals if desc else vals))
    if limit is not None:
        order = order[:limit]
    return list(zip(offs[order].tolist(), vals[order].tolist()))
