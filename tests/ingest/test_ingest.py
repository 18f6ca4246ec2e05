"""``shoal ingest`` through a real server and real Ray: each source kind and the
column flags compared with what ``QdrantClient(":memory:")`` holds after the same
points are upserted; bad rows to the reject file; a missing source."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qdrant_client import models

from .helpers import assert_same_records, ingest, records, summary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
DIM = 8


@pytest.fixture
def server(shoal_server):
    if shoal_server is None:
        pytest.skip("shoal ingest needs a real Shoal server")
    shoal_server.ensure_up()
    return shoal_server


@pytest.fixture
def collection(shoal, memory):
    """Factory: the same collection on Shoal and on the :memory: oracle."""
    made = []

    def create(vectors, shards: int = 1) -> str:
        name = f"ingest_{uuid.uuid4().hex[:10]}"
        for client in (shoal, memory):
            client.create_collection(name, vectors_config=vectors, shard_number=shards)
        made.append(name)
        return name

    yield create
    for name in made:
        shoal.delete_collection(name)


def _points(n: int, seed: int, start: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    payloads = [{"n": start + i, "tag": ["a", "b", "c"][i % 3], "nested": {"x": i / 2}} for i in range(n)]
    return list(range(start, start + n)), vectors, payloads


def _oracle(memory, name: str, ids, vectors, payloads) -> dict:
    memory.upsert(name, [models.PointStruct(id=i, vector=v, payload=p) for i, v, p in zip(ids, vectors, payloads)])
    return records(memory, name)


@pytest.mark.parametrize("distance", [models.Distance.COSINE, models.Distance.EUCLID])
def test_jsonl_source(server, shoal, memory, collection, tmp_path, distance):
    name = collection(models.VectorParams(size=DIM, distance=distance), shards=3)
    ids, vectors, payloads = _points(250, seed=1)
    ids[7] = "6E4B1B9E-0E5C-4E54-8C59-3A4C9D1F2A11"  # a UUID, upper case: made canonical
    source = tmp_path / "points.jsonl"
    with open(source, "w") as f:
        for i, v, p in zip(ids, vectors, payloads):
            f.write(json.dumps({"id": i, "vector": v.tolist(), "payload": p}) + "\n")
        f.write("\n")  # an empty line is no row
    done = ingest(server, name, tmp_path, "--part-rows", "64", str(source))
    assert done.returncode == 0, done.stderr
    assert summary(done) == {"loaded": 250, "rejected": 0, "skipped_parts": 0, "skipped_points": 0}
    assert "ingest: 250/251 rows" in done.stderr or "ingest: 251/251 rows" in done.stderr
    assert "Traceback" not in done.stderr
    want = _oracle(memory, name, [i.lower() if isinstance(i, str) else i for i in ids], vectors, payloads)
    assert_same_records(records(shoal, name), want)


def test_parquet_source_and_column_flags(server, shoal, memory, collection, tmp_path):
    name = collection(models.VectorParams(size=DIM, distance=models.Distance.DOT), shards=2)
    ids, vectors, payloads = _points(300, seed=2)
    keys = [f"word-{i}" for i in ids]
    table = pa.table({"key": keys, "emb": pa.array(vectors.tolist(), type=pa.list_(pa.float32())),
                      "tag": [p["tag"] for p in payloads], "n": [p["n"] for p in payloads],
                      "ignored": ["x"] * len(ids)})
    source = tmp_path / "points.parquet"
    pq.write_table(table, source, row_group_size=70)
    done = ingest(server, name, tmp_path, "--id-column", "key", "--hash-ids", "--vector-column", "emb",
                  "--payload-columns", "tag,n", "--part-rows", "100", str(source))
    assert done.returncode == 0, done.stderr
    assert summary(done)["loaded"] == 300
    hashed = [str(uuid.uuid5(uuid.UUID("5b0a1e4c-7d2f-4c36-9a55-2f6f3c1d8e90"), k)) for k in keys]
    want = _oracle(memory, name, hashed, vectors, [{"tag": p["tag"], "n": p["n"]} for p in payloads])
    assert_same_records(records(shoal, name), want)
    # Run again: every part is skipped, nothing changes.
    again = ingest(server, name, tmp_path, "--id-column", "key", "--hash-ids", "--vector-column", "emb",
                   "--payload-columns", "tag,n", "--part-rows", "100", str(source))
    assert again.returncode == 0, again.stderr
    assert summary(again) == {"loaded": 0, "rejected": 0, "skipped_parts": 3, "skipped_points": 300}
    assert shoal.count(name, exact=True).count == 300


def test_npy_source_with_named_vectors_jsonl(server, shoal, memory, collection, tmp_path):
    """A .npy of vectors with its .jsonl of ids and payloads (the wordnet shape: every
    field but the id is payload), and a JSON Lines file of named vectors."""
    name = collection({"a": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                       "b": models.VectorParams(size=4, distance=models.Distance.EUCLID)})
    ids, vectors, payloads = _points(120, seed=3)
    np.save(tmp_path / "base.f16.npy", vectors.astype(np.float16))
    with open(tmp_path / "base.jsonl", "w") as f:
        for i, p in zip(ids, payloads):
            f.write(json.dumps({"id": i, **p}) + "\n")
    done = ingest(server, name, tmp_path, "--vector-column", "a", str(tmp_path / "base.f16.npy"))
    assert done.returncode == 1 and summary(done)["rejected"] == 120  # the unnamed vector is not in it
    reasons = {json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()}
    assert reasons == {"the collection has no vector named ''"}

    named_ids, named_vectors, named_payloads = _points(90, seed=4, start=1000)
    small = np.random.default_rng(5).normal(size=(90, 4)).astype(np.float32)
    source = tmp_path / "named.jsonl"
    with open(source, "w") as f:
        for k, (i, v, p) in enumerate(zip(named_ids, named_vectors, named_payloads)):
            vector = {"a": v.tolist()} if k % 3 == 0 else {"a": v.tolist(), "b": small[k].tolist()}
            f.write(json.dumps({"id": i, "vector": vector, "payload": p}) + "\n")
    done = ingest(server, name, tmp_path, str(source))
    assert done.returncode == 0, done.stderr
    want_vectors = [{"a": v} if k % 3 == 0 else {"a": v, "b": small[k]} for k, v in enumerate(named_vectors)]
    want = _oracle(memory, name, named_ids, want_vectors, named_payloads)
    assert_same_records(records(shoal, name), want)


def test_jsonl_source_with_multivectors(server, shoal, memory, collection, tmp_path):
    """Named multivectors beside a dense vector (some rows without one), and bad
    multivectors to the reject file with the REST path's reasons."""
    maxsim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    name = collection({"a": models.VectorParams(size=DIM, distance=models.Distance.DOT),
                       "m": models.VectorParams(size=4, distance=models.Distance.COSINE, multivector_config=maxsim)},
                      shards=2)
    ids, vectors, payloads = _points(80, seed=7)
    rng = np.random.default_rng(8)
    multis = [rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in ids]
    source = tmp_path / "multi.jsonl"
    with open(source, "w") as f:
        for k, (i, v, p) in enumerate(zip(ids, vectors, payloads)):
            vector = {"a": v.tolist()} if k % 4 == 0 else {"a": v.tolist(), "m": multis[k].tolist()}
            f.write(json.dumps({"id": i, "vector": vector, "payload": p}) + "\n")
        f.write(json.dumps({"id": 500, "vector": {"a": vectors[0].tolist(), "m": [[1, 2, 3]]}}) + "\n")
        f.write(json.dumps({"id": 501, "vector": {"a": vectors[0].tolist(), "m": [[1, 2, 3, 4], [1]]}}) + "\n")
        f.write(json.dumps({"id": 502, "vector": {"a": vectors[0].tolist(), "m": [1, 2, 3, 4]}}) + "\n")
    done = ingest(server, name, tmp_path, "--part-rows", "30", str(source))
    assert done.returncode == 1 and summary(done)["loaded"] == 80 and summary(done)["rejected"] == 3, done.stderr
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reasons == ["vector 'm': Vector dimension error: expected dim: 4, got 3",
                       "vector 'm': data: all vectors must have the same dimension, found vector with dimension 1",
                       "vector 'm' is not a list of vectors"]
    want_vectors = [{"a": v} if k % 4 == 0 else {"a": v, "m": multis[k].tolist()} for k, v in enumerate(vectors)]
    want = _oracle(memory, name, ids, want_vectors, payloads)
    assert_same_records(records(shoal, name), want)


