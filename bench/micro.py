"""Engine micro-benchmarks: the costs the tests used to assert as timings.

Tests check behaviour; speed is measured here, each figure beside a reference
measured in the same run on the same data, as a ratio:

- payload state of 100k points, dumped and loaded (a snapshot's payload part),
  against orjson round-tripping the bare rows;
- an indexed ``match`` over 100k points, against numpy comparing a 100k array;
- the write-ahead log codec on a 1,000-point upsert, against ``np.save`` +
  orjson of the same vectors and payloads;
- reading a 1,000-point upsert body: Qdrant's validation against orjson's parse
  of the same bytes;
- a no-op WAL flush, against a bare ``os.fstat`` (one system call);
- a shard frame on TCP (pickled, MAC'd, checked, unpickled: ``cluster.wire``),
  a ~4 KB search request and a 10-hit answer, against the same frame plain, as
  the Unix socket sends it;
- a shard's content hash (``shard.digest``: ids, vectors, payloads, in any
  order) at 100k x 384, against blake2b over the raw vector bytes alone.

    python -m bench.micro            # a few seconds
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from typing import Callable

import numpy as np
import orjson

from cluster import wire
from gateway import models as g
from shard import codec, filters
from shard.digest import content_digest
from shard.payload import PayloadStore
from shard.types import NearestQuery, PayloadSelector, ScoredPoint, SearchRequest
from shard.wal import WriteAheadLog


def best_of(fn: Callable[[], object], repeat: int = 7) -> float:
    """The fastest of ``repeat`` calls, in seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


class _Ctx:
    """The smallest FilterContext: a PayloadStore with every offset live."""

    def __init__(self, payloads: PayloadStore, size: int):
        self.payloads, self.size, self.live = payloads, size, np.ones(size, bool)

    def offsets_of(self, ids):
        return np.asarray([i for i in ids if isinstance(i, int) and i < self.size], np.int64)

    def has_vector(self, name):
        return np.zeros(self.size, bool)


def payload_state() -> tuple[float, float]:
    colors = ["red", "green", "blue", "black"]
    rows = [{"color": colors[i % 4], "n": i, "tags": [colors[i % 3], "x"]} for i in range(100_000)]
    store = PayloadStore.from_state({"payloads": rows, "indexes": []})
    store.create_index("color", "keyword")
    store.create_index("n", "integer")
    shoal = best_of(lambda: PayloadStore.from_state(orjson.loads(orjson.dumps(store.to_state()))), 3)
    reference = best_of(lambda: orjson.loads(orjson.dumps(rows)), 3)
    return shoal, reference


def indexed_match() -> tuple[float, float]:
    n = 100_000
    rows = [{"c": ("red", "green", "blue")[i % 3], "n": i % 1000} for i in range(n)]
    store = PayloadStore.from_state({"payloads": rows, "indexes": []})
    store.create_index("c", "keyword")
    ctx = _Ctx(store, n)
    flt = {"must": [{"key": "c", "match": {"value": "red"}}]}
    codes = np.arange(n) % 3
    return best_of(lambda: filters.evaluate(flt, ctx), 15), best_of(lambda: codes == 0, 15)


def wal_codec() -> tuple[float, float]:
    n, dim = 1000, 384
    rng = np.random.default_rng(1)
    vectors = rng.random((n, dim), dtype=np.float32)
    payloads = [{"city": "Berlin", "n": i, "tags": ["a", "b"]} for i in range(n)]
    op = {"type": "upsert", "ids": list(range(n)), "vectors": {"": vectors}, "payloads": payloads}

    def reference() -> None:
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        np.load(io.BytesIO(buffer.getvalue()))
        orjson.loads(orjson.dumps(payloads))

    return best_of(lambda: codec.decode(codec.encode(op))), best_of(reference)


def upsert_validation() -> tuple[float, float]:
    rng = np.random.default_rng(0)
    points = [{"id": i, "vector": rng.random(384).astype(np.float32).tolist(), "payload": {"n": i}} for i in range(1000)]
    body = orjson.dumps({"points": points})
    data = orjson.loads(body)

    def validate() -> None:
        g.qdrant_validate(g.PointInsertOperations.model_validate(data))

    return best_of(validate, 3), best_of(lambda: orjson.loads(body), 3)


