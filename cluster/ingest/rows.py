"""A part's rows, checked as the REST path checks a point, and made into upsert ops.

A row is (id, vector, payload) in JSON shapes. What the gateway refuses for a whole
batch is refused here for the row alone, which goes to the reject file with the
reason, while its neighbours load: an id that is neither an unsigned 64-bit integer
nor a UUID (the forms Qdrant's uuid crate parses, made canonical), a vector of the
wrong dimension or holding NaN or an infinity, a vector name the collection lacks, a
payload that is not a JSON object. Cosine vectors are sent as given: the shard
normalises them when it stores them, as for a REST upsert (``shard.vectors``).
A multivector (a vector with a ``multivector_config``) is a list of rows, checked
as ``shard.multi.validate`` checks one; it travels in the op's "multi" entry.

A columnar source (``.npy``, a Parquet list column of one length) gives its part's
vectors as one block: a row then carries ``IN_BLOCK`` for its vector, the block is
checked at once (one dimension, one ``np.isfinite`` over it) and each shard gets
its rows of the block as one float32 array, never one array per point.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cluster.placement import split_by_shard
from shard import multi
from shard.types import DEFAULT_VECTOR, BadInput, ShardConfig

MAX_U64 = 2**64 - 1
# The forms Rust's Uuid::parse_str reads: hyphenated, simple, braced, urn:uuid:.
_UUID_FORMS = [re.compile(form.replace("H", "[0-9a-fA-F]")) for form in (
    r"(H{8})-(H{4})-(H{4})-(H{4})-(H{12})", r"(H{8})(H{4})(H{4})(H{4})(H{12})",
    r"\{(H{8})-(H{4})-(H{4})-(H{4})-(H{12})\}", r"urn:uuid:(H{8})-(H{4})-(H{4})-(H{4})-(H{12})")]
# Ids made from a column's values (--hash-ids): UUIDv5 in a namespace of Shoal's own.
HASH_NAMESPACE = uuid.UUID("5b0a1e4c-7d2f-4c36-9a55-2f6f3c1d8e90")


IN_BLOCK = object()  # a row's vector: its row of the part's block (``check``'s ``block``)


class Rejected(ValueError):
    """One row that cannot be loaded; the message says why."""


@dataclass
class Checked:
    """A part's good rows, ready to write, and its rejects as (row, reason)."""

    ids: list = field(default_factory=list)
    vectors: dict[str, list] = field(default_factory=dict)  # name -> [(row in ids, array)]
    payloads: list = field(default_factory=list)
    rejects: list[tuple[int, str]] = field(default_factory=list)
    block: np.ndarray | None = None  # the unnamed vectors of the rows in ``ids``, when they came as a block


def point_id(value: Any, hashed: bool = False) -> int | str:
    """The canonical id of ``value``; with ``hashed`` any value but null becomes a
    UUIDv5 of its text (a stable function of the column)."""
    if hashed and value is not None:
        return str(uuid.uuid5(HASH_NAMESPACE, value if isinstance(value, str) else repr(value)))
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and 0 <= value <= MAX_U64:
        return int(value)
    if isinstance(value, str):
        for form in _UUID_FORMS:
            match = form.fullmatch(value)
            if match is not None:
                return "-".join(match.groups()).lower()
    raise Rejected(f"id {value!r} is neither an unsigned integer nor a UUID")


def _multi(name: str, value: Any, config: ShardConfig) -> np.ndarray:
    """A multivector's rows as a (rows, size) float32 array; Rejected with the
    REST path's reason (shard.multi's texts) for a bad one."""
    size = config.multi[name].size
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(row, (list, tuple)) for row in value):
        raise Rejected(f"vector {name!r} is not a list of vectors" if name else "the vector is not a list of vectors")
    try:
        with np.errstate(over="ignore"):
            return multi.validate(value, size)
    except BadInput as exc:
        raise Rejected(f"vector {name!r}: {exc}" if name else str(exc)) from None


