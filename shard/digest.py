"""A shard's content hash: the same for two shards holding the same points,
whatever order the points were written in, so that anyone can see that the
replicas of a shard agree (``GET /collections/{name}/cluster``).

What it covers: every live point's id, each named vector (present or absent,
and its stored float32 bits; a sparse vector's indices and values; a
multivector's rows as stored, in their datatype), and its payload (as canonical
JSON: keys sorted).
What it leaves out: the order of writes, offsets, versions and sequence
numbers, graphs and payload indexes -- all of which may differ between replicas
that hold the same points.

How (100k x 384 in ~0.1 s, about what blake2b takes over the raw vector bytes
alone, see bench/micro.py):

- per point, two 64-bit lanes from blake2b of its id and payload (a Python loop,
  but a cheap one: one short hash per point);
- per vector, a linear hash of its 64-bit words with odd constants per column,
  one matrix product per block of rows (numpy wraps uint64 arithmetic mod 2**64).
  A change to one component changes its word by a non-zero amount, which an odd
  constant keeps non-zero mod 2**64: the point's vector hash is certain to move;
- each point's lanes mixed with its vector hashes through a bijective finaliser
  (murmur3's fmix64), so that no two points can trade parts unnoticed; then
  summed over the points mod 2**64. A sum does not care about order, and a
  change to one point changes exactly one term, so it changes the sum.

The lanes and the point count are hashed once more into 32 hex digits. The
constants are derived from fixed labels with SHAKE-256 (never from a random
generator whose stream could change between library versions), so the hash of
given content is the same on every machine and in every release that keeps
``VERSION``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
import orjson

VERSION = b"shoal shard digest v1"
BLOCK_ROWS = 4096  # rows per matrix product: ~6 MB of 384-d vectors, in cache-friendly pieces

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@dataclass(frozen=True)
class ShardDigest:
    """How many points a shard holds and a hash of what they are."""

    points_count: int
    content_hash: str  # 32 lower-case hex digits


def fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, element-wise: a bijection on uint64 that
    spreads every input bit over the output."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _S33)
        x = x * _M1
        x = x ^ (x >> _S33)
        x = x * _M2
        return x ^ (x >> _S33)


def _words(label: bytes, count: int) -> np.ndarray:
    """``count`` uint64 constants derived from ``label`` (SHAKE-256)."""
    data = hashlib.shake_256(VERSION + b"\0" + label).digest(8 * count)
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


@lru_cache(maxsize=64)
def _columns(words: int) -> np.ndarray:
    """(words, 2) odd multipliers: one column of constants per lane."""
    return (_words(b"columns %d" % words, 2 * words).reshape(words, 2) | np.uint64(1)).copy()


@lru_cache(maxsize=256)
def _salts(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per vector name: a salt for a present vector, and the value that stands for
    an absent one (two lanes each)."""
    words = _words(b"vector " + name.encode(), 4)
    return words[:2].copy(), words[2:].copy()


def _encode_id(point_id) -> bytes:
    if type(point_id) is int:
        return b"i" + point_id.to_bytes(8, "little")
    return b"u" + str(point_id).encode()


def _encode_payload(payload: dict | None) -> bytes:
    if not payload:
        return b""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits: the slow, exact way
        import json

        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _id_payload_lanes(ids: Sequence, payloads: Sequence[dict | None], offsets: np.ndarray) -> np.ndarray:
    """(n, 2) uint64: blake2b of each point's id and payload."""
    blake = hashlib.blake2b
    out = bytearray()
    n_payloads = len(payloads)
    for offset in offsets.tolist():
        key = _encode_id(ids[offset])
        payload = payloads[offset] if offset < n_payloads else None
        out += blake(key + b"\0" + _encode_payload(payload), digest_size=16).digest()
    return np.frombuffer(bytes(out), dtype="<u8").astype(np.uint64).reshape(-1, 2)