def wal_flush() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder, WriteAheadLog(folder) as wal:
        wal.append(b"x" * 64)
        wal.flush()
        fd = os.open(folder, os.O_RDONLY)
        try:
            shoal = best_of(lambda: [wal.flush() for _ in range(1000)]) / 1000
            reference = best_of(lambda: [os.fstat(fd) for _ in range(1000)]) / 1000
        finally:
            os.close(fd)
    return shoal, reference


def _sealed_pair() -> tuple[wire.SealedFraming, wire.SealedFraming]:
    """Both ends' framings of one TCP connection, as the handshake makes them."""
    client, server = wire.ClientHandshake(b"k" * 32), wire.ServerHandshake(b"k" * 32)
    proof, sender = client.finish(server.reply(client.hello()))
    return sender, server.finish(proof)


def _frame_trip(obj: object, framing_pair) -> Callable[[], object]:
    """Pickle ``obj`` into a frame, seal it, check it and unpickle it: what the
    two ends of a connection do with each frame."""
    sender, receiver = framing_pair

    def trip() -> None:
        for _ in range(1000):
            receiver.take(bytearray(sender.seal([wire.frame(obj)])))

    return trip


def mac_request() -> tuple[float, float]:
    rng = np.random.default_rng(2)
    request = SearchRequest(NearestQuery(rng.random(1024, dtype=np.float32)), limit=10, with_payload=PayloadSelector(),
                            filter={"must": [{"key": "city", "match": {"value": "Berlin"}}]})
    obj = (7, "search_batch", (wire.searches_to_wire([request]),), {})
    assert 4000 < len(wire.frame(obj)) < 4600  # the ~4 KB of the row's name
    plain = (wire.PLAIN, wire.PLAIN)
    return best_of(_frame_trip(obj, _sealed_pair())) / 1000, best_of(_frame_trip(obj, plain)) / 1000


def mac_answer() -> tuple[float, float]:
    hits = [ScoredPoint(i, 3, 0.9 - i / 100, {"city": "Berlin", "n": i, "tags": ["a", "b"]}) for i in range(10)]
    obj = (7, True, wire.hits_to_wire([hits]))
    plain = (wire.PLAIN, wire.PLAIN)
    return best_of(_frame_trip(obj, _sealed_pair())) / 1000, best_of(_frame_trip(obj, plain)) / 1000


def shard_digest() -> tuple[float, float]:
    n, dim = 100_000, 384
    data = np.random.default_rng(3).standard_normal((n, dim), dtype=np.float32)
    live = np.ones(n, bool)
    vectors = {"": (data, live)}
    ids = list(range(n))
    payloads = [{"pos": ("noun", "verb", "adj", "adv")[i % 4], "n": i} for i in range(n)]
    shoal = best_of(lambda: content_digest(ids, live, vectors, payloads), 3)
    return shoal, best_of(lambda: hashlib.blake2b(data).digest(), 3)


ROWS = [
    ("payload state of 100k points, dump + load", "orjson round trip of the rows", payload_state),
    ("indexed keyword match over 100k points", "numpy == over 100k codes", indexed_match),
    ("WAL codec, 1,000 x 384 upsert, encode + decode", "np.save/np.load + orjson", wal_codec),
    ("validating a 1,000-point upsert body", "orjson parse of the same body", upsert_validation),
    ("no-op WAL flush", "one os.fstat", wal_flush),
    ("TCP frame with MAC, 4.2 KB search request", "the same frame plain (Unix)", mac_request),
    ("TCP frame with MAC, 10-hit answer (~0.5 KB)", "the same frame plain (Unix)", mac_answer),
    ("content hash of a 100k x 384 shard + payloads", "blake2b of the raw vector bytes", shard_digest),
]


def main() -> None:
    print(f"{'measure':<48} | {'Shoal':>10} | {'reference':>10} | {'ratio':>6} | reference is")
    print("-" * 48 + "-+-" + "-" * 10 + "-+-" + "-" * 10 + "-+-" + "-" * 6 + "-+-" + "-" * 30)
    for name, reference_name, measure in ROWS:
        shoal, reference = measure()
        print(f"{name:<48} | {_ms(shoal):>10} | {_ms(reference):>10} | {shoal / reference:>6.1f} | {reference_name}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.2f} us"


if __name__ == "__main__":
    main()
