"""The engine side of replicated writes, on real files: epoch fencing, writes
applied at the primary's sequence numbers, catch-up from the log, and a full
transfer (export, open, catch up) under concurrent writes.

"Killed" shards are reopened without ``close``: no snapshot, no final fsync, the
old object simply abandoned, as after kill -9 (what was handed to the kernel
stays, since the page cache outlives the process).
"""

from __future__ import annotations

import pickle
import shutil
import threading

import numpy as np
import pytest

from shard import codec
from shard.local_shard import EPOCH_FILE, LocalShard
from shard.types import (
    Distance,
    Diverged,
    LogTruncated,
    NearestQuery,
    OptimizersConfig,
    PayloadSelector,
    PointNotFound,
    SearchRequest,
    SequenceGap,
    ShardConfig,
    StaleEpoch,
    VectorParams,
)
from shard.wal import WalError, WriteAheadLog

DIM = 8


def config(indexing_threshold=20000) -> ShardConfig:
    return ShardConfig(
        vectors={"": VectorParams(DIM, Distance.COSINE), "img": VectorParams(4, Distance.EUCLID)},
        optimizers=OptimizersConfig(indexing_threshold=indexing_threshold),
    )


def open_shard(path, **kwargs) -> LocalShard:
    kwargs.setdefault("background_indexing", False)
    return LocalShard(path, config(kwargs.pop("indexing_threshold", 20000)), **kwargs)


def killed(shard: LocalShard, **kwargs) -> LocalShard:
    """The shard as a restart after kill -9 finds it: reopened, never closed."""
    return open_shard(shard.path, **kwargs)


def upsert(ids, rng, payloads=None) -> dict:
    ids = list(ids)
    return {
        "type": "upsert",
        "ids": ids,
        "vectors": {"": rng.normal(size=(len(ids), DIM)).astype(np.float32),
                    "img": rng.normal(size=(len(ids), 4)).astype(np.float32)},
        "vector_mask": {"img": np.arange(len(ids)) % 2 == 0},
        "payloads": payloads if payloads is not None else [{"n": i, "g": i % 3} for i in ids],
    }


def script(rng) -> list[dict]:
    """Every kind of write, each valid where it stands in the list."""
    return [
        upsert(range(40), rng),
        {"type": "create_index", "field": "g", "schema": "integer"},
        {"type": "set_payload", "ids": [1, 2, 3], "payload": {"x": "y", "deep": {"a": [1, 2.5]}}, "key": None},
        {"type": "set_payload", "ids": [1], "payload": {"z": 1}, "key": "deep"},
        {"type": "overwrite_payload", "ids": [4], "payload": {"only": True}},
        {"type": "delete_payload", "ids": [5, 6], "keys": ["n"]},
        {"type": "clear_payload", "ids": [7]},
        {"type": "delete_points", "filter": {"must": [{"key": "g", "match": {"value": 2}}]}},
        {"type": "update_vectors", "ids": [0, 1], "vectors": {"img": rng.normal(size=(2, 4)).astype(np.float32)}},
        {"type": "delete_vectors", "ids": [3], "names": ["img"]},
        upsert(range(30, 60), rng),
        {"type": "set_payload", "filter": {"must": [{"key": "g", "match": {"value": 1}}]}, "payload": {"k": [1]},
         "key": None},
        {"type": "delete_index", "field": "g"},
        {"type": "delete_points", "ids": [0, 59, 1000]},
        upsert(["6f1b5d1e-5d1a-4c5e-9a5e-0e9c3b1a2b3c", 2], rng, [{"uuid": True}, None]),
    ]


def state(shard: LocalShard):
    """What a client can see of a shard, and the version of every point: ids,
    vectors (bytes), payloads, versions, payload indexes, last seq."""
    records = shard.scroll(filter=None, offset=None, limit=1 << 30, order_by=None,
                           with_payload=PayloadSelector(), with_vector=True)
    points = {}
    for r in records:
        version = int(shard.points.versions[shard.points.offset_of[r.id]])
        points[r.id] = ({n: v.tobytes() for n, v in r.vector.items()}, r.payload, version)
    return points, shard.info().payload_schema, shard.seq