def _vector_lanes(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n, 2) uint64: the linear hash of each row's float32 bits."""
    dim = data.shape[1]
    if dim % 2 == 0:
        words, widen = data.view(np.uint64), None
    else:  # an odd dimension has no whole 64-bit words: widen each 32-bit word
        words, widen = data.view(np.uint32), np.uint64
    columns = _columns(words.shape[1])
    out = np.empty((len(offsets), 2), dtype=np.uint64)
    for start in range(0, len(offsets), BLOCK_ROWS):
        block = words[offsets[start : start + BLOCK_ROWS]]
        if widen is not None:
            block = block.astype(widen)
        out[start : start + BLOCK_ROWS] = block @ columns  # uint64: wraps mod 2**64
    return out


def _sparse_lanes(rows: Sequence, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which offsets hold a sparse vector, (k, 2) uint64 blake2b of each one's
    u32 indices then f32 values: equal lengths, so the split is unambiguous)."""
    blake = hashlib.blake2b
    has = np.zeros(len(offsets), dtype=bool)
    out = bytearray()
    for k, offset in enumerate(offsets.tolist()):
        vector = rows[offset] if offset < len(rows) else None
        if vector is not None:
            has[k] = True
            out += blake(vector[0].astype("<u4").tobytes() + vector[1].astype("<f4").tobytes(), digest_size=16).digest()
    return has, np.frombuffer(bytes(out), dtype="<u8").astype(np.uint64).reshape(-1, 2)


def _multi_lanes(store, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which offsets hold a multivector, (k, 2) uint64 blake2b of each one's row
    count, dimension and stored row bytes, little-endian in the store's datatype).
    ``store`` is a ``shard.multi.MultiStore``."""
    blake = hashlib.blake2b
    has = np.zeros(len(offsets), dtype=bool)
    out = bytearray()
    little = store.rows.dtype.newbyteorder("<")
    for k, offset in enumerate(offsets.tolist()):
        if store.has(offset):
            has[k] = True
            a = int(store.start[offset])
            rows = store.rows[a: a + int(store.count[offset])]
            head = len(rows).to_bytes(8, "little") + store.dim.to_bytes(8, "little")
            out += blake(head + rows.astype(little).tobytes(), digest_size=16).digest()
    return has, np.frombuffer(bytes(out), dtype="<u8").astype(np.uint64).reshape(-1, 2)


def content_digest(ids: Sequence, live: np.ndarray, vectors: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   payloads: Sequence[dict | None], sparse: Mapping[str, Sequence] | None = None,
                   multi: Mapping | None = None) -> ShardDigest:
    """The digest of a shard's points.

    ``ids[offset]`` is the point at each offset (None for a free one) and
    ``live`` the mask of offsets that hold a point; ``vectors`` maps each vector
    name to ``(data, present)``: the (capacity, dim) float32 rows and the mask of
    rows holding a vector; ``payloads[offset]`` is the point's payload (None or
    {} for none); ``sparse`` maps each sparse vector name to its vectors by
    offset (``(indices, values)`` sorted, or None: ``SparseStore.vectors``);
    ``multi`` maps each multivector name to its ``MultiStore``.
    Reads only: the caller holds whatever lock keeps them still.
    """
    offsets = np.flatnonzero(live)
    lanes = _id_payload_lanes(ids, payloads, offsets)
    with np.errstate(over="ignore"):
        for name in sorted(vectors):
            data, present = vectors[name]
            salt, absent = _salts(name)
            has = np.zeros(len(offsets), dtype=bool)
            inside = offsets < len(present)
            has[inside] = present[offsets[inside]]
            part = np.empty((len(offsets), 2), dtype=np.uint64)
            part[~has] = absent
            if has.any():
                part[has] = fmix64(_vector_lanes(data, offsets[has]) + salt)
            lanes = fmix64(lanes ^ part)
        for kind, stores, lanes_of in (("sparse ", sparse, _sparse_lanes), ("multi ", multi, _multi_lanes)):
            for name in sorted(stores or {}):
                salt, absent = _salts(kind + name)
                has, hashed = lanes_of(stores[name], offsets)
                part = np.empty((len(offsets), 2), dtype=np.uint64)
                part[~has] = absent
                part[has] = fmix64(hashed + salt)
                lanes = fmix64(lanes ^ part)
        totals = fmix64(lanes).sum(axis=0, dtype=np.uint64)
    summary = VERSION + len(offsets).to_bytes(8, "little") + totals.astype("<u8").tobytes()
    return ShardDigest(len(offsets), hashlib.blake2b(summary, digest_size=16).hexdigest())
