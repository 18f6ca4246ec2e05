"""Durability: a graceful restart keeps everything; a SIGKILL of every Shoal process
loses nothing that was acknowledged.

Qdrant's promise: an update answered with ``wait=true`` is in the WAL, so it survives a
crash; a clean shutdown keeps collections, config, payload indexes and aliases.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from qdrant_client import models

from .compare import assert_records, assert_same, assert_scored, both
from .data import create_both, make_points, query_vectors, upsert_both

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture
def server(shoal_server):
    if shoal_server is None:
        pytest.skip("restarts need a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    yield shoal_server
    shoal_server.ensure_up()  # leave a live server for the tests that follow


def snapshot(client, name: str) -> dict:
    info = client.get_collection(name)
    records, _ = client.scroll(name, limit=100_000, with_vectors=True)
    return {
        "records": records,
        "config": info.config.params.model_dump(mode="json"),
        "hnsw": info.config.hnsw_config.model_dump(mode="json"),
        "schema": {k: (v.data_type.value, v.points) for k, v in info.payload_schema.items()},
        "points_count": info.points_count,
    }


def test_graceful_restart_keeps_everything(server, make_client, memory, collection_names,
                                           shard_number):
    shoal = make_client()
    name, alias = collection_names("durable"), collection_names("alias")
    create_both(shoal, memory, name, {"v": models.VectorParams(size=8, distance=models.Distance.COSINE)},
                shard_number, hnsw_config=models.HnswConfigDiff(m=8, ef_construct=64))
    for field, schema in (("city", "keyword"), ("count", "integer"), ("location", "geo")):
        shoal.create_payload_index(name, field, field_schema=schema, wait=True)
    upsert_both(shoal, memory, name, make_points(400, 0, seed=61, named={"v": 8}))
    both(shoal, memory, lambda c: c.delete(name, points_selector=list(range(0, 400, 7))))
    both(shoal, memory, lambda c: c.set_payload(name, payload={"after": "restart"}, points=[1, 2, 3]))
    both(shoal, memory, lambda c: c.delete_payload(name, keys=["city"], points=[4]))
    shoal.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    before = snapshot(shoal, name)

    code = server.stop()
    assert code == 0, f"server exit code on SIGTERM: {code}\n{server.stderr_tail()}"
    assert not server.leftovers, f"processes left after a clean shutdown: {server.leftovers}"
    server.start()
    shoal = make_client()

    after = snapshot(shoal, name)
    assert_records(after.pop("records"), before.pop("records"), ordered=True,
                   what="records after restart vs before")
    assert after == before
    assert shoal.get_collection(name).config.params.shard_number == shard_number
    aliases = {(a.alias_name, a.collection_name) for a in shoal.get_aliases().aliases}
    assert (alias, name) in aliases
    q = query_vectors(1, 8, seed=62)[0]
    flt = models.Filter(must=[models.FieldCondition(key="count", range=models.Range(lt=20))])
    a, b = both(shoal, memory, lambda c: c.query_points(name, query=q, using="v", query_filter=flt,
                                                        limit=10))
    assert_scored(a.points, b.points, limit=10, what="search after restart")
    a = shoal.query_points(alias, query=q, using="v", query_filter=flt, limit=10)
    assert_scored(a.points, b.points, limit=10, what="search through the alias after restart")
    # the restarted server still accepts writes, and keeps its indexes current
    both(shoal, memory, lambda c: c.upsert(name, points=[models.PointStruct(
        id=1000, vector={"v": [1.0] * 8}, payload={"city": "Oslo", "count": 1})]))
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=flt))
    assert_same(a, b, what="count after restart and a new upsert")
    shoal.delete_collection(name)


class Writer(threading.Thread):
    """Upserts batches with wait=true and deletes older batches, recording only what the
    server acknowledged."""

    def __init__(self, client, name: str, batch: int = 20):
        super().__init__(daemon=True)
        self.client, self.name, self.batch = client, name, batch
        self.acked_upserts: list[int] = []
        self.acked_deletes: list[int] = []
        self.pending: tuple[str, int] | None = None  # the call in flight at the crash
        self.stop = threading.Event()
        self.error: Exception | None = None

    def ids(self, k: int) -> list[int]:
        return list(range(k * self.batch, (k + 1) * self.batch))

    def run(self) -> None:
        rng = random.Random(7)
        k = 0
        try:
            while not self.stop.is_set() and k < 5000:
                points = [models.PointStruct(id=i, vector=[rng.uniform(-1, 1) for _ in range(4)],
                                             payload={"batch": k, "i": i}) for i in self.ids(k)]
                self.pending = ("upsert", k)
                self.client.upsert(self.name, points=points, wait=True)
                self.acked_upserts.append(k)
                if k % 4 == 3:
                    victim = k - 2
                    self.pending = ("delete", victim)
                    self.client.delete(self.name, points_selector=self.ids(victim), wait=True)
                    self.acked_deletes.append(victim)
                self.pending = None
                k += 1
        except Exception as e:  # noqa: BLE001 - the crash interrupts the writer by design
            self.error = e


@pytest.mark.slow
def test_crash_loses_no_acknowledged_write(server, make_client, collection_names, shard_number):
    shoal = make_client(timeout=10)
    name = collection_names("crash")
    shoal.create_collection(name, vectors_config=models.VectorParams(size=4, distance="Dot"),
                            shard_number=shard_number)
    writer = Writer(shoal, name)
    writer.start()
    seed = random.randrange(1_000_000)
    delay = random.Random(seed).uniform(2.0, 6.0)
    time.sleep(delay)
    victims = server.pids()
    server.kill()
    writer.stop.set()
    writer.join(timeout=30)
    assert not writer.is_alive()
    survivors = victims & server.pids()
    assert not survivors, f"processes survived SIGKILL of the server: {sorted(survivors)}"
    assert len(writer.acked_upserts) > 3, (f"writer made too little progress before the kill "
                                           f"(seed {seed}, delay {delay:.2f}s, {writer.error!r})")

    server.start()
    shoal = make_client()
    deleted = set(writer.acked_deletes)
    in_doubt = {writer.pending[1]} if writer.pending else set()  # may or may not have applied
    expect_present = [k for k in writer.acked_upserts if k not in deleted | in_doubt]
    ids = [i for k in expect_present for i in writer.ids(k)]
    records = shoal.retrieve(name, ids=ids, with_payload=True)
    found = {r.id: r.payload for r in records}
    missing = [i for i in ids if i not in found]
    assert not missing, (f"{len(missing)} acknowledged points lost after the crash "
                         f"(seed {seed}, delay {delay:.2f}s): {missing[:20]}")
    wrong = {i: p for i, p in found.items() if p != {"batch": i // writer.batch, "i": i}}
    assert not wrong, f"payloads changed by the crash: {dict(list(wrong.items())[:5])}"
    gone = [i for k in deleted for i in writer.ids(k)]
    resurrected = [r.id for r in shoal.retrieve(name, ids=gone)]
    assert not resurrected, f"acknowledged deletes undone by the crash: {resurrected[:20]}"
    # the collection still serves reads and writes consistently
    total = shoal.count(name, exact=True).count
    assert len(ids) <= total <= len(ids) + writer.batch  # + the one batch in doubt
    shoal.upsert(name, points=[models.PointStruct(id=10**9, vector=[1, 0, 0, 0])], wait=True)
    assert shoal.count(name, exact=True).count == total + 1