def test_parquet_and_npy_sources_with_multivectors(server, shoal, memory, collection, tmp_path):
    """Multivectors from Parquet (a list of rows a point: as many rows for every
    point, and not) and from a three-dimensional .npy (points, rows, dim) with its
    JSON Lines of ids and payloads beside it."""
    maxsim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    name = collection(models.VectorParams(size=4, distance=models.Distance.COSINE, multivector_config=maxsim),
                      shards=2)
    rng = np.random.default_rng(9)
    same = rng.normal(size=(60, 3, 4)).astype(np.float32)  # three rows each
    varying = [rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in range(50)]
    cube = rng.normal(size=(40, 2, 4)).astype(np.float32)
    rows_type = pa.list_(pa.list_(pa.float32()))
    for file, ids, multis in (("same.parquet", range(0, 60), list(same)), ("varying.parquet", range(100, 150), varying)):
        pq.write_table(pa.table({"id": list(ids), "vector": pa.array([m.tolist() for m in multis], type=rows_type),
                                 "tag": [f"t{i % 3}" for i in ids]}), tmp_path / file, row_group_size=25)
    np.save(tmp_path / "cube.npy", cube)
    with open(tmp_path / "cube.jsonl", "w") as f:
        for i in range(200, 240):
            f.write(json.dumps({"id": i, "tag": f"t{i % 3}"}) + "\n")
    for source in ("same.parquet", "varying.parquet", "cube.npy"):
        done = ingest(server, name, tmp_path, "--part-rows", "20", str(tmp_path / source))
        assert done.returncode == 0, done.stderr
    ids = [*range(0, 60), *range(100, 150), *range(200, 240)]
    multis = [*(m.tolist() for m in same), *(m.tolist() for m in varying), *(m.tolist() for m in cube)]
    want = _oracle(memory, name, ids, multis, [{"tag": f"t{i % 3}"} for i in ids])
    assert_same_records(records(shoal, name), want)


