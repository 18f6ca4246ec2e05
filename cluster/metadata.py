"""Collection metadata replicated by Raft (PySyncObj).

:class:`MetadataStore` holds the state of ``cluster.metadata_ops`` on every node and
changes it only through the Raft log: ``propose`` sends the op's JSON to the leader,
which appends it to the log; once a majority has it, every node applies it with
``metadata_ops.apply`` in log order. One node with no partners is a one-node cluster
that elects itself and commits alone.

What goes into the log is a JSON *string* handed to one ``@replicated`` method.
(PySyncObj frames it as pickle of ``(method id, (that string,))``; no object of ours
is pickled.) Full dumps ("log compaction") use our own serializer, which writes the
state as JSON, so the dump file is readable and holds no pickle of our objects.

On disk, in ``<storage>/raft/``:

    journal.bin         PySyncObj's log (memory-mapped; entries as they are received)
    journal.bin.meta    PySyncObj's term / vote / commit index
    dump.json           {"format", "v", "state", "last_entry", "prev_entry", "cluster"}

PySyncObj facts this module relies on (0.3.x):
- The journal is an mmap: a killed process loses nothing the kernel has, but nothing
  is msynced until shutdown. So every apply msyncs the journal before the proposer
  hears back, and the directory is fsynced after a dump is renamed into place.
- At start the journal is replayed up to the commit index saved in the ``.meta``
  file (rewritten about once a second); the rest is applied when a leader commits a
  no-op of its new term. A one-node cluster elects itself after one election timeout
  (``election_timeout`` below); ``wait_ready`` waits for that.
- Without ``bindAddress`` PySyncObj listens on 0.0.0.0; the store always binds the
  exact address it advertises. Its peer protocol is pickle over TCP with admin
  commands; with ``password`` every message is authenticated and encrypted (Fernet)
  before it is unpickled, so the gateway always passes one (``cluster.keys``).
- Its tick thread stops when the thread that built the SyncObj exits; the store ties
  it to the main thread instead, so building it from an executor thread is safe.
- ``appendEntriesUseBatch=False`` makes a proposal wake the Raft thread at once (a
  pipe) instead of waiting for the next batch: a commit takes ~2-5 ms on a 3-node
  loopback cluster; a one-node cluster commits on its next tick (~20 ms).
- A proposal that times out may still be committed later (unknown outcome).
- Membership is fixed at start (no dynamic membership changes).
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.syncobj import SyncObjException

from cluster import metadata_ops
from cluster.metadata_ops import MalformedOp, MetaOp, OpResult
from shard.fileio import ensure_dir, fsync_dir
from shard.types import ShoalError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6335  # Qdrant's peer-to-peer port
DUMP_FORMAT = "shoal-metadata-dump"
DUMP_VERSION = 1

_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}


_CANDIDATE = 1  # PySyncObj's _RAFT_STATE.CANDIDATE


@dataclass(frozen=True)
class RaftStatus:
    """One node's view of the metadata Raft (``MetadataStore.raft_status``)."""

    self_address: str
    partners: tuple[str, ...]
    role: str  # "leader", "follower" or "candidate"
    leader: str | None  # the leader's address, if one is known
    term: int
    commit: int  # the last log index this node knows to be committed
    applied: int  # the last one it has applied
    # partner -> (looks in a row that found it unreachable, time of the latest), one
    # look per connection retry period (cluster.metadata RaftTimings.connection_retry)
    unreachable: dict[str, tuple[int, float]]
    last_tick: float | None  # wall-clock time of the Raft thread's last tick
    running: bool


class MetadataUnavailable(ShoalError):
    """The metadata change could not be committed (no leader, timeout, node closing).
    Its outcome may be unknown: the op may still be applied later."""


@dataclass(frozen=True)
class RaftTimings:
    """PySyncObj's clocks, in seconds. The defaults suit a LAN cluster; a one-node
    cluster uses :meth:`single_node` so that it elects itself within ~0.1 s."""

    tick_period: float = 0.05
    append_entries_period: float = 0.1
    election_timeout: tuple[float, float] = (0.4, 1.4)
    connection_timeout: float = 3.5
    connection_retry: float = 1.0
    leader_fallback_timeout: float = 30.0

    @staticmethod
    def single_node() -> RaftTimings:
        return RaftTimings(tick_period=0.02, append_entries_period=0.02, election_timeout=(0.07, 0.12))

    @staticmethod
    def fast_test() -> RaftTimings:
        """For in-process clusters on loopback driven by manual ticks."""
        return RaftTimings(tick_period=0.005, append_entries_period=0.01, election_timeout=(0.05, 0.15),
                           connection_timeout=2.0, connection_retry=0.05, leader_fallback_timeout=1.0)