def all_records(shard: LocalShard) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        batch = shard.records_after(out[-1][0] if out else shard.wal.first_seq - 1, limit=7)
        if not batch:
            return out
        out += batch


@pytest.fixture
def rng():
    return np.random.default_rng(11)


# ---------------------------------------------------------------------------
# Epochs.
# ---------------------------------------------------------------------------


def test_stale_epoch_is_refused_and_nothing_is_logged(tmp_path, rng):
    shard = open_shard(tmp_path)
    assert shard.highest_epoch == 0
    assert shard.apply(upsert([1, 2], rng), epoch=2) == 1
    assert shard.highest_epoch == 2
    before = state(shard)
    with pytest.raises(StaleEpoch) as refused:
        shard.apply({"type": "delete_points", "ids": [1]}, epoch=1)
    assert (refused.value.epoch, refused.value.current) == (1, 2)
    with pytest.raises(StaleEpoch):
        shard.apply_replicated(2, {"type": "delete_points", "ids": [1]}, epoch=1)
    assert state(shard) == before
    assert shard.wal.last_seq == 1 and [s for s, _ in shard.records_after(0)] == [1]
    # The same epoch, and a newer one, are taken; a write without one too (single node).
    assert shard.apply({"type": "clear_payload", "ids": [1]}, epoch=2) == 2
    assert shard.apply({"type": "clear_payload", "ids": [2]}, epoch=3) == 3
    assert shard.apply({"type": "set_payload", "ids": [2], "payload": {"a": 1}, "key": None}) == 4
    assert shard.highest_epoch == 3


def test_a_refused_write_does_not_raise_the_epoch(tmp_path, rng):
    shard = open_shard(tmp_path)
    shard.apply(upsert([1], rng), epoch=1)
    with pytest.raises(PointNotFound):
        shard.apply({"type": "clear_payload", "ids": [9]}, epoch=5)
    assert shard.highest_epoch == 1
    assert killed(shard).highest_epoch == 1
    assert shard.apply({"type": "clear_payload", "ids": [1]}, epoch=1) == 2


def test_epoch_survives_a_kill_and_restart(tmp_path, rng):
    shard = open_shard(tmp_path)
    shard.apply(upsert([1], rng), epoch=3, wait=False)
    again = killed(shard)
    assert again.highest_epoch == 3 and again.seq == 1
    with pytest.raises(StaleEpoch):
        again.apply({"type": "clear_payload", "ids": [1]}, epoch=2)
    again.fence(5)
    third = killed(again)
    assert third.highest_epoch == 5
    with pytest.raises(StaleEpoch):
        third.apply_replicated(2, {"type": "clear_payload", "ids": [1]}, epoch=4)
    # The epoch lives in one small file of the shard's folder, written whole.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [EPOCH_FILE]


def test_fence_raises_the_epoch_without_a_write(tmp_path, rng):
    shard = open_shard(tmp_path)
    shard.apply(upsert([1], rng), epoch=1)
    shard.fence(4)
    shard.fence(4)  # again: fine
    assert shard.highest_epoch == 4 and shard.seq == 1 and shard.wal.last_seq == 1
    with pytest.raises(StaleEpoch):
        shard.fence(3)
    with pytest.raises(StaleEpoch):
        shard.apply({"type": "clear_payload", "ids": [1]}, epoch=3)
    assert shard.apply_replicated(2, {"type": "clear_payload", "ids": [1]}, epoch=4) == 2


# ---------------------------------------------------------------------------
# Writes at the primary's sequence numbers.
# ---------------------------------------------------------------------------


