"""REST request bodies → the engine's types (``shard.types``), in one place.

Every function here takes a validated request body as a JSON-shaped dict
(Qdrant's field names) and returns engine values; no engine type leaks the REST
shape and no route builds engine values by hand.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from cluster.placement import split_by_shard
from gateway import errors, strict
from shard import multi as multi_store
from shard import sparse as sparse_store
from shard.types import (
    DEFAULT_VECTOR,
    BadInput,
    HnswConfig,
    OptimizersConfig,
    OrderBy,
    PayloadSelector,
    Record,
    ShardConfig,
    VectorSelector,
)

QDRANT_DEFAULT_WAL = {"wal_capacity_mb": 32, "wal_segments_ahead": 0}


# ----------------------------------------------------------------- collections


def collection_config(body: dict[str, Any], replication_factor: int = 1,
                      write_consistency_factor: int = 1) -> dict[str, Any]:
    """The full collection config (Qdrant's CollectionConfig JSON) a create request
    implies; the two factors are the defaults for a request that gives none
    (Qdrant's ``storage.collection`` settings)."""
    vectors = body.get("vectors")
    sparse = sparse_vectors_config(body.get("sparse_vectors"))
    if vectors is None:
        if not sparse:
            raise BadInput("Shoal needs vectors: give `vectors` or `sparse_vectors` when creating a collection")
        vectors = {}  # Qdrant's default: no dense vectors
    for name in sorted(sparse):
        if name in vectors or ("size" in vectors and name == DEFAULT_VECTOR):
            raise BadInput(errors.dense_sparse_name_clash(name))
    hnsw = HnswConfig().updated(body.get("hnsw_config")).to_json()
    optimizers = OptimizersConfig().updated(_non_null(body.get("optimizers_config"))).to_json()
    shard_number = body.get("shard_number") or 1
    return {
        "params": {
            "vectors": copy.deepcopy(vectors),
            "shard_number": shard_number,
            "replication_factor": body.get("replication_factor") or replication_factor,
            "write_consistency_factor": body.get("write_consistency_factor") or write_consistency_factor,
            "on_disk_payload": True if body.get("on_disk_payload") is None else body["on_disk_payload"],
            **({"sparse_vectors": sparse} if sparse else {}),
        },
        "hnsw_config": hnsw,
        "optimizer_config": optimizers,
        "wal_config": {**QDRANT_DEFAULT_WAL, **_non_null(body.get("wal_config"))},
        "quantization_config": body.get("quantization_config"),
        "strict_mode_config": strict.created(body.get("strict_mode_config")),
    }


def sparse_vectors_config(sparse: dict[str, Any] | None) -> dict[str, Any]:
    """A create request's ``sparse_vectors`` as Qdrant reports them (nulls left
    out, names in order: Qdrant keeps them in a BTreeMap)."""
    out = {}
    for name in sorted(sparse or {}):
        params = _non_null(sparse[name])
        if params.get("index") is not None:
            params["index"] = _non_null(params["index"])
        out[name] = params
    return out


def updated_collection_config(config: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Apply a PATCH /collections/{name} body (a diff) to a collection config.
    Sparse vectors as Qdrant's ``update_sparse_vectors_from_other``: every name
    must exist; a given ``modifier`` replaces the old one, a given ``index`` is
    merged field by field."""
    out = copy.deepcopy(config)
    sparse = body.get("sparse_vectors") or {}
    current_sparse = out["params"].get("sparse_vectors") or {}
    for name in sparse:
        if name not in current_sparse:
            raise BadInput(f"Not existing vector name error: {name}")
    for name, diff in sparse.items():
        target = current_sparse[name]
        if diff.get("modifier") is not None:
            target["modifier"] = diff["modifier"]
        if diff.get("index") is not None:
            target["index"] = {**(target.get("index") or {}), **_non_null(diff["index"])}
    if body.get("optimizers_config"):
        out["optimizer_config"].update(_non_null(body["optimizers_config"]))
    if body.get("hnsw_config"):
        out["hnsw_config"].update(_non_null(body["hnsw_config"]))
    params = body.get("params") or {}
    for key in ("replication_factor", "write_consistency_factor", "on_disk_payload", "read_fan_out_factor"):
        if params.get(key) is not None:
            out["params"][key] = params[key]
    vectors = body.get("vectors") or {}
    current = out["params"]["vectors"]
    for name, diff in vectors.items():
        target = current if "size" in current and name == DEFAULT_VECTOR else current.get(name)
        if target is None:
            raise BadInput(f"Not existing vector name error: {name}")
        if diff.get("hnsw_config"):
            target["hnsw_config"] = {**(target.get("hnsw_config") or {}), **_non_null(diff["hnsw_config"])}
        if diff.get("on_disk") is not None:
            target["on_disk"] = diff["on_disk"]
        if diff.get("quantization_config") == "Disabled":
            target.pop("quantization_config", None)
        elif diff.get("quantization_config") is not None:
            target["quantization_config"] = diff["quantization_config"]
    if body.get("quantization_config") is not None:  # "Disabled": none, as Qdrant reports it
        out["quantization_config"] = None if body["quantization_config"] == "Disabled" else body["quantization_config"]
    if body.get("strict_mode_config") is not None:
        out["strict_mode_config"] = strict.merged(out.get("strict_mode_config"), body["strict_mode_config"])
    return out


def _non_null(d: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (d or {}).items() if v is not None}


# ---------------------------------------------------------------------- points


def vector_rows(config: ShardConfig, ids: list, vectors: list, sparse: dict[str, list] | None = None,
                multi: dict[str, list] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-point vectors (a list, or a dict by name, per point) as one float32
    array per vector name plus a mask of the rows that carry it. Sparse vectors
    go into ``sparse`` instead, when given: a list by name, one entry a row
    ([u32 indices, f32 values], sorted, or None); multivectors into ``multi``,
    likewise: a (rows, size) float32 array or None per row."""
    n = len(ids)
    per_name: dict[str, list] = {name: [None] * n for name in config.vectors}
    for row, vec in enumerate(vectors):
        named = vec if isinstance(vec, dict) and not is_inference(vec) else {DEFAULT_VECTOR: vec}
        for name, value in named.items():
            if name in config.sparse and sparse is not None:
                sparse.setdefault(name, [None] * n)[row] = _sparse(value)
                continue
            if name in config.multi and multi is not None:
                multi.setdefault(name, [None] * n)[row] = _multi(value, config.multi[name].size)
                continue
            if name not in per_name:
                raise BadInput(f"Not existing vector name error: {name}")
            per_name[name][row] = _dense(value, config.vectors[name].size)
    arrays: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name, rows in per_name.items():
        mask = np.fromiter((r is not None for r in rows), dtype=bool, count=n)
        if not mask.any():
            continue
        dim = config.vectors[name].size
        array = np.zeros((n, dim), dtype=np.float32)
        with np.errstate(over="ignore"):  # a number beyond float32 becomes inf: refused below
            if mask.all():
                array[:] = rows
            else:
                array[mask] = [r for r in rows if r is not None]
        # Checked here, for the whole request, as well as by each shard: a request
        # whose points go to several shards must be refused before any shard applies.
        if not np.isfinite(array).all():
            raise BadInput("Vector contains NaN or infinite values")
        arrays[name] = array
        if not mask.all():
            masks[name] = mask
    return arrays, masks


def is_inference(value: Any) -> bool:
    """A Document, Image or InferenceObject: something for a model to embed (its
    ``model`` is a name; a named vector's value never is a string)."""
    return isinstance(value, dict) and isinstance(value.get("model"), str)


def _sparse(value: Any) -> list[np.ndarray]:
    """A sparse vector of a request (or one read back) as sorted arrays. The
    models have refused repeated indices and length mismatches already, with
    Qdrant's 422 and the vector's path; this refuses a dense vector given for a
    sparse name."""
    if not isinstance(value, dict) or "indices" not in value:
        raise BadInput(errors.wrong_sparse())
    indices, values = sparse_store.validate(value["indices"], value["values"])
    if not np.isfinite(values).all():
        raise BadInput("Vector contains NaN or infinite values")
    return [indices, values]


def _multi(value: Any, dim: int) -> np.ndarray:
    """A multivector of a request (or one read back) as a (rows, dim) float32 array.
    The models have refused malformed ones (no rows, an empty row, rows of
    different lengths) with Qdrant's 422 and the vector's path; this checks the
    rows' dimension and refuses a plain vector given for a multivector's name as
    Qdrant does: its length checked first, then "Conversion between multi and
    regular vectors failed"."""
    if isinstance(value, np.ndarray) and value.ndim == 2:  # read back (``records_upsert_ops``)
        value = value.tolist()
    if is_inference(value):
        raise errors.BadRequest(errors.no_inference())
    if isinstance(value, dict):
        raise BadInput(errors.wrong_sparse())
    if isinstance(value, np.ndarray) or not (value and isinstance(value[0], list)):
        if len(value) != dim:
            raise BadInput(errors.vector_dimension(dim, len(value)))
        raise BadInput(errors.wrong_multi())
    with np.errstate(over="ignore"):  # a number beyond float32 becomes inf: refused by validate
        return multi_store.validate(value, dim)


def _dense(value: Any, dim: int) -> list[float] | np.ndarray:
    if isinstance(value, np.ndarray):  # a stored vector, read back (``records_upsert_ops``)
        if value.ndim != 1 or len(value) != dim:
            raise BadInput(errors.vector_dimension(dim, value.shape[-1] if value.ndim else 0))
        return value
    if is_inference(value):
        raise errors.BadRequest(errors.no_inference())
    if isinstance(value, dict):
        raise BadInput(errors.wrong_sparse())
    if value and isinstance(value[0], list):
        # A multivector for a plain vector: each row's dimension is checked first (segment's
        # check_vector_against_config), then the conversion fails.
        for row in value:
            if len(row) != dim:
                raise BadInput(errors.vector_dimension(dim, len(row)))
        raise BadInput(errors.wrong_multi())
    if len(value) != dim:
        raise BadInput(f"Vector dimension error: expected dim: {dim}, got {len(value)}")
    return value


def points_of(body: dict[str, Any]) -> tuple[list, list, list | None]:
    """(ids, vectors, payloads) of an upsert body, as a list of points or as a batch."""
    if "batch" in body:
        batch = body["batch"]
        ids = batch["ids"]
        vectors = batch["vectors"]
        if isinstance(vectors, dict):
            names = list(vectors)
            for name in names:
                if len(vectors[name]) != len(ids):
                    raise BadInput("number of vectors and ids should be equal")
            vectors = [{name: vectors[name][i] for name in names} for i in range(len(ids))]
        elif len(vectors) != len(ids):
            raise BadInput("number of vectors and ids should be equal")
        payloads = batch.get("payloads")
        if payloads is not None and len(payloads) != len(ids):
            raise BadInput("number of payloads and ids should be equal")
        return ids, vectors, payloads
    points = body["points"]
    return [p["id"] for p in points], [p.get("vector") for p in points], [p.get("payload") for p in points]


def upsert_ops(config: ShardConfig, shard_count: int, body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """One upsert op per shard that receives points. Raises before returning
    anything if any point is bad, so a rejected batch stores nothing."""
    ids, vectors, payloads = points_of(body)
    for vec in vectors:
        if vec is None:
            raise BadInput("every point needs a vector")
    return _vector_ops("upsert", config, shard_count, ids, vectors, payloads)


def records_upsert_ops(config: ShardConfig, shard_count: int, records: list[Record]) -> dict[int, dict[str, Any]]:
    """Upsert ops that store ``records`` as a shard's scroll returned them (vectors as
    float32 arrays, only the ones each point has; full payloads) in a collection of
    ``config`` over ``shard_count`` shards: how ``init_from`` writes the points it copies."""
    vectors = [r.vector if isinstance(r.vector, dict) else {} if r.vector is None else {DEFAULT_VECTOR: r.vector}
               for r in records]
    return _vector_ops("upsert", config, shard_count, [r.id for r in records], vectors,
                       [r.payload or {} for r in records])


def update_vectors_ops(config: ShardConfig, shard_count: int, body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    points = body["points"]
    return _vector_ops("update_vectors", config, shard_count, [p["id"] for p in points], [p["vector"] for p in points])


def _vector_ops(kind: str, config: ShardConfig, shard_count: int, ids: list, vectors: list, payloads: list | None = None):
    """Ops carrying vectors, one per shard that owns some of ``ids``."""
    sparse: dict[str, list] = {}
    multi: dict[str, list] = {}
    arrays, masks = vector_rows(config, ids, vectors, sparse, multi)
    ops = {}
    for shard, rows in split_by_shard(ids, shard_count).items():
        r = np.asarray(rows, dtype=np.int64)
        op = {
            "type": kind,
            "ids": [ids[i] for i in rows],
            "vectors": {n: a[r] for n, a in arrays.items()},
            "vector_mask": {n: m[r] for n, m in masks.items()},
        }
        if sparse:
            op["sparse"] = {n: [given[i] for i in rows] for n, given in sparse.items()}
        if multi:
            op["multi"] = {n: multi_store.op_entry([given[i] for i in rows], config.multi[n].size)
                           for n, given in multi.items()}
        if kind == "upsert":
            op["payloads"] = [payloads[i] for i in rows] if payloads else None
        ops[shard] = op
    return ops


def selector(body: dict[str, Any]) -> dict[str, Any]:
    """Point selection of a delete / payload / vectors request: {"ids": […]} or {"filter": {…}}."""
    if body.get("points") is not None:
        return {"ids": list(body["points"])}
    if body.get("filter") is not None:
        return {"filter": body["filter"]}
    raise BadInput("either `points` or `filter` is required")


def split_selector(op: dict[str, Any], shard_count: int) -> dict[int, dict[str, Any]]:
    """An op addressed by ids goes to the shards owning them; by filter, to all."""
    if "ids" not in op:
        return {i: op for i in range(shard_count)}
    ids = op["ids"]
    return {shard: {**op, "ids": [ids[i] for i in rows]} for shard, rows in split_by_shard(ids, shard_count).items()}


# ---------------------------------------------------------------------- reads


def payload_selector(value: Any, default: bool) -> PayloadSelector | None:
    """with_payload: bool | [keys] | {"include": …} | {"exclude": …} → selector or None."""
    if value is None:
        value = default
    if value is True:
        return PayloadSelector()
    if value is False:
        return None
    if isinstance(value, list):
        return PayloadSelector(include=tuple(value))
    if isinstance(value, dict):
        if "include" in value:
            return PayloadSelector(include=tuple(value["include"]))
        if "exclude" in value:
            return PayloadSelector(exclude=tuple(value["exclude"]))
    raise BadInput(f"bad with_payload value {value!r}")


def vector_selector(value: Any, default: bool = False) -> VectorSelector:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return tuple(value)


def order_by(value) -> OrderBy | None:
    """Scroll's ``order_by``: a key, or {key, direction, start_from}."""
    if value is None:
        return None
    if isinstance(value, str):
        return OrderBy(key=value)
    start = value.get("start_from")
    return OrderBy(key=value["key"], direction=value.get("direction") or "asc", start_from=start)