class _Replica(SyncObj):
    """The SyncObj: holds the metadata state and applies log entries to it."""

    def __init__(self, self_address: str, partners: Sequence[str], conf: SyncObjConf,
                 on_apply: Callable[[MetaOp | None, OpResult, dict], None] | None):
        # Set before SyncObj.__init__: with autoTick its thread may apply entries at once.
        self._meta_state: dict[str, Any] = metadata_ops.empty_state()
        self._on_apply = on_apply
        self.listeners: tuple[Callable[[MetaOp | None, OpResult, dict], None], ...] = ()
        self._dump_sync_ticks = 0
        # What GET /cluster reports of the Raft thread: when it last ticked, and
        # which partners it found unreachable at its last looks (see raft_status).
        self.last_tick: float | None = None
        self.unreachable: dict[str, tuple[int, float]] = {}
        self._look_every = conf.connectionRetryTime
        self._next_look = 0.0
        conf.serializer = self._write_dump
        conf.deserializer = self._read_dump
        super().__init__(self_address, list(partners), conf)
        self.addOnTickCallback(self._after_tick)

    @replicated
    def _apply_op(self, op_json: str) -> dict[str, Any]:
        """THE replicated method: one JSON string in, one JSON result out."""
        op: MetaOp | None = None
        try:
            op = metadata_ops.op_from_json(orjson.loads(op_json))
        except (MalformedOp, orjson.JSONDecodeError, TypeError) as e:
            new_state, result = self._meta_state, OpResult.failure("bad_input", str(e))
        else:
            new_state, result = metadata_ops.apply(self._meta_state, op)
        self._meta_state = new_state
        self._msync_journal()
        for listener in (self._on_apply, *self.listeners):
            if listener is None:
                continue
            try:
                listener(op, result, new_state)
            except Exception:
                logger.exception("metadata on_apply callback failed")
        return result.to_json()

    # -- durability helpers around PySyncObj's private journal ----------------

    def _msync_journal(self) -> None:
        journal = getattr(self, "_SyncObj__raftLog", None)
        flush = getattr(journal, "flush", None)
        if flush is not None:
            flush()

    def _after_tick(self) -> None:
        now = time.time()
        self.last_tick = now
        if now >= self._next_look:
            self._look_at_partners(now)
        if self._dump_sync_ticks:
            # The dump was renamed into place (and the journal compacted on the
            # following tick): make both durable.
            self._dump_sync_ticks -= 1
            self._msync_journal()
            dump = self.conf.fullDumpFile
            if dump:
                fsync_dir(Path(dump).parent)

    def _look_at_partners(self, now: float) -> None:
        """Once per connection retry period: count, per partner, the looks in a
        row that found it unreachable. A new dict each time, so that readers in
        other threads never see one being changed."""
        self._next_look = now + self._look_every
        unreachable = {}
        for node in self.otherNodes:
            if not self.isNodeConnected(node):
                address = getattr(node, "address", None) or node.id
                count, _ = self.unreachable.get(address, (0, now))
                unreachable[address] = (count + 1, now)
        self.unreachable = unreachable

    # -- full dump as JSON ----------------------------------------------------

    def _write_dump(self, file_name: str, data: tuple) -> None:
        last_entry, prev_entry, cluster = data
        doc = {
            "format": DUMP_FORMAT,
            "v": DUMP_VERSION,
            "state": self._meta_state,
            "last_entry": _entry_to_json(last_entry),
            "prev_entry": _entry_to_json(prev_entry),
            "cluster": sorted(getattr(n, "id", str(n)) for n in cluster),
        }
        with open(file_name, "wb") as f:
            f.write(orjson.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        self._dump_sync_ticks = 3

    def _read_dump(self, file_name: str) -> tuple:
        with open(file_name, "rb") as f:
            doc = orjson.loads(f.read())
        if doc.get("format") != DUMP_FORMAT or doc.get("v") != DUMP_VERSION:
            raise ValueError(f"{file_name} is not a metadata dump of version {DUMP_VERSION}")
        self._meta_state = doc["state"]
        return _entry_from_json(doc["last_entry"]), _entry_from_json(doc["prev_entry"]), list(doc["cluster"])


def _entry_to_json(entry: tuple) -> list:
    command, idx, term = entry
    return [base64.b64encode(bytes(command)).decode("ascii"), idx, term]


def _entry_from_json(data: list) -> tuple:
    return base64.b64decode(data[0]), int(data[1]), int(data[2])


class Proposal:
    """A proposed op on its way through the log. ``result()`` gives its value or
    raises its error (``shard.types`` errors for rejected ops, MetadataUnavailable
    when it could not be committed)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._result: OpResult | None = None
        self._failure: str | None = None

    def _callback(self, result: Any, error: int) -> None:
        if error == FAIL_REASON.SUCCESS:
            self._result = OpResult.from_json(result)
        else:
            self._failure = _FAIL_NAMES.get(error, str(error))
        self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def outcome(self) -> OpResult:
        """The applied op's OpResult (errors not raised)."""
        if not self._event.is_set():
            raise MetadataUnavailable("the metadata change has not been committed yet")
        if self._failure is not None:
            raise MetadataUnavailable(f"the metadata change was not committed: {self._failure}")
        return self._result

    def result(self) -> Any:
        return self.outcome().unwrap()


class MetadataStore:
    """Raft-replicated collection metadata of one node.

    ``storage_dir`` is the node's storage folder (the journal and dump go in its
    ``raft/``). ``self_address`` is this node's ``host:port`` for peers, and the
    address it binds; ``partners`` are the other nodes' addresses (empty: one-node
    cluster). ``auto_tick=False`` leaves ticking to the caller (``tick()``), for
    deterministic in-process tests. ``on_apply(op, result, state)`` is called in the
    Raft thread after each entry is applied on this node; keep it quick.

    Reads (``collections()``, ``resolve()``...) answer from this node's applied state
    (a follower may lag the leader by a tick); each returns a copy.
    """

    def __init__(self, storage_dir: str | Path, *, self_address: str = f"127.0.0.1:{DEFAULT_PORT}",
                 partners: Sequence[str] = (), auto_tick: bool = True, timings: RaftTimings | None = None,
                 password: str | None = None, bind_address: str | None = None,
                 on_apply: Callable[[MetaOp | None, OpResult, dict], None] | None = None,
                 bind_retries: int = 5):
        self.raft_dir = ensure_dir(Path(storage_dir) / "raft")
        self.self_address = self_address
        self.partners = tuple(p for p in partners if p != self_address)
        self.auto_tick = auto_tick
        if timings is None:
            timings = RaftTimings() if self.partners else RaftTimings.single_node()
        low, high = timings.election_timeout
        conf = SyncObjConf(
            autoTick=auto_tick,
            autoTickPeriod=timings.tick_period,
            appendEntriesPeriod=timings.append_entries_period,
            raftMinTimeout=low,
            raftMaxTimeout=high,
            connectionTimeout=max(timings.connection_timeout, high),
            connectionRetryTime=timings.connection_retry,
            leaderFallbackTimeout=timings.leader_fallback_timeout,
            bindAddress=bind_address or self_address,
            bindRetryTime=0.1,
            maxBindRetries=bind_retries,
            journalFile=str(self.raft_dir / "journal.bin"),
            fullDumpFile=str(self.raft_dir / "dump.json"),
            password=password,
            dynamicMembershipChange=False,
            appendEntriesUseBatch=False,
            # Peers named by DNS (Kubernetes: a StatefulSet's pods behind a headless
            # Service) get a new address when their pod restarts; PySyncObj resolves
            # a name again only after this many seconds (600 by default).
            dnsCacheTime=5.0,
            dnsFailCacheTime=1.0,
        )
        try:
            self._replica = _Replica(self_address, self.partners, conf, on_apply)
        except SyncObjException as e:
            raise MetadataUnavailable(f"cannot start Raft on {self_address}: {e.errorCode}") from None
        if auto_tick:
            # PySyncObj stops ticking when the building thread exits; tie it to the
            # process's main thread instead (see module docstring).
            self._replica._SyncObj__mainThread = threading.main_thread()
            try:
                self._replica.waitBinded()
            except SyncObjException:
                self._replica.destroy_synchronous()
                raise MetadataUnavailable(f"cannot bind Raft address {conf.bindAddress}") from None
        self._closed = False

    # -- writes -------------------------------------------------------------

    def submit(self, op: MetaOp | dict[str, Any]) -> Proposal:
        """Proposes ``op`` without waiting. Validates that it is JSON of the
        vocabulary first (a malformed op never reaches the log)."""
        if self._closed:
            raise MetadataUnavailable("metadata store is closed")
        data = op.to_json() if isinstance(op, MetaOp) else op
        metadata_ops.op_from_json(data)
        proposal = Proposal()
        self._replica._apply_op(orjson.dumps(data).decode(), callback=proposal._callback)
        return proposal

    def propose(self, op: MetaOp | dict[str, Any], timeout: float = 10.0) -> Any:
        """Proposes ``op``, blocks until it is committed and applied on this node, and
        returns its value (e.g. True, or False for deleting a missing collection);
        raises Conflict / NotFound / BadInput for a rejected op, MetadataUnavailable
        if not committed within ``timeout`` s. Blocking: call from a thread, not the
        event loop. In manual-tick mode this node is ticked while waiting."""
        proposal = self.submit(op)
        deadline = time.monotonic() + timeout
        if self.auto_tick:
            proposal.wait(timeout)
        else:
            while not proposal.done() and time.monotonic() < deadline:
                self.tick(0.001)
        if not proposal.done():
            raise MetadataUnavailable(f"metadata change not committed within {timeout:g}s (outcome unknown)")
        return proposal.result()

    def listen(self, listener: Callable[[MetaOp | None, OpResult, dict], None]) -> None:
        """Call ``listener(op, result, state)`` after every entry applied from now on,
        as ``on_apply`` (in the Raft thread: keep it quick, hand work elsewhere)."""
        self._replica.listeners = (*self._replica.listeners, listener)

    # -- ticking and readiness ------------------------------------------------

    def tick(self, time_to_wait: float = 0.0) -> None:
        """One PySyncObj tick (manual-tick mode only)."""
        if self.auto_tick:
            raise RuntimeError("tick() is for auto_tick=False stores")
        self._replica.doTick(time_to_wait)

    def is_ready(self) -> bool:
        """A leader is known and this node has applied everything it committed."""
        return self._replica.isReady() and self._replica._getLeader() is not None

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Waits (ticking in manual mode) until :meth:`is_ready`; False on timeout."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() >= deadline:
                return False
            if self.auto_tick:
                time.sleep(0.01)
            else:
                self.tick(0.001)
        return True

    # -- reads ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return copy.deepcopy(self._replica._meta_state)

    @property
    def version(self) -> int:
        return self._replica._meta_state["version"]

    def collections(self) -> dict[str, dict[str, Any]]:
        """name -> {"config", "placement"} of every collection."""
        return copy.deepcopy(self._replica._meta_state["collections"])

    def collection(self, name: str) -> dict[str, Any] | None:
        record = self._replica._meta_state["collections"].get(name)
        return copy.deepcopy(record) if record is not None else None

    def incarnation(self, name: str) -> str | None:
        """The incarnation of collection ``name`` (None: no such collection); no copy made."""
        record = self._replica._meta_state["collections"].get(name)
        return (record.get("placement") or {}).get("incarnation") if record is not None else None

    def aliases(self) -> dict[str, str]:
        return dict(self._replica._meta_state["aliases"])

    def resolve(self, name_or_alias: str) -> str | None:
        """The collection a name or alias refers to (alias first, as Qdrant), or None."""
        return metadata_ops.resolve(self._replica._meta_state, name_or_alias)

    # -- cluster status ---------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._replica._isLeader()

    @property
    def leader(self) -> str | None:
        node = self._replica._getLeader()
        return getattr(node, "address", None) if node is not None else None

    def status(self) -> dict[str, Any]:
        s = self._replica.getStatus()
        return {"self": self.self_address, "leader": self.leader, "is_leader": self.is_leader,
                "term": s["raft_term"], "commit_index": s["commit_idx"], "last_applied": s["last_applied"],
                "log_len": s["log_len"], "partners": list(self.partners), "has_quorum": s["has_quorum"]}

    def raft_status(self) -> RaftStatus:
        """This node's view of the Raft, for ``GET /cluster``. Read from another
        thread without locks: each value is one attribute read of PySyncObj's
        (getStatus() iterates dicts the Raft thread changes)."""
        replica = self._replica
        state = getattr(replica, "_SyncObj__raftState", None)
        leader = self.leader
        if replica._isLeader():
            role = "leader"
        elif state == _CANDIDATE:
            role = "candidate"
        else:
            role = "follower"
        return RaftStatus(
            self_address=self.self_address, partners=self.partners, role=role, leader=leader,
            term=replica.raftCurrentTerm, commit=replica.raftCommitIndex, applied=replica.raftLastApplied,
            unreachable=dict(replica.unreachable), last_tick=replica.last_tick, running=not self._closed)

    def force_compaction(self) -> None:
        """Writes a full dump at the next tick and trims the journal (PySyncObj does
        it by itself every 5,000 entries or 5 minutes)."""
        self._replica.forceLogCompaction()

    def close(self) -> None:
        """Stops the Raft node; its files stay for the next start."""
        if self._closed:
            return
        self._closed = True
        if self.auto_tick:
            self._replica.destroy_synchronous()
        else:
            self._replica.destroy()
