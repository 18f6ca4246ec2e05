"""A full transfer (cluster.transfer): one replica made a copy of another, with real
shards on disk served by real sockets, over authenticated TCP and over the Unix
socket, while a primary goes on forwarding writes. No Ray."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest

from cluster import transfer
from cluster.transfer import ExportGone, TransferInProgress
from shard import codec
from tests.test_replicator import Node, same, upsert


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 16 KiB: a shard of a few thousand points takes dozens."""
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 16 << 10)


@pytest.fixture
def nodes(tmp_path):
    made = {}

    def make(name: str, tcp: bool = False, **options) -> Node:
        made[name] = Node(tmp_path / name, tcp=tcp, **options)
        return made[name]

    yield make
    for node in made.values():
        try:
            node.stop()
        except RuntimeError:
            pass  # stopped by the test


def fill(node: Node, points: int, seed: int = 0, epoch: int = 1) -> None:
    for start in range(0, points, 1000):
        node.shard.apply(upsert(range(start, min(start + 1000, points)), seed=seed + start), epoch=epoch)


def leftovers(*nodes: Node) -> list[str]:
    return sorted(p.name for n in nodes for p in n.path.iterdir() if p.name.startswith(transfer.PREFIX))


def count_calls(node: Node, method: str, before=None) -> list:
    """Count the calls ``node`` serves to ``method`` (``before(n)`` runs ahead of the n-th)."""
    calls = []
    real = getattr(node.served, method)

    def counted(*args, **kwargs):
        calls.append(args)
        if before is not None:
            before(len(calls))
        return real(*args, **kwargs)

    setattr(node.served, method, counted)  # the server looks methods up on the instance
    return calls


@pytest.mark.parametrize("tcp", [True, False], ids=["tcp", "unix"])
def test_a_transfer_makes_the_target_an_exact_copy_at_the_copys_sequence(nodes, tcp):
    source, target = nodes("source", tcp=tcp), nodes("target")
    fill(source, 4000)
    source.shard.apply({"type": "delete_points", "ids": list(range(0, 4000, 7))}, epoch=1)
    source.shard.fence(3)
    for i in range(60):  # the target's own log runs far ahead of the source's
        target.shard.apply(upsert([i], seed=i), epoch=1)
    reads = count_calls(source, "transfer_read")

    seq = target.served.transfer_from(source.peer("source"), timeout=60)

    assert seq == source.shard.seq == 5 and target.shard.seq == seq  # the copy's number, not one past the log
    same(source.shard, target.shard)
    assert target.shard.digest().points_count == 4000 - 572
    assert len(reads) > 10  # in chunks: never the whole export in one frame
    assert target.shard.highest_epoch == 3  # not below the source's
    assert target.shard.wal.next_seq == seq + 1 and target.shard.records_after(seq) == []
    assert leftovers(source, target) == []  # the export and the received copy are gone
    target.stop()
    target.start()  # durable: the restart sees the copy at its number
    same(source.shard, target.shard)


def test_writes_during_a_transfer_reach_the_target_once_it_is_done(nodes):
    primary = nodes("p", wal_retain_bytes=0)
    a, b = nodes("a", tcp=True), nodes("b")
    for i in range(20):
        primary.served.replicate(upsert(range(i * 100, i * 100 + 100), seed=i), False, 1, [b.peer("b")])
    primary.shard.snapshot()  # the log before it is gone: a new replica needs a full transfer
    outcome = primary.served.replicate(upsert(range(5), seed=99), True, 1, [a.peer("a"), b.peer("b")], timeout=20)
    assert outcome.acked == ("b",) and "full transfer" in outcome.failed["a"]

    stop, refused_once, failures, refused, during = threading.Event(), threading.Event(), [], [], []
    # The copying waits until the primary's link has been refused by the target once.
    count_calls(b, "transfer_read", before=lambda n: n == 2 and refused_once.wait(20))
    exported, real_open = [], b.served.transfer_open

    def transfer_open(lease):
        exported.append(real_open(lease))
        return exported[-1]

    b.served.transfer_open = transfer_open

    def writer() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            try:
                outcome = primary.served.replicate(upsert(range(k % 50, k % 50 + 20), seed=1000 + k), False, 1,
                                                   [a.peer("a"), b.peer("b")], timeout=5)
            except Exception as exc:  # noqa: BLE001 - asserted on below
                failures.append(exc)
                return
            during.append(outcome.seq)
            if "TransferInProgress" in outcome.failed.get("a", ""):
                refused.append(outcome.seq)
                refused_once.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(during) < 5:
            time.sleep(0.01)
        seq = a.served.transfer_from(b.peer("b"), timeout=60)
        written = len(during)
    finally:
        stop.set()
        thread.join(30)
    assert not failures
    assert written > 5 and refused  # writes went on, and the target refused them meanwhile
    # The writes the source took during the copying are in: pulled from its log.
    assert seq > exported[0].seq >= 22 and seq >= refused[0]
    # One more write: the link's next attempt (it retries a failing peer every few
    # seconds at most) finds the target where the transfer left it and fills in the
    # rest from the primary's log. Until then the write names the target failed.
    primary.served.replicate(upsert(range(3), seed=7), True, 1, [a.peer("a"), b.peer("b")], timeout=20)
    deadline = time.monotonic() + 10
    while a.shard.seq < primary.shard.seq and time.monotonic() < deadline:
        time.sleep(0.02)
    same(primary.shard, a.shard, b.shard)
    outcome = primary.served.replicate(upsert(range(3), seed=8), True, 1, [a.peer("a"), b.peer("b")], timeout=20)
    assert sorted(outcome.acked) == ["a", "b"], outcome.failed
    same(primary.shard, a.shard, b.shard)


