"""A primary forwarding its writes to its peers (cluster.replicator), with real shards
on disk served by real sockets: one peer over authenticated TCP, one over the Unix
socket. No Ray: the actor around them adds nothing to what is tested here."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cluster.replicator import Peer, ServedShard
from cluster.transport import Endpoints, ShardServer
from shard.local_shard import LocalShard
from shard.types import BadInput, Distance, ShardConfig, StaleEpoch, VectorParams

DIM = 8
SECRET = b"r" * 32
CONFIG = ShardConfig(vectors={"": VectorParams(DIM, Distance.DOT)})


def upsert(ids, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"type": "upsert", "ids": list(ids), "vectors": {"": rng.normal(size=(len(ids), DIM)).astype(np.float32)},
            "payloads": [{"n": i, "seed": seed} for i in ids]}


class Node:
    """One replica: a shard on disk and its sockets. ``tcp``: reached over TCP, as
    from another machine (its endpoints name another machine)."""

    def __init__(self, path, tcp: bool, **shard_options):
        self.path, self.tcp, self.options = path, tcp, shard_options
        self.start()

    def start(self) -> None:
        self.shard = LocalShard(self.path, CONFIG, background_indexing=False, **self.options)
        self.served = ServedShard(self.shard, SECRET)
        self.server = ShardServer(self.served, secret=SECRET, tcp_host="127.0.0.1")
        where = self.server.endpoints()
        self.endpoints = Endpoints("another machine", where.unix, where.tcp) if self.tcp else where

    def stop(self) -> None:
        self.server.close()
        self.served.close(take_snapshot=False)

    def peer(self, name: str) -> Peer:
        return Peer(name, self.endpoints)


@pytest.fixture
def nodes(tmp_path):
    made = {name: Node(tmp_path / name, tcp=name == "a") for name in ("p", "a", "b")}
    yield made
    for node in made.values():
        try:
            node.stop()
        except RuntimeError:
            pass  # stopped by the test


def peers(nodes, *names):
    return [nodes[n].peer(n) for n in names]


def same(*shards: LocalShard) -> None:
    digests = {s.digest() for s in shards}
    assert len(digests) == 1, digests
    assert len({s.seq for s in shards}) == 1, [s.seq for s in shards]


def test_a_write_reaches_every_peer_before_it_returns(nodes):
    primary = nodes["p"].served
    for i in range(5):
        outcome = primary.replicate(upsert(range(i * 10, i * 10 + 10), seed=i), True, 1, peers(nodes, "a", "b"))
        assert outcome.seq == i + 1
        assert sorted(outcome.acked) == ["a", "b"] and outcome.failed == {} and not outcome.stale
        # Acknowledged means applied on the peer already, not merely sent; and, with
        # wait, durable on the primary and on every peer.
        assert nodes["a"].shard.seq == nodes["b"].shard.seq == i + 1
        assert [nodes[n].shard.wal.synced_seq for n in "pab"] == [i + 1] * 3
    outcome = primary.replicate(upsert([99]), False, 1, peers(nodes, "a", "b"))
    assert nodes["p"].shard.wal.synced_seq == outcome.seq - 1  # without wait: logged, not fsynced
    same(nodes["p"].shard, nodes["a"].shard, nodes["b"].shard)
    assert nodes["a"].shard.digest().points_count == 51


def test_concurrent_writes_to_the_same_points_leave_every_replica_identical(nodes):
    primary = nodes["p"].served
    errors = []

    def writer(seed: int) -> None:
        try:
            for k in range(15):  # the same 20 ids from every thread: last writer wins, in one order
                outcome = primary.replicate(upsert(range(20), seed=seed * 100 + k), False, 1, peers(nodes, "a", "b"))
                assert not outcome.failed
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    same(nodes["p"].shard, nodes["a"].shard, nodes["b"].shard)
    assert nodes["p"].shard.seq == 60


def test_a_lost_peer_is_reported_at_once_and_caught_up_when_it_returns(nodes):
    primary = nodes["p"].served
    primary.replicate(upsert(range(10)), True, 1, peers(nodes, "a", "b"))
    nodes["a"].stop()
    started = time.monotonic()
    outcome = primary.replicate(upsert(range(10, 20)), True, 1, peers(nodes, "a", "b"), timeout=20)
    assert outcome.acked == ("b",) and set(outcome.failed) == {"a"}
    assert time.monotonic() - started < 10  # a refused connection fails the peer, no wait for the timeout
    primary.replicate(upsert(range(20, 30)), True, 1, peers(nodes, "b"))  # "a" left out: as if marked dead

    nodes["a"].start()  # a restart: the same storage, new sockets
    assert nodes["a"].shard.seq == 1
    outcome = primary.replicate(upsert(range(30, 40)), True, 1, peers(nodes, "a", "b"))
    assert sorted(outcome.acked) == ["a", "b"], outcome.failed  # the gap filled from the primary's log first
    same(nodes["p"].shard, nodes["a"].shard, nodes["b"].shard)


def test_a_peer_behind_the_retained_log_is_reported_as_needing_a_transfer(tmp_path):
    primary = Node(tmp_path / "p", tcp=False, wal_capacity_bytes=1, wal_retain_bytes=1, wal_segment_bytes=4096)
    peer = Node(tmp_path / "a", tcp=True)
    try:
        primary.served.replicate(upsert(range(5)), True, 1, [peer.peer("a")])
        peer.stop()
        for i in range(5):  # each write (bigger than a log segment) snapshots the primary, trims its log
            primary.served.replicate(upsert(range(200), seed=i + 1), True, 1, [])
            primary.shard.snapshot()
        peer.start()
        outcome = primary.served.replicate(upsert(range(5), seed=9), True, 1, [peer.peer("a")], timeout=20)
        assert outcome.acked == () and "full transfer" in outcome.failed["a"]
        assert peer.shard.seq == 1  # nothing applied out of order
    finally:
        peer.stop()
        primary.stop()


def test_a_peer_that_saw_a_newer_epoch_marks_the_write_stale(nodes):
    primary = nodes["p"].served
    primary.replicate(upsert(range(5)), True, 1, peers(nodes, "a", "b"))
    nodes["a"].shard.fence(2)  # a new primary was promoted; "a" heard of it
    outcome = primary.replicate(upsert(range(5, 10)), True, 1, peers(nodes, "a", "b"), timeout=20)
    assert outcome.stale and set(outcome.failed) == {"a"} and outcome.acked == ("b",)
    assert nodes["a"].shard.seq == 1


def test_a_primary_that_saw_a_newer_epoch_refuses_and_forwards_nothing(nodes):
    primary = nodes["p"].served
    primary.replicate(upsert(range(5)), True, 1, peers(nodes, "a"))
    nodes["p"].shard.fence(3)
    with pytest.raises(StaleEpoch):
        primary.replicate(upsert(range(5, 10)), True, 2, peers(nodes, "a"))
    with pytest.raises(BadInput):  # a refused op is not forwarded either
        primary.replicate({"type": "upsert", "ids": [1], "vectors": {"": np.zeros((1, 3), np.float32)},
                           "payloads": [{}]}, True, 3, peers(nodes, "a"))
    assert nodes["p"].shard.seq == nodes["a"].shard.seq == 1


def test_a_silent_peer_fails_the_write_at_the_timeout(nodes):
    primary = nodes["p"].served
    primary.replicate(upsert(range(5)), True, 1, peers(nodes, "a", "b"))
    with nodes["b"].shard.lock:  # "b" cannot apply anything while the test holds its lock
        started = time.monotonic()
        outcome = primary.replicate(upsert(range(5, 10)), True, 1, peers(nodes, "a", "b"), timeout=1.0)
        assert time.monotonic() - started >= 1.0
    assert outcome.acked == ("a",) and "no acknowledgement within 1 s" in outcome.failed["b"]
    # Released, "b" applies it in the background; the next write finds it in step.
    outcome = primary.replicate(upsert(range(10, 15)), True, 1, peers(nodes, "a", "b"))
    assert sorted(outcome.acked) == ["a", "b"]
    same(nodes["p"].shard, nodes["a"].shard, nodes["b"].shard)


def test_a_peer_no_longer_named_loses_its_link(nodes):
    primary = nodes["p"].served
    primary.replicate(upsert(range(5)), True, 1, peers(nodes, "a", "b"))
    links = dict(primary.replicator._links)
    assert set(links) == {"a", "b"}
    primary.replicate(upsert(range(5, 10)), True, 1, peers(nodes, "b"))
    assert set(primary.replicator._links) == {"b"}
    links["a"]._thread.join(5)
    assert not links["a"]._thread.is_alive()
    assert nodes["a"].shard.seq == 1 and nodes["b"].shard.seq == 2


def test_a_peer_holding_the_old_primarys_last_write_is_named_failed_not_skipped(nodes):
    """The old primary p forwarded write 2 to b but not to a, and was lost; a is
    promoted (epoch 2) and writes its own 2. b must not count it as a re-send."""
    p, a, b = (nodes[n].served for n in ("p", "a", "b"))
    assert sorted(p.replicate(upsert(range(10)), True, 1, peers(nodes, "a", "b")).acked) == ["a", "b"]
    nodes["p"].shard.apply(upsert(range(10, 20), seed=1), True, 1)  # the old primary's last write ...
    b.apply_replicated_batch(p.records_after(1), 1, True)  # ... reached b alone
    outcome = a.replicate(upsert(range(20, 30), seed=2), True, 2, peers(nodes, "b"))
    assert outcome.seq == 2 and "b" in outcome.failed and "diverged" in outcome.failed["b"]
    assert nodes["b"].shard.seq == 2 and 25 not in nodes["b"].shard.points.offset_of