def test_a_gap_is_refused_and_nothing_changes(tmp_path, rng):
    replica = open_shard(tmp_path)
    replica.apply_replicated(1, upsert([1, 2], rng), epoch=1)
    before = state(replica)
    with pytest.raises(SequenceGap) as gap:
        replica.apply_replicated(3, {"type": "clear_payload", "ids": [1]}, epoch=2)
    assert (gap.value.expected, gap.value.got) == (2, 3)
    assert state(replica) == before
    assert replica.wal.next_seq == 2 and replica.highest_epoch == 1
    # Filled in order, both go in.
    assert replica.apply_replicated(2, {"type": "delete_points", "ids": [2]}, epoch=2) == 2
    assert replica.apply_replicated(3, {"type": "clear_payload", "ids": [1]}, epoch=2) == 3
    assert list(state(replica)[0]) == [1] and replica.highest_epoch == 2


def test_a_write_the_replica_cannot_apply_changes_nothing(tmp_path, rng):
    """The primary took it, so the replica has diverged: refused, nothing logged."""
    replica = open_shard(tmp_path)
    replica.apply_replicated(1, upsert([1], rng), epoch=1)
    with pytest.raises(PointNotFound):
        replica.apply_replicated(2, {"type": "set_payload", "ids": [7], "payload": {"a": 1}, "key": None}, epoch=1)
    assert replica.seq == 1 and replica.wal.next_seq == 2


def test_a_resent_seq_is_a_no_op(tmp_path, rng):
    replica = open_shard(tmp_path)
    ops = [upsert([1, 2, 3], rng), {"type": "delete_points", "ids": [1]}, {"type": "clear_payload", "ids": [2]}]
    for seq, op in enumerate(ops, 1):
        assert replica.apply_replicated(seq, op, epoch=1, wait=False) == seq
    before, logged = state(replica), replica.records_after(0)
    assert replica.apply_replicated(3, ops[2], epoch=1) == 3
    assert replica.apply_replicated(2, logged[1][1], epoch=1) == 3  # as records_after sends it
    assert replica.apply_replicated(1, ops[0], epoch=1, wait=True) == 3
    assert replica.wal.synced_seq == 3  # a re-send that waits makes the first send durable
    assert state(replica) == before and replica.records_after(0) == logged


def test_a_restarted_primarys_new_write_at_a_number_it_lost_is_refused(tmp_path, rng):
    """The primary forwarded writes 2 and 3 without waiting for its disk, crashed,
    and came back at seq 1 with the same epoch (Ray restarted it; the metadata did
    not change). Its next write is numbered 2 again: the replica, which holds the
    lost 2, must not take it for a re-send (the two would hold different points
    from then on, silently). Diverged, nothing changed: it needs a full transfer."""
    primary, replica = open_shard(tmp_path / "primary"), open_shard(tmp_path / "replica")
    first = upsert([1, 2], rng)
    primary.apply(first, epoch=1)
    replica.apply_replicated(1, first, epoch=1)
    for seq, op in ((2, upsert([3], rng)), (3, {"type": "delete_points", "ids": [1]})):
        replica.apply_replicated(seq, op, epoch=1, wait=False)  # the primary's copies were never fsynced
    before = state(replica)
    new = {"type": "delete_points", "ids": [2]}
    assert primary.apply(new, epoch=1) == 2
    with pytest.raises(Diverged) as caught:
        replica.apply_replicated(2, primary.records_after(1)[0][1], epoch=1)
    assert (caught.value.seq, caught.value.applied) == (2, 3)
    with pytest.raises(Diverged):
        replica.apply_replicated(2, new, epoch=1)
    assert state(replica) == before