def test_a_source_gone_midway_leaves_the_target_as_it_was(nodes):
    source, target = nodes("source", tcp=True), nodes("target")
    fill(source, 3000, epoch=2)
    target.shard.apply(upsert(range(10)), epoch=1)  # an older primary's write: a copy is needed
    before = (target.shard.digest(), target.shard.seq)
    stopped = threading.Event()

    def kill(n: int) -> None:
        if n == 3:
            source.stop()  # sockets closed, the export deleted: what a killed actor looks like to the target
            stopped.set()

    count_calls(source, "transfer_read", before=kill)
    with pytest.raises((ConnectionError, OSError)):
        target.served.transfer_from(source.peer("source"), timeout=30)
    assert stopped.wait(10)
    assert (target.shard.digest(), target.shard.seq) == before
    assert leftovers(source, target) == []
    # Not stuck in a transfer: takes forwarded records again, and may be transferred to.
    assert target.served.apply_replicated_batch([(2, codec.encode(upsert([50])))], 1, True) == 2
    source.start()
    assert target.served.transfer_from(source.peer("source"), timeout=30) == source.shard.seq
    same(source.shard, target.shard)


def test_a_silent_source_fails_the_transfer_at_its_timeout(nodes):
    source, target = nodes("source"), nodes("target")
    fill(source, 2000)
    release = threading.Event()
    count_calls(source, "transfer_read", before=lambda n: n == 2 and release.wait(10))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        target.served.transfer_from(source.peer("source"), timeout=1.0)
    assert time.monotonic() - started < 5
    release.set()
    assert target.shard.seq == 0 and leftovers(target) == []
    deadline = time.monotonic() + 10
    while leftovers(source) and time.monotonic() < deadline:  # the target told it to delete the export
        time.sleep(0.05)
    assert leftovers(source) == []


def test_a_second_transfer_waits_for_the_first_and_forwarded_writes_are_refused_while_one_runs(nodes):
    source, target = nodes("source"), nodes("target")
    fill(source, 2000)
    reading, release = threading.Event(), threading.Event()
    count_calls(source, "transfer_read", before=lambda n: n == 1 and (reading.set(), release.wait(10)))
    result = []
    thread = threading.Thread(target=lambda: result.append(target.served.transfer_from(source.peer("source"), 30)))
    second = threading.Thread(target=lambda: result.append(target.served.transfer_from(source.peer("source"), 30)))
    thread.start()
    try:
        assert reading.wait(10)
        with pytest.raises(TransferInProgress, match="running already"):  # not done within its timeout
            target.served.transfer_from(source.peer("source"), timeout=0.2)
        second.start()  # waits for the first, then catches up in place from where it left
        with pytest.raises(TransferInProgress, match="being replaced"):
            target.served.apply_replicated_batch(source.shard.records_after(0, limit=1), 1, True)
        with pytest.raises(TransferInProgress, match="no source"):
            target.served.transfer_open(30)
    finally:
        release.set()
        thread.join(30)
        if second.is_alive() or second.ident is not None:
            second.join(30)
    assert result == [source.shard.seq] * 2
    same(source.shard, target.shard)


def test_an_abandoned_export_is_deleted_when_its_lease_runs_out(nodes):
    source = nodes("source")
    fill(source, 500)
    export = source.served.transfer_open(0.3)
    assert leftovers(source) == [f"{transfer.OUT}{export.export_id}"]
    assert dict(export.files)["meta.json"] > 0 and export.seq == 1 and export.points == 500
    assert source.served.transfer_read(export.export_id, "meta.json", 0, 1 << 20)  # a read renews the lease
    deadline = time.monotonic() + 10
    while leftovers(source) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(source) == []
    with pytest.raises(ExportGone):
        source.served.transfer_read(export.export_id, "meta.json", 0, 10)


def test_folders_a_killed_transfer_left_are_deleted_when_the_replica_starts(nodes):
    node = nodes("r")
    node.stop()
    for name in (f"{transfer.OUT}x", f"{transfer.OUT}y.tmp", f"{transfer.IN}z"):
        (node.path / name).mkdir()
        (node.path / name / "vectors-0.npy").write_bytes(b"x" * 100)
    node.start()
    assert leftovers(node) == []