def _dense(name: str, value: Any, config: ShardConfig) -> np.ndarray:
    if name in config.multi:
        return _multi(name, value, config)
    params = config.vectors.get(name)
    if params is None:
        raise Rejected(f"the collection has no vector named {name!r}")
    if isinstance(value, np.ndarray):
        array = value.astype(np.float32, copy=False)
    else:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            raise Rejected(f"vector {name!r} is not a list of numbers" if name else "the vector is not a list of numbers")
        try:
            array = np.asarray(value, dtype=np.float32)
        except OverflowError:
            array = np.full(len(value), math.inf, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != params.size:
        got = array.shape[0] if array.ndim == 1 else "a nested list"
        raise Rejected(f"wrong dimension{f' of vector {name!r}' if name else ''}: expected {params.size}, got {got}")
    if not np.isfinite(array).all():
        raise Rejected(f"vector{f' {name!r}' if name else ''} contains NaN or infinite values")
    return array


def named_vectors(value: Any, config: ShardConfig) -> dict[str, np.ndarray]:
    """A row's vectors by name: a list (the unnamed vector) or an object of named ones."""
    if value is None:
        raise Rejected("the row has no vector")
    if isinstance(value, dict):
        if not value:
            raise Rejected("the row has no vector")
        return {name: _dense(name, v, config) for name, v in value.items()}
    return {DEFAULT_VECTOR: _dense(DEFAULT_VECTOR, value, config)}


def payload(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(f"the payload is not a JSON object but {type(value).__name__}")
    return value


def _block_reasons(block: np.ndarray, config: ShardConfig) -> tuple[str | None, np.ndarray]:
    """Why every row of ``block`` is refused (or None), and which rows hold NaN or
    an infinity: the checks of ``_dense``, over the whole block at once."""
    params = config.vectors.get(DEFAULT_VECTOR)
    if params is None:
        return f"the collection has no vector named {DEFAULT_VECTOR!r}", np.zeros(len(block), dtype=bool)
    if block.ndim != 2 or block.shape[1] != params.size:
        return f"wrong dimension: expected {params.size}, got {block.shape[-1]}", np.zeros(len(block), dtype=bool)
    return None, ~np.isfinite(block).all(axis=1)


def check(rows, config: ShardConfig, hashed_ids: bool = False, block: np.ndarray | None = None,
          start: int = 0) -> Checked:
    """Check every row of ``rows`` (``(row, id, vector, payload)``, or
    ``(row, Rejected)`` for one that could not even be read). A vector
    ``IN_BLOCK`` is row ``row - start`` of ``block`` (float32)."""
    out = Checked()
    taken: list[int] = []  # rows of ``block`` that were loaded
    every, infinite = None, None
    if block is not None:
        every, infinite = _block_reasons(block, config)
    for item in rows:
        row = item[0]
        if isinstance(item[1], Rejected):
            out.rejects.append((row, str(item[1])))
            continue
        try:
            pid = point_id(item[1], hashed_ids)
            in_block = item[2] is IN_BLOCK
            if in_block:
                if every is not None:
                    raise Rejected(every)
                if infinite[row - start]:
                    raise Rejected("vector contains NaN or infinite values")
            else:
                vectors = named_vectors(item[2], config)
            body = payload(item[3])
        except Rejected as exc:
            out.rejects.append((row, str(exc)))
            continue
        index = len(out.ids)
        out.ids.append(pid)
        if in_block:
            taken.append(row - start)
        else:
            for name, array in vectors.items():
                out.vectors.setdefault(name, []).append((index, array))
        out.payloads.append(body)
    if taken:
        if len(taken) != len(out.ids):
            raise ValueError("a part's vectors come either all from its block or none")
        out.block = block if len(taken) == len(block) else block[np.asarray(taken, dtype=np.int64)]
    return out


def upsert_ops(checked: Checked, config: ShardConfig, shard_count: int) -> dict[int, dict[str, Any]]:
    """One upsert op per shard (``cluster.placement.shard_of``), shaped as
    ``gateway.convert.upsert_ops`` makes them for a REST upsert."""
    n = len(checked.ids)
    if n == 0:
        return {}
    arrays: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if checked.block is not None:
        arrays[DEFAULT_VECTOR] = checked.block
    multis: dict[str, list] = {}
    for name, rows in checked.vectors.items():
        if name in config.multi:
            given = multis[name] = [None] * n
            for i, a in rows:
                given[i] = a
            continue
        array = np.zeros((n, config.vectors[name].size), dtype=np.float32)
        index = np.fromiter((i for i, _ in rows), dtype=np.int64, count=len(rows))
        array[index] = np.stack([a for _, a in rows])
        arrays[name] = array
        if len(rows) != n:
            mask = np.zeros(n, dtype=bool)
            mask[index] = True
            masks[name] = mask
    ops = {}
    groups = {0: None} if shard_count == 1 else split_by_shard(checked.ids, shard_count)
    for shard, rows in groups.items():
        if rows is None:  # one shard: the part as it is, no copies
            ops[shard] = {"type": "upsert", "ids": checked.ids, "vectors": arrays, "vector_mask": masks,
                          "payloads": checked.payloads}
            rows = range(n)
        else:
            r = np.asarray(rows, dtype=np.int64)
            ops[shard] = {
                "type": "upsert",
                "ids": [checked.ids[i] for i in rows],
                "vectors": {name: a[r] for name, a in arrays.items()},
                "vector_mask": {name: m[r] for name, m in masks.items()},
                "payloads": [checked.payloads[i] for i in rows],
            }
        if multis:
            ops[shard]["multi"] = {name: multi.op_entry([given[i] for i in rows], config.multi[name].size)
                                   for name, given in multis.items()}
    return ops