def test_a_new_primarys_write_where_a_replica_holds_an_older_primarys_is_refused(tmp_path, rng):
    """The old primary forwarded its write 3 to x, not to y, and was lost; y became
    primary (epoch 2) and writes its own 3. x must not take it as a re-send: it
    holds another write there (Diverged), and keeps refusing after a restart."""
    x, y = open_shard(tmp_path / "x"), open_shard(tmp_path / "y")
    first = [upsert([1, 2], rng), upsert([3], rng)]
    for seq, op in enumerate(first, 1):
        x.apply_replicated(seq, op, epoch=1)
        y.apply_replicated(seq, op, epoch=1)
    x.apply_replicated(3, {"type": "delete_points", "ids": [1]}, epoch=1)  # never reached y
    new = {"type": "delete_points", "ids": [2]}
    assert y.apply(new, epoch=2) == 3
    before = state(x)
    with pytest.raises(Diverged) as caught:
        x.apply_replicated(3, new, epoch=2)
    assert (caught.value.seq, caught.value.applied, caught.value.applied_epoch) == (3, 3, 1)
    assert state(x) == before
    x = killed(x)
    with pytest.raises(Diverged):
        x.apply_replicated(3, new, epoch=2)
    # A replica that took the new primary's write takes its re-send as one.
    z = open_shard(tmp_path / "z")
    for seq, record in y.records_after(0):
        z.apply_replicated(seq, record, epoch=2)
    assert z.apply_replicated(3, new, epoch=2) == 3 and state(z)[0] == state(y)[0]
    # A copy of y (what the transfer does) takes y's writes from then on.
    y.export(str(x.path / "incoming"))  # the transfer fetches into the target's folder
    x.fence(2)
    x.restore(str(x.path / "incoming"), exact=True)
    y.apply(upsert([9], rng), epoch=2)
    for seq, record in y.records_after(2):
        x.apply_replicated(seq, record, epoch=2)
    assert state(x)[0] == state(y)[0]


def test_a_replica_fed_the_primarys_writes_in_order_equals_the_primary(tmp_path, rng):
    primary = open_shard(tmp_path / "primary")
    forwarded = open_shard(tmp_path / "forwarded")  # gets each op as the primary applies it
    caught_up = open_shard(tmp_path / "caught-up")  # reads the primary's log afterwards
    ops = script(rng)
    for op in ops:
        seq = primary.apply(op, epoch=1, wait=False)
        assert forwarded.apply_replicated(seq, op, epoch=1, wait=False) == seq
    for seq, record in all_records(primary):
        assert caught_up.apply_replicated(seq, record, epoch=1) == seq
    assert caught_up.records_after(primary.seq) == []
    expected = state(primary)
    assert len(expected[0]) > 20 and expected[2] == len(ops)
    assert state(forwarded) == expected and state(caught_up) == expected
    # One log: same numbers and, encoded alike, the same bytes.
    assert all_records(forwarded) == all_records(caught_up) == all_records(primary)
    query = SearchRequest(NearestQuery(rng.normal(size=DIM).astype(np.float32)), limit=5)
    answers = [[(h.id, h.score) for h in s.search_batch([query])[0]] for s in (primary, forwarded, caught_up)]
    assert answers[0] == answers[1] == answers[2] and len(answers[0]) == 5


def test_wal_numbering_on_a_replica_equals_the_primarys_after_reopen(tmp_path, rng):
    primary = open_shard(tmp_path / "primary")
    replica = open_shard(tmp_path / "replica")
    ops = script(rng)
    for op in ops[:8]:
        replica.apply_replicated(primary.apply(op, epoch=1, wait=False), op, epoch=1, wait=False)
    primary, replica = killed(primary), killed(replica)
    assert replica.seq == primary.seq == 8
    assert replica.wal.next_seq == primary.wal.next_seq == 9
    assert all_records(replica) == all_records(primary)
    replica.snapshot()  # numbering also survives a snapshot and a reopen from it
    replica = killed(replica)
    for op in ops[8:]:
        seq = primary.apply(op, epoch=2)
        assert replica.wal.next_seq == seq
        assert replica.apply_replicated(seq, op, epoch=2) == seq
    primary, replica = killed(primary), killed(replica)
    assert [s for s, _ in all_records(replica)] == [s for s, _ in all_records(primary)] == list(range(1, 16))
    assert state(replica) == state(primary)


# ---------------------------------------------------------------------------
# The log kept for catch-up.
# ---------------------------------------------------------------------------


def small_log(path, retain: int) -> LocalShard:
    return open_shard(path, wal_segment_bytes=4096, wal_retain_bytes=retain)