def test_the_copy_is_received_in_bounded_memory(nodes):
    source, target = nodes("source"), nodes("target")
    for start in range(0, 8000, 1000):  # ~8 MB, mostly payloads
        op = upsert(range(start, start + 1000))
        source.shard.apply({**op, "payloads": [{"text": f"{i:08d}" * 125} for i in op["ids"]]}, epoch=1)
    baseline = []

    def measure_from_here(_n: int) -> None:
        if not baseline:  # the export is made: from here on only the copying
            baseline.append(tracemalloc.get_traced_memory()[0])
            tracemalloc.reset_peak()

    count_calls(source, "transfer_read", before=measure_from_here)
    real_restore, peaks = target.shard.restore, []

    def restore(folder, exact=False):
        peaks.append(tracemalloc.get_traced_memory()[1] - baseline[0])
        return real_restore(folder, exact=exact)

    target.shard.restore = restore
    tracemalloc.start()
    try:
        target.served.transfer_from(source.peer("source"), timeout=60)
    finally:
        tracemalloc.stop()
    copied = sum(p.stat().st_size for p in (target.path / "snapshot").iterdir())
    # A few chunks in flight, and the 1 MiB receive buffer each end of a connection
    # holds (cluster.transport): never the export.
    bound = 12 * transfer.CHUNK_BYTES + (2 << 20)
    assert copied > 3 * bound and peaks[0] < bound, (peaks, copied)
    same(source.shard, target.shard)


def test_a_replica_of_the_sources_epoch_is_caught_up_in_place_from_its_log(nodes):
    source, target = nodes("source", tcp=True), nodes("target")
    fill(source, 3000, epoch=2)
    for seq, record in source.shard.records_after(0)[:2]:  # the target took the first writes, then stopped
        target.shard.apply_replicated(seq, record, 2)
    target.stop()
    target.start()  # restarted, as Ray restarts an actor: its storage kept
    opens = count_calls(source, "transfer_open")
    assert target.served.transfer_from(source.peer("source"), timeout=60) == source.shard.seq == 3
    assert opens == [] and leftovers(source, target) == []  # no copy made
    same(source.shard, target.shard)


@pytest.mark.parametrize("why", ["older epoch", "log trimmed"])
def test_otherwise_a_replica_is_copied_whole(nodes, why):
    source, target = nodes("source", wal_retain_bytes=0), nodes("target")
    fill(source, 2000, epoch=1)
    for seq, record in source.shard.records_after(0)[:1]:
        target.shard.apply_replicated(seq, record, 1)
    if why == "older epoch":  # a new primary since: what the target holds may not be its history
        source.shard.apply(upsert([5000]), epoch=2)
    else:
        source.shard.snapshot()  # the log before the snapshot is gone (nothing retained)
    opens = count_calls(source, "transfer_open")
    target.served.transfer_from(source.peer("source"), timeout=60)
    assert len(opens) == 1
    same(source.shard, target.shard)


def test_writes_go_on_while_a_replica_is_caught_up_in_place(nodes):
    primary, target = nodes("p"), nodes("t", tcp=True)
    for i in range(30):  # the target took these, then missed 30 more while it was away
        primary.served.replicate(upsert(range(i * 50, i * 50 + 50), seed=i), False, 2,
                                 [target.peer("t")] if i < 10 else [])
    stop, outcomes = threading.Event(), []

    def writer() -> None:
        k = 0
        while not stop.is_set() and k < 200:
            k += 1
            outcomes.append(primary.served.replicate(upsert([k % 40], seed=500 + k), True, 2, [target.peer("t")],
                                                     timeout=10))

    opens = count_calls(primary, "transfer_open")
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not outcomes:
            time.sleep(0.01)
        target.served.transfer_from(primary.peer("p"), timeout=60)
    finally:
        stop.set()
        thread.join(60)
    assert opens == [] and outcomes
    assert not any("TransferInProgress" in o.failed.get("t", "") for o in outcomes)  # never refused
    outcome = primary.served.replicate(upsert([1]), True, 2, [target.peer("t")], timeout=10)
    assert outcome.acked == ("t",)
    same(primary.shard, target.shard)


def test_the_source_keeps_the_log_after_its_export_until_the_target_caught_up(nodes):
    source = nodes("source", wal_retain_bytes=0)  # a snapshot keeps no log of its own
    fill(source, 1000)
    info = source.served.transfer_open(1.0)
    for i in range(5):  # writes during the copy
        source.shard.apply(upsert([2000 + i], seed=i), epoch=1)
    source.shard.snapshot()
    assert [seq for seq, _ in source.shard.records_after(info.seq)] == [2, 3, 4, 5, 6]
    source.served.transfer_close(info.export_id)  # the copy is whole: the files go ...
    source.shard.snapshot()
    assert len(source.shard.records_after(info.seq)) == 5  # ... the log after it stays a lease longer
    time.sleep(1.1)
    source.shard.apply(upsert([3000]), epoch=1)
    source.shard.snapshot()
    with pytest.raises(Exception, match="records after 1 are gone"):
        source.shard.records_after(info.seq)