def test_npy_source_as_wordnet(server, shoal, memory, collection, tmp_path):
    name = collection(models.VectorParams(size=DIM, distance=models.Distance.COSINE), shards=2)
    ids, vectors, payloads = _points(150, seed=6)
    vectors16 = vectors.astype(np.float16)
    np.save(tmp_path / "base.f16.npy", vectors16)
    with open(tmp_path / "base.jsonl", "w") as f:
        for i, p in zip(ids, payloads):
            f.write(json.dumps({"id": i, **p}) + "\n")
    done = ingest(server, name, tmp_path, "--part-rows", "40", str(tmp_path / "base.f16.npy"))
    assert done.returncode == 0, done.stderr
    assert summary(done)["loaded"] == 150
    want = _oracle(memory, name, ids, vectors16.astype(np.float32), payloads)
    assert_same_records(records(shoal, name), want)


def test_bad_rows_go_to_the_reject_file(server, shoal, collection, tmp_path):
    name = collection(models.VectorParams(size=4, distance=models.Distance.COSINE))
    good = [{"id": i, "vector": [1.0, 2.0, 3.0, float(i)], "payload": {"i": i}} for i in range(5)]
    lines = [json.dumps(p) for p in good]
    lines += [
        json.dumps({"id": 10, "vector": [1.0, 2.0, 3.0]}),  # wrong dimension
        json.dumps({"id": 11, "vector": [1.0, 2.0, 3.0, 1e39]}),  # infinite as float32
        json.dumps({"id": -1, "vector": [1.0, 2.0, 3.0, 4.0]}),  # a negative id
        json.dumps({"id": "not-a-uuid", "vector": [1.0, 2.0, 3.0, 4.0]}),
        json.dumps({"id": 12, "vector": [1.0, 2.0, 3.0, 4.0], "payload": [1, 2]}),  # payload not an object
        "{not json",
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    nan = pa.table({"id": [20, 21], "vector": pa.array([[1.0, float("nan"), 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]),
                    "payload": ['{"ok": true}', '"text"']})
    pq.write_table(nan, tmp_path / "bad.parquet")

    done = ingest(server, name, tmp_path, str(tmp_path / "bad.jsonl"), str(tmp_path / "bad.parquet"))
    assert done.returncode == 1
    assert summary(done)["loaded"] == 5 and summary(done)["rejected"] == 8
    assert "more than --max-rejects 0" in done.stderr
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    by_row = {(r["source"].rsplit("/", 1)[-1], r["row"]): r["reason"] for r in rejects}
    assert set(by_row) == {("bad.jsonl", r) for r in range(5, 11)} | {("bad.parquet", 0), ("bad.parquet", 1)}
    assert "wrong dimension: expected 4, got 3" in by_row["bad.jsonl", 5]
    assert "NaN or infinite" in by_row["bad.jsonl", 6]
    assert "neither an unsigned integer nor a UUID" in by_row["bad.jsonl", 7]
    assert "neither an unsigned integer nor a UUID" in by_row["bad.jsonl", 8]
    assert "not a JSON object" in by_row["bad.jsonl", 9]
    assert "not valid JSON" in by_row["bad.jsonl", 10]
    assert "NaN or infinite" in by_row["bad.parquet", 0]
    assert "not a JSON object" in by_row["bad.parquet", 1]
    assert shoal.count(name, exact=True).count == 5

    # The same rejects, allowed: exit status 0 (the parts are done: all skipped).
    allowed = ingest(server, name, tmp_path, "--max-rejects", "8", str(tmp_path / "bad.jsonl"),
                     str(tmp_path / "bad.parquet"))
    assert allowed.returncode == 0, allowed.stderr
    assert summary(allowed) == {"loaded": 0, "rejected": 8, "skipped_parts": 2, "skipped_points": 5}
    one_less = ingest(server, name, tmp_path, "--max-rejects", "7", str(tmp_path / "bad.jsonl"))
    assert one_less.returncode == 0  # this run's sources hold 6 rejects


def test_missing_source_is_one_line(server, collection, tmp_path):
    name = collection(models.VectorParams(size=4, distance=models.Distance.COSINE))
    done = ingest(server, name, tmp_path, str(tmp_path / "nowhere.parquet"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "nowhere.parquet does not exist" in lines[0] and lines[0].startswith("shoal ingest: error:")
    unknown = ingest(server, "no_such_collection", tmp_path, str(tmp_path))
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