def fill(shard: LocalShard, rng, n: int) -> list[dict]:
    ops = [upsert([i % 50], rng) for i in range(n)]
    for op in ops:
        shard.apply(op, epoch=1, wait=False)
    return ops


def test_records_after_a_snapshot_within_retention_and_beyond(tmp_path, rng):
    shard = small_log(tmp_path / "p", retain=16 * 1024)
    fill(shard, rng, 400)  # about 130 KB of log
    shard.snapshot()
    first = shard.wal.first_seq
    assert 200 < first < 400  # the oldest records were dropped, the newest 16 KB kept
    assert shard.wal.disk_bytes() >= 16 * 1024
    assert [s for s, _ in shard.records_after(first - 1, limit=5)] == list(range(first, first + 5))
    assert [s for s, _ in shard.records_after(390)] == list(range(391, 401))
    with pytest.raises(LogTruncated) as gone:
        shard.records_after(first - 2)
    assert (gone.value.after_seq, gone.value.first_seq) == (first - 2, first)
    with pytest.raises(LogTruncated):
        shard.records_after(0)
    # A restart keeps what was retained (the open truncates with the same setting).
    again = killed(shard, wal_segment_bytes=4096, wal_retain_bytes=16 * 1024)
    assert again.wal.first_seq == first and again.seq == 400
    assert len(all_records(again)) == 400 - first + 1
    # Without retention the snapshot takes the whole log with it, as before.
    bare = small_log(tmp_path / "bare", retain=0)
    fill(bare, rng, 100)
    bare.snapshot()
    assert bare.wal.first_seq == 101
    with pytest.raises(LogTruncated):
        bare.records_after(99)
    assert bare.records_after(100) == []


def test_a_replica_behind_a_snapshot_catches_up_from_the_retained_log(tmp_path, rng):
    primary = small_log(tmp_path / "primary", retain=128 * 1024)
    replica = open_shard(tmp_path / "replica")
    ops = fill(primary, rng, 60)
    for seq, op in enumerate(ops, 1):
        replica.apply_replicated(seq, op, epoch=1)
    replica = killed(replica)  # down while the primary goes on and snapshots twice
    fill(primary, rng, 100)
    primary.snapshot()
    fill(primary, rng, 100)
    primary.snapshot()
    assert primary.wal.first_seq <= replica.seq + 1
    while replica.seq < primary.seq:
        for seq, record in primary.records_after(replica.seq, limit=32):
            replica.apply_replicated(seq, record, epoch=1)
    assert state(replica) == state(primary)


def test_records_after_bounds_a_batch_by_bytes_but_returns_at_least_one(tmp_path, rng):
    shard = open_shard(tmp_path)
    fill(shard, rng, 10)
    size = len(shard.records_after(0, limit=1)[0][1])
    assert len(shard.records_after(0, max_bytes=1)) == 1
    assert len(shard.records_after(0, max_bytes=3 * size)) == 3
    assert [s for s, _ in shard.records_after(2, limit=3)] == [3, 4, 5]
    assert shard.records_after(10) == shard.records_after(11) == []


def test_records_are_read_while_writes_go_on_and_a_snapshot_waits(tmp_path, rng, monkeypatch):
    """records_after reads the log without the shard lock; a snapshot, which would
    delete the files being read, waits until the read is done."""
    shard = small_log(tmp_path, retain=0)
    ops = fill(shard, rng, 40)  # a dozen segments
    reading, release = threading.Event(), threading.Event()
    replay_segment = shard.wal._replay_segment

    def paused(*args):
        reading.set()
        assert release.wait(30)
        yield from replay_segment(*args)

    monkeypatch.setattr(shard.wal, "_replay_segment", paused)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(shard.records_after(0, limit=100)), daemon=True)
    reader.start()
    assert reading.wait(30)
    assert shard.apply(upsert([1], rng), wait=False) == 41  # writes go on
    snapshotter = threading.Thread(target=shard.snapshot, daemon=True)
    snapshotter.start()
    snapshotter.join(0.5)
    assert snapshotter.is_alive()  # waiting for the read
    release.set()
    reader.join(30)
    snapshotter.join(30)
    assert not reader.is_alive() and not snapshotter.is_alive()
    assert [s for s, _ in got] == list(range(1, 41))  # what existed when the read began
    assert [codec.decode(r)["ids"] for _, r in got] == [op["ids"] for op in ops]
    with pytest.raises(LogTruncated):  # the snapshot took place afterwards
        shard.records_after(0)


