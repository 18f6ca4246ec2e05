"""A primary's side of replication: apply a write, forward it in order, report who has it.

docs/cluster.md ("Writes") has the protocol; this module is the shard actor's part of it,
without Ray (threads and blocking sockets; tested with real shards and sockets).

The gateway calls ``ServedShard.replicate(op, wait, epoch, peers, timeout)`` on a shard's
primary. The primary applies the op (``LocalShard.apply`` with the epoch: refused if a newer
primary exists), then hands the logged record to one *link* per peer replica, and makes it
durable (``sync_log``, for ``wait``) while the peers make it durable on their side. A link is a
thread with one connection to its peer (Unix socket on this machine, authenticated TCP
elsewhere: ``cluster.wire``) that sends the records in sequence order, in batches, and
records the highest sequence the peer has applied. ``replicate`` returns once every peer has
the write or has failed (or at ``timeout``): a ``WriteOutcome`` naming both. The gateway then
decides, with ``cluster.routing.write_verdict``, and marks the failed replicas ``dead``
through Raft before it answers the client. Waiting for every peer, not just a quorum, is
what makes that rule hold: a replica left active never lacks an acknowledged write.

Apply and hand-over happen under one lock, so links receive records in sequence order. A
peer that is behind (it was restarted, or it is new) answers ``SequenceGap`` naming the
record it needs: the link fills the gap from the primary's log (``records_after``) before
going on; if the log no longer reaches back that far (``LogTruncated``) the peer needs a
full transfer, which the controller arranges (the link reports it failed meanwhile, and
asks the peer where it is at each retry: after the transfer it goes on from the copy's
sequence number, ``cluster.transfer``).

Membership travels with each write (``peers``): the actor keeps no replica set of its own.
A link whose replica is no longer named is closed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cluster import transfer
from cluster.transfer import ExportInfo, TransferInProgress
from cluster.transport import BlockingChannel, Endpoints
from shard import codec, fileio, snapshot
from shard.types import LogTruncated, SequenceGap, StaleEpoch

log = logging.getLogger(__name__)

BATCH_RECORDS = 256  # records per call to a peer
BATCH_BYTES = 16 << 20  # and bytes (but for the first record)
PENDING_BYTES = 64 << 20  # records a link keeps in memory for a peer that is behind; the rest come from the log
CALL_TIMEOUT = 30.0  # seconds a peer has to apply one batch
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)  # between attempts to reach a failing peer


@dataclass(frozen=True)
class Peer:
    """A replica the primary forwards to: its id and where its actor listens."""

    replica: str
    endpoints: Endpoints


@dataclass(frozen=True)
class WriteOutcome:
    """What ``replicate`` did: the write's sequence number on the shard, the peers
    that applied it (durably if the write waited), the peers that did not and why.
    ``stale``: a peer has seen a newer epoch, so this primary has been replaced."""

    seq: int
    acked: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)
    stale: bool = False


class _Link:
    """Brings one peer up to the primary's sequence, in order, from its own thread."""

    def __init__(self, replicator: Replicator, peer: Peer):
        self.peer = peer
        self._replicator = replicator
        self._cond = replicator._cond
        self.acked = -1  # highest seq the peer has applied; -1 until it said
        self.error: str | None = None  # why the last attempt failed; None after a success
        self.stale = False
        self._pending: deque[tuple[int, bytes]] = deque()  # handed over, not yet acked
        self._pending_bytes = 0
        self._target = 0  # the last seq handed over
        self._sync_to = 0  # records up to here must be durable on the peer (wait=true writes)
        self._epoch = 0
        self._closed = False
        self._kick = False  # a write came while the link was backing off: try again now
        self._channel: BlockingChannel | None = None
        self._thread = threading.Thread(target=self._run, name=f"replicate-{peer.replica}", daemon=True)
        self._thread.start()

    # Called with the replicator's condition held.
    def hand_over(self, seq: int, record: bytes, epoch: int, wait: bool) -> None:
        self._pending.append((seq, record))
        self._pending_bytes += len(record)
        while self._pending_bytes > PENDING_BYTES and len(self._pending) > 1:
            _, dropped = self._pending.popleft()  # the log still has it
            self._pending_bytes -= len(dropped)
        self._target = seq
        self._epoch = max(self._epoch, epoch)
        if wait:
            self._sync_to = seq
        # A new write is a new try: a peer that failed before (restarted, or filled
        # by a transfer since) is asked at once rather than after the backoff, and
        # this write waits for that answer instead of taking the old failure.
        self.error = None
        self._kick = True

    def close(self) -> None:
        self._closed = True
        self._cond.notify_all()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._closed and self.acked >= self._target and self.error is None:
                    self._cond.wait()
                if self._closed:
                    break
                batch, epoch, sync = self._next_batch()
            try:
                applied = self._send(batch, epoch, sync)
            except SequenceGap as gap:
                self._set(acked=gap.expected - 1, error=None)
                failures = 0
                continue
            except StaleEpoch as exc:
                self._set(error=str(exc), stale=True)
            except LogTruncated as exc:
                self._set(error=f"it is behind the primary's log and needs a full transfer ({exc})")
            except Exception as exc:  # noqa: BLE001 - any failure: report it, drop the connection, retry
                self._drop_channel()
                self._set(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                self._set(acked=applied, error=None)
                failures = 0
                continue
            with self._cond:
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                self._cond.wait_for(lambda: self._kick or self._closed, delay)
                self._kick = False
            failures += 1
        self._drop_channel()

    def _next_batch(self) -> tuple[list[tuple[int, bytes]], int, bool]:
        """The records after ``acked`` (the condition held): from memory when they
        are there, else from the primary's log. With ``acked`` unknown, the newest
        record alone: the peer answers with the gap it has, if any."""
        while self._pending and self._pending[0][0] <= self.acked:
            _, record = self._pending.popleft()
            self._pending_bytes -= len(record)
        if self.acked < 0:
            batch = [self._pending[-1]] if self._pending else []
        elif self._pending and self._pending[0][0] == self.acked + 1:
            batch, size = [], 0
            for seq, record in self._pending:
                if batch and (len(batch) >= BATCH_RECORDS or size + len(record) > BATCH_BYTES):
                    break
                batch.append((seq, record))
                size += len(record)
        else:
            batch = None  # from the log, outside the lock
        return batch, self._epoch, self._sync_to > self.acked  # a waiting write not yet durable there

    def _send(self, batch, epoch: int, sync: bool) -> int:
        if batch is None:
            try:
                batch = self._replicator.shard.records_after(self.acked, BATCH_RECORDS, BATCH_BYTES)
            except LogTruncated:
                # Behind the log, as far as the link knows; a full transfer may have
                # moved the peer on since (cluster.transfer): ask it where it is.
                at = self._call("apply_replicated_batch", [], epoch, False)
                if at == self.acked:
                    raise
                return at
        if not batch:
            return self.acked
        return self._call("apply_replicated_batch", batch, epoch, sync)

    def _call(self, method: str, *args: Any) -> Any:
        if self._channel is None:
            self._channel = BlockingChannel.connect(self.peer.endpoints, self._replicator.secret)
        return self._channel.call(method, *args, timeout=CALL_TIMEOUT)

    def _set(self, acked: int | None = None, error: str | None = None, stale: bool = False) -> None:
        with self._cond:
            if acked is not None:
                self.acked = acked
            if error is not None and error != self.error:
                log.warning("replica %s: %s", self.peer.replica, error)
            self.error = error
            self.stale = self.stale or stale
            self._cond.notify_all()

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class Replicator:
    """The primary's links to its peers (see the module docstring)."""

    def __init__(self, shard: Any, secret: bytes | None):
        self.shard = shard
        self.secret = secret
        self._order = threading.Lock()  # apply + hand-over: links see records in seq order
        self._cond = threading.Condition()
        self._links: dict[str, _Link] = {}

    def replicate(self, op: dict, wait: bool, epoch: int, peers: list[Peer], timeout: float) -> WriteOutcome:
        with self._order:
            seq = self.shard.apply(op, False, epoch=epoch)
            record = codec.encode(op) if peers else b""
            with self._cond:
                self._retire({p.replica for p in peers})
                links = [self._link(p) for p in peers]
                for link in links:
                    link.hand_over(seq, record, epoch, wait)
                self._cond.notify_all()
        if wait:  # durable here while the peers make it durable there
            self.shard.sync_log()
        if not links:
            return WriteOutcome(seq)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                acked = tuple(link.peer.replica for link in links if link.acked >= seq)
                failed = {link.peer.replica: link.error for link in links
                          if link.acked < seq and link.error is not None}
                left = deadline - time.monotonic()
                if len(acked) + len(failed) == len(links) or left <= 0:
                    break
                self._cond.wait(left)
            for link in links:
                if link.acked < seq and link.peer.replica not in failed:
                    failed[link.peer.replica] = f"no acknowledgement within {timeout:g} s"
            return WriteOutcome(seq, acked, failed, stale=any(link.stale for link in links))

    def _link(self, peer: Peer) -> _Link:
        link = self._links.get(peer.replica)
        if link is not None and link.peer.endpoints != peer.endpoints:
            link.close()  # the replica's actor moved or restarted: a new connection
            link = None
        if link is None:
            link = self._links[peer.replica] = _Link(self, peer)
        return link

    def _retire(self, keep: set[str]) -> None:
        for replica in [r for r in self._links if r not in keep]:
            self._links.pop(replica).close()

    def close(self) -> None:
        with self._cond:
            self._retire(set())


class ServedShard:
    """What a shard actor's sockets and Ray calls serve: every ``LocalShard`` method,
    the two halves of replication (``replicate`` on the primary,
    ``apply_replicated_batch`` on its peers) and of a full transfer
    (``transfer_from`` on the target, ``transfer_open``/``_read``/``_close`` on the
    source: ``cluster.transfer``)."""

    def __init__(self, shard: Any, secret: bytes | None = None):
        self._shard = shard
        self.replicator = Replicator(shard, secret)
        self.exports = transfer.Exports(shard)
        self._replacing = threading.Lock()  # held while a transfer makes this replica a copy
        self._lock = threading.Lock()
        self._pushes: dict[str, Any] = {}  # push id -> folder of a shard a gateway is handing over
        transfer.remove_leftovers(shard.path)  # no transfer survives a restart

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def applied_seq(self) -> int:
        """The last sequence number the shard has applied."""
        return self._shard.seq

    def replicate(self, op: dict, wait: bool, epoch: int, peers: list[Peer], timeout: float = 10.0) -> WriteOutcome:
        return self.replicator.replicate(op, wait, epoch, peers, timeout)

    def replication_epoch(self) -> int:
        """The highest epoch the shard has seen (a transfer's target compares it with
        the epoch of its own last write: ``cluster.transfer``)."""
        return self._shard.highest_epoch

    def apply_replicated_batch(self, records: list[tuple[int, bytes]], epoch: int, wait: bool) -> int:
        """Apply the primary's records in order; the last seq applied (no records:
        where the replica is). With ``wait`` the log is fsynced once, after them
        (also when they were all applied already: the first send may not have
        waited). SequenceGap, StaleEpoch and a refused op propagate to the sender;
        TransferInProgress while a transfer replaces this replica (records applied
        now would be thrown away with the old state: the link retries, and finds
        the replica where the transfer left it)."""
        if self._replacing.locked():
            raise TransferInProgress("this replica is being replaced by a transfer; it takes records once that is done")
        applied = self._shard.seq
        for seq, record in records:
            applied = self._shard.apply_replicated(seq, record, epoch, wait=False)
        if wait:
            self._shard.sync_log()
        return applied

    def transfer_from(self, source: Peer, timeout: float) -> int:
        """Make this replica a copy of ``source`` (an active replica of the shard),
        pulled over one connection within ``timeout`` seconds, then apply the
        source's writes since; return the seq it is at afterwards. When it can be
        caught up from the source's log instead (``transfer.catch_up_in_place``), it
        is, and forwarded writes are taken meanwhile. The primary's
        link fills in what came later from its log. Forwarded writes are refused
        meanwhile, a second transfer too (TransferInProgress). A failure before
        the copy is in leaves this replica as it was. What the controller runs
        (``cluster.transfer`` has the protocol)."""
        started = time.monotonic()
        # A copy to this replica running already (asked before the replica was marked
        # dead again, by a write it refused meanwhile): wait for it, then go on from
        # where it left this replica, in place when that can be.
        if not self._replacing.acquire(timeout=max(0.0, timeout)):
            raise TransferInProgress("a transfer to this replica is running already")
        self._replacing.release()
        caught_up = transfer.catch_up_in_place(self._shard, source.endpoints, self.replicator.secret, timeout)
        if caught_up is not None:
            return caught_up.seq
        if not self._replacing.acquire(blocking=False):
            raise TransferInProgress("a transfer to this replica is running already")
        try:
            left = max(1.0, timeout - (time.monotonic() - started))
            return transfer.receive(self._shard, source.endpoints, self.replicator.secret, left).seq
        finally:
            self._replacing.release()

    def transfer_open(self, lease: float) -> ExportInfo:
        """A transfer's source: export the shard for a target (``cluster.transfer``)."""
        if self._replacing.locked():
            raise TransferInProgress("this replica is being replaced by a transfer: it is no source now")
        return self.exports.open(lease)

    def transfer_read(self, export_id: str, name: str, offset: int, size: int) -> bytes:
        return self.exports.read(export_id, name, offset, size)

    def transfer_close(self, export_id: str) -> None:
        self.exports.close(export_id)

    # A snapshot's shard handed over by a gateway (cluster.shard_copy.push).

    def push_open(self) -> str:
        """A fresh folder for a pushed shard; its id."""
        if self._replacing.locked():
            raise TransferInProgress("this replica is being replaced by a transfer")
        push_id = uuid.uuid4().hex
        folder = fileio.contained(self._shard.path, self._shard.path / f"{transfer.IN}{push_id}")
        folder.mkdir()
        with self._lock:
            self._pushes[push_id] = folder
        return push_id

    def push_write(self, push_id: str, name: str, offset: int, data: bytes) -> None:
        """``data`` at ``offset`` of file ``name`` (a plain name) of the pushed shard."""
        folder = self._push(push_id)
        if not snapshot.FILE_NAME.fullmatch(name):
            raise ValueError(f"not a shard file name: {name!r}")
        path = fileio.contained(folder, folder / name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, int(offset))
        finally:
            os.close(fd)

    def push_restore(self, push_id: str) -> dict[str, int]:
        """Make the shard hold the pushed copy (``LocalShard.restore``: graphs rebuilt
        from the vectors); its ``{"seq", "points"}``. The folder is gone after."""
        folder = self._push(push_id)
        if not self._replacing.acquire(blocking=False):
            raise TransferInProgress("this replica is being replaced by a transfer")
        try:
            fileio.fsync_tree(folder)
            return self._shard.restore(str(folder))
        finally:
            self._replacing.release()
            self.push_abort(push_id)

    def push_abort(self, push_id: str) -> None:
        with self._lock:
            folder = self._pushes.pop(push_id, None)
        if folder is not None:
            fileio.remove_tree(self._shard.path, folder)

    def _push(self, push_id: str):
        with self._lock:
            folder = self._pushes.get(push_id)
        if folder is None:
            raise transfer.ExportGone(f"no pushed shard {push_id!r} here")
        return folder

    def close(self, *args: Any, **kwargs: Any) -> Any:
        self.replicator.close()
        self.exports.close_all()
        for push_id in list(self._pushes):
            self.push_abort(push_id)
        return self._shard.close(*args, **kwargs)
