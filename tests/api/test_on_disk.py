"""``on_disk: true`` vectors through qdrant-client 1.15.1: the same answers as
``QdrantClient(":memory:")``, the flag reported as Qdrant reports it (set: in the
vector's params; unset: left out), and changed by a PATCH as Qdrant 1.15's
``update_vectors_from_diff`` does, the vectors moving at once. On the server, each shard keeps such a vector in a
map file in its folder, which goes with the collection.

The :memory: client ignores a PATCH of vectors (its ``update_collection`` only takes
sparse vectors), so the PATCH is checked on Shoal's report alone.
"""

from __future__ import annotations

import pytest
from qdrant_client import models

from .compare import assert_same, assert_scored, both
from .data import create_both, make_points, query_vectors, upsert_both

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

DIM = 24
N = 1500  # past a shard's first 1,024 rows: the map file grows


def map_files(server) -> set:
    return set() if server is None else set(server.storage.rglob("vectors-*.mmap"))


def test_on_disk_vectors_answer_as_in_memory(shoal, memory, collection_names, shard_number, shoal_server):
    before = map_files(shoal_server)
    name = collection_names("on_disk")
    create_both(shoal, memory, name, {
        "img": models.VectorParams(size=DIM, distance=models.Distance.COSINE, on_disk=True),
        "txt": models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
    }, shard_number)
    upsert_both(shoal, memory, name, make_points(N, DIM, named={"img": DIM, "txt": DIM}))
    for client in (shoal, memory):
        client.delete(name, points_selector=models.PointIdsList(points=list(range(0, N, 9))), wait=True)

    info = shoal.get_collection(name)
    assert_same(info.config.params.vectors, memory.get_collection(name).config.params.vectors,
                what="vector params")
    assert info.config.params.vectors["img"].on_disk is True
    assert info.config.params.vectors["txt"].on_disk is None  # unset: left out, as Qdrant's serde does
    assert info.points_count == N - len(range(0, N, 9))

    def searches() -> None:
        for using in ("img", "txt"):
            for q in query_vectors(5, DIM):
                s, m = both(shoal, memory, lambda c: c.query_points(
                    name, query=q, using=using, limit=12, with_payload=True, with_vectors=True).points)
                assert_scored(s, m, limit=12, what=f"query on {using}")
            s, m = both(shoal, memory, lambda c: c.query_points(
                name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=[3], negative=[4])),
                using=using, limit=10).points)
            assert_scored(s, m, limit=10, what=f"recommend on {using}")
        s, m = both(shoal, memory, lambda c: c.retrieve(name, ids=[1, 2, 9, 1000, 1499], with_vectors=True))
        assert_same(sorted(s, key=lambda r: r.id), sorted(m, key=lambda r: r.id), what="retrieve", tol=1e-5)

    searches()
    if shoal_server is None:
        return  # the :memory: twin has neither files nor a PATCH of vectors
    files = map_files(shoal_server) - before
    # One map file per shard, for the one on_disk vector (the first: position 0).
    assert len(files) == shard_number and {f.name for f in files} == {"vectors-0.mmap"}

    # PATCH on_disk, as Qdrant 1.15: the vector's params take the new value, and
    # each shard moves the vectors into RAM at once (a configure op in its log).
    assert shoal.update_collection(name, vectors_config={"img": models.VectorParamsDiff(on_disk=False)}) is True
    assert shoal.get_collection(name).config.params.vectors["img"].on_disk is False
    assert not any(f.exists() for f in files)
    searches()
    assert shoal.update_collection(name, vectors_config={"txt": models.VectorParamsDiff(on_disk=True)}) is True
    assert {f.name for f in map_files(shoal_server) - before} == {"vectors-1.mmap"}
    searches()

    assert shoal.delete_collection(name) is True
    assert not any(f.exists() for f in files)  # gone with the collection