# ---------------------------------------------------------------------------
# A full transfer: export under writes, open the copy, catch it up.
# ---------------------------------------------------------------------------


def test_export_under_concurrent_writes_then_catch_up_equals_the_source(tmp_path, rng):
    # Background indexing and a graph on the source: the export writes a graph
    # that moves while it is written (snapshot.finish), as in production.
    source = open_shard(tmp_path / "source", background_indexing=True, indexing_threshold=1)
    source.apply(upsert(range(300), rng), epoch=1)
    stop, written, failures = threading.Event(), [0], []

    def writer() -> None:
        local = np.random.default_rng(5)
        try:
            while not stop.is_set():
                i = int(local.integers(0, 400))
                op = local.integers(0, 3)
                if op == 0:
                    source.apply(upsert([i, i + 1], local), epoch=1, wait=False)
                elif op == 1:
                    source.apply({"type": "delete_points", "ids": [i]}, epoch=1, wait=False)
                else:
                    source.apply({"type": "set_payload", "payload": {"w": i}, "key": None,
                                  "filter": {"must": [{"key": "n", "match": {"value": i}}]}}, epoch=1, wait=False)
                written[0] += 1
        except Exception as e:  # asserted on below, in the test's thread
            failures.append(e)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()

    def writes_reach(n: int) -> None:
        while written[0] < n:
            assert thread.is_alive(), failures
            stop.wait(0.005)

    try:
        writes_reach(200)
        exported = source.export(str(tmp_path / "export"))
        writes_reach(written[0] + 200)  # writes go on after the copy
        # The transfer's target: the copy becomes a new shard's snapshot.
        (tmp_path / "target").mkdir()
        shutil.move(str(tmp_path / "export"), str(tmp_path / "target" / "snapshot"))
        target = open_shard(tmp_path / "target", indexing_threshold=1)
        assert target.seq == exported["seq"] and len(target.points) == exported["points"]
        assert target.wal.next_seq == exported["seq"] + 1
        # Catch up while the source still takes writes, then once it has stopped.
        while target.seq < exported["seq"] + 300:
            assert thread.is_alive(), failures
            for seq, record in source.records_after(target.seq, limit=50):
                target.apply_replicated(seq, record, epoch=1, wait=False)
    finally:
        stop.set()
        thread.join(30)
    assert not failures and not thread.is_alive()
    while True:
        batch = source.records_after(target.seq, limit=50)
        if not batch:
            break
        for seq, record in batch:
            target.apply_replicated(seq, record, epoch=1, wait=False)
    assert exported["seq"] > 200 and source.seq > exported["seq"] + 300
    assert state(target) == state(source)
    assert source.wait_indexed() and target.wait_indexed()
    query = SearchRequest(NearestQuery(rng.normal(size=DIM).astype(np.float32)), limit=10, exact=True)
    assert [h.id for h in target.search_batch([query])[0]] == [h.id for h in source.search_batch([query])[0]]
    source.close()
    target.close()


# ---------------------------------------------------------------------------
# The log underneath.
# ---------------------------------------------------------------------------


def test_wal_append_at_insists_on_the_next_seq(tmp_path):
    with WriteAheadLog(tmp_path) as wal:
        assert wal.append_at(1, b"a") == 1
        for wrong in (1, 3, 0):
            with pytest.raises(WalError, match="next seq of this log is 2"):
                wal.append_at(wrong, b"x")
        assert wal.append(b"b") == 2 and wal.append_at(3, b"c") == 3
        assert list(wal.replay()) == [(1, b"a"), (2, b"b"), (3, b"c")]
        wal.truncate_before(10)  # a snapshot beyond the log: numbering moves past it
        assert wal.append_at(11, b"d") == 11


def test_wal_keeps_the_newest_whole_segments_holding_keep_bytes(tmp_path):
    records = [bytes([i % 251]) * 200 for i in range(1, 101)]

    def sizes() -> list[int]:
        return [p.stat().st_size for p in sorted(tmp_path.glob("*.wal"))]

    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        for record in records:
            wal.append(record)
        before = sizes()
        wal.truncate_before(100, keep_bytes=2000)
        kept = sizes()
        assert sum(kept) >= 2000 and sum(kept) - kept[0] < 2000  # no segment more than needed
        assert len(kept) < len(before)
        first = wal.first_seq
        assert list(wal.replay(first - 1)) == [(s, records[s - 1]) for s in range(first, 101)]
        assert wal.append(b"next") == 101
        wal.truncate_before(101)  # without keep_bytes: all of it goes, as before
        assert wal.first_seq == 102
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        assert wal.first_seq == 102 and wal.next_seq == 102


def test_wal_crash_while_dropping_retained_segments_leaves_a_readable_log(tmp_path):
    """Covered segments are deleted oldest first: a crash leaves the newer of them,
    which stay as more retained log (no floor marks them for deletion)."""
    records = [bytes([i]) * 200 for i in range(1, 61)]
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        for record in records:
            wal.append(record)
    backup = {p.name: p.read_bytes() for p in tmp_path.glob("*.wal")}
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        wal.truncate_before(60, keep_bytes=1500)
        kept_first = wal.first_seq
    deleted = sorted(set(backup) - {p.name for p in tmp_path.glob("*.wal")})
    assert len(deleted) > 3
    for name in deleted[1:]:  # the crash came after the first deletion
        (tmp_path / name).write_bytes(backup[name])
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        first = wal.first_seq
        assert 1 < first < kept_first and wal.next_seq == 61
        assert list(wal.replay(first - 1)) == [(s, records[s - 1]) for s in range(first, 61)]
        with pytest.raises(WalError, match="truncated"):
            list(wal.replay(0))


def test_wal_replay_from_any_point_of_a_segment_is_exact(tmp_path):
    """Replays start from the nearest remembered frame offset: check every start,
    with records of many sizes, in segments of a few hundred frames, while the
    active segment grows."""
    records = [bytes([i % 256]) * ((i * 37) % 90) for i in range(1, 1400)]
    with WriteAheadLog(tmp_path, segment_bytes=64 * 1024) as wal:
        wal.append_many(records[:1000])
        for after in list(range(0, 1000, 7)) + [255, 256, 257, 511, 512, 999]:
            got = list(wal.replay(after))
            assert got == [(s, records[s - 1]) for s in range(after + 1, 1001)], after
        wal.append_many(records[1000:])
        assert [s for s, _ in wal.replay(1200)] == list(range(1201, 1400))
    with WriteAheadLog(tmp_path, segment_bytes=64 * 1024) as wal:  # marks rebuilt at open
        for after in (0, 300, 777, 1024, 1398):
            assert list(wal.replay(after)) == [(s, records[s - 1]) for s in range(after + 1, 1400)]


def test_replication_errors_survive_pickling():
    """They cross processes (Ray, the shard socket) with their fields."""
    for error, fields in ((StaleEpoch(1, 2), ("epoch", "current")), (SequenceGap(5, 9), ("expected", "got")),
                          (LogTruncated(3, 10), ("after_seq", "first_seq")),
                          (Diverged(3, 2, 4, 1), ("seq", "epoch", "applied", "applied_epoch"))):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert [getattr(back, f) for f in fields] == [getattr(error, f) for f in fields]


def test_a_record_from_records_after_decodes_to_the_op(tmp_path, rng):
    shard = open_shard(tmp_path)
    op = upsert([1, 2], rng)
    shard.apply(op)
    ((seq, record),) = shard.records_after(0)
    back = codec.decode(record)
    assert seq == 1 and back["ids"] == [1, 2] and np.array_equal(back["vectors"][""], op["vectors"][""])
