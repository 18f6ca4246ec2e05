"""The placement controller: where shard replicas live and how they are repaired, as a
pure state machine (docs/cluster.md, "Recovery and repair").

``Controller.handle(*events) -> list[effect]``: events in (the replicated metadata after
each apply, the Ray nodes alive, what replicas and transfers reported, the time),
effects out (metadata ops to propose through Raft, replicas to start or stop, transfers
to run, log lines). No Ray, no asyncio, no clock: the async shell in the gateway that is
the Raft leader carries the effects out and reports back (dask.distributed's worker
state machine is the model, as for ``cluster.health``).

Why it is shaped so:

- *The metadata is the truth, and the controller is level-triggered.* Each round it
  compares the replicated placement with the nodes alive and the replicas running, and
  asks for what is missing. It keeps no plans: a move is an added replica (balance)
  followed, once that one is active, by the shard trimmed back to its factor on the most
  loaded node. So a new Raft leader, built from the replicated state and fed the same
  reports, reaches the same decisions.
- *Its memory is small*: the effects it asked for and has not seen happen (so that a
  tick does not repeat them; asked again after ``retry_after``), when it last saw each
  node, since when each dead replica has been down, and what replicas reported
  (running, applied sequence, a failure not yet recorded as ``dead``, a transfer done
  but not yet recorded as ``active``). A new leader's shell re-reads the reports from
  Ray: it answers every StartReplica, even for a replica that already runs.
- *A proposal asked for counts as done.* A round plans on the metadata with the pending
  proposals applied by the same pure ``apply``, so nothing is proposed twice and each
  decision builds on the ones in flight; a pending proposal that ``apply`` would now
  refuse or dismiss is forgotten (it happened, or it was overtaken). Except that a
  promotion, a transfer's source or a removal rests only on replicas active in the
  metadata as applied: an activation in flight may yet be lost or dismissed.
- *Every race has its guard in the op*: state changes carry ``from_state`` (Qdrant's
  from_state, replica_set_state.rs), a promotion carries the next epoch, every op the
  collection's incarnation, a new replica an id its shard never used (its actor and
  storage are named by it, and a stop asked for a removed replica must not hit a new
  one); a stale or repeated proposal is refused harmlessly.

Shell contract: send every ``MetadataChanged`` in order, alone or several to one
``handle``; ``NodesSeen`` about every second; answer StartReplica with ReplicaStarted or
ReplicaFailed, StartTransfer with TransferDone or TransferFailed, StopReplica with
ReplicaStopped (also for an actor that did not exist); report a restart Ray did on its
own as ReplicaFailed then ReplicaStarted; and now and then sweep Ray's actors: each
listed replica found running as ReplicaStarted, found missing as ReplicaFailed, any
other found running as ReplicaStarted (so it is stopped). Reports may come late or
twice; the sweep corrects what a late one got wrong. A second StartTransfer to the same
target replaces the first (from the same source, it may adopt the running one: its
report then names the newer ``version``); the controller then awaits only the second.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Union

from cluster.metadata_ops import AddReplica, MetaOp, RemoveReplica, SetPrimary, SetReplicaState, apply, empty_state
from cluster.replicas import ReplicaState, next_replica_id, shard_factor

ACTIVE, PARTIAL = ReplicaState.ACTIVE.value, ReplicaState.PARTIAL.value
DEAD, INITIALIZING = ReplicaState.DEAD.value, ReplicaState.INITIALIZING.value
WARNING, INFO = logging.WARNING, logging.INFO


# ------------------------------------------------------------------ vocabulary


@dataclass(frozen=True, order=True)
class ReplicaKey:
    """One replica of one shard of one life (incarnation) of a collection."""

    collection: str
    incarnation: str
    shard: int
    replica: str

    def __str__(self) -> str:
        return f"replica {self.replica} of shard {self.shard} of `{self.collection}`"


@dataclass(frozen=True)
class _OfReplica:
    """The events and effects about one replica name it with the four fields of its key."""

    collection: str
    incarnation: str
    shard: int
    replica: str

    @property
    def key(self) -> ReplicaKey:
        return ReplicaKey(self.collection, self.incarnation, self.shard, self.replica)


@dataclass(frozen=True)
class MetadataChanged:
    """The replicated metadata after an apply (the state ``cluster.metadata_ops.apply``
    keeps), treated as immutable. Every one, in order: a transfer done is forgotten when
    its replica is seen to leave ``partial``."""

    state: dict[str, Any]


@dataclass(frozen=True)
class NodesSeen:
    """The Ray nodes that may host replicas and are alive at ``now``. A node missing for
    ``node_grace`` seconds is lost; an empty list declares no loss (more likely Ray's
    node table failing than every node gone, and with no node nothing could be repaired)."""

    now: float
    alive: frozenset[str]


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class ProposalFailed:
    """Raft did not take a proposal (not the leader now, a full queue, a timeout): it is
    proposed again at once if still wanted, rather than after ``retry_after``."""

    op: MetaOp
    reason: str = ""


@dataclass(frozen=True)
class ReplicaStarted(_OfReplica):
    """The replica's actor runs, its storage loaded up to ``applied_seq``."""

    applied_seq: int = 0


@dataclass(frozen=True)
class ReplicaFailed(_OfReplica):
    """The replica's actor died, failed to start, or stopped answering."""

    reason: str = ""


@dataclass(frozen=True)
class ReplicaStopped(_OfReplica):
    """The replica's actor is stopped and its storage deleted (or it never existed)."""


@dataclass(frozen=True)
class TransferDone(_OfReplica):
    """The transfer ``version`` to ``replica`` is complete: it holds what its source
    held, plus the writes forwarded to it meanwhile, up to ``applied_seq`` (checked by
    the target: its records and the forwarded writes join up)."""

    version: int
    applied_seq: int = 0


@dataclass(frozen=True)
class TransferFailed(_OfReplica):
    version: int
    reason: str = ""


@dataclass(frozen=True)
class Propose:
    """Propose ``op`` (AddReplica, SetReplicaState, RemoveReplica or SetPrimary) to Raft."""

    op: MetaOp


@dataclass(frozen=True)
class StartReplica(_OfReplica):
    """Run the replica's actor on ``node``, loading its storage (a no-op when it runs)."""

    node: str


@dataclass(frozen=True)
class StopReplica(_OfReplica):
    """Stop an actor the metadata no longer lists, and delete its storage. Its id is
    never listed again (``apply`` refuses a used one), so this cannot hit a new replica."""


@dataclass(frozen=True)
class StartTransfer:
    """Bring ``target`` (partial: it takes forwarded writes already) up to date from
    ``source`` (active): the log after its last sequence if the source still has it,
    else a snapshot, then the writes since (Qdrant's shard transfer, stream or snapshot).
    ``version`` is the metadata's version when it was asked; its report names it, so
    that the report of an earlier transfer (before the target failed and came back) is
    not taken for this one. Two leaders asking from the same metadata ask the same."""

    collection: str
    incarnation: str
    shard: int
    source: str
    target: str
    version: int

    @property
    def key(self) -> ReplicaKey:
        return ReplicaKey(self.collection, self.incarnation, self.shard, self.target)


@dataclass(frozen=True)
class Log:
    level: int
    text: str


Event = Union[MetadataChanged, NodesSeen, Tick, ProposalFailed, ReplicaStarted, ReplicaFailed, ReplicaStopped,
              TransferDone, TransferFailed]
Effect = Union[Propose, StartReplica, StopReplica, StartTransfer, Log]


# ------------------------------------------------------------ reading the state


def _order(replica: str) -> tuple[int, str]:
    """Replica ids in creation order (r2 before r10): the deterministic tie-break."""
    return len(replica), replica


def _collections(state: dict[str, Any]) -> Iterator[tuple[str, str, int, list]]:
    """(name, incarnation, replication factor, shards) of every collection with replica
    placement; a collection of the single-node layout is not the controller's."""
    for name in sorted(state["collections"]):
        record = state["collections"][name]
        placement = record.get("placement")
        if isinstance(placement, dict) and isinstance(placement.get("shards"), list):
            factor = (record.get("config") or {}).get("params", {}).get("replication_factor", 1)
            factor = factor if isinstance(factor, int) and factor >= 1 else 1
            yield name, placement["incarnation"], factor, placement["shards"]


def _replicas(state: dict[str, Any]) -> Iterator[tuple[ReplicaKey, dict[str, Any]]]:
    for name, incarnation, _, shards in _collections(state):
        for i, shard in enumerate(shards):
            for r in sorted(shard["replicas"], key=_order):
                yield ReplicaKey(name, incarnation, i, r), shard["replicas"][r]


def _shard(state: dict[str, Any], collection: str, incarnation: str, shard: int) -> dict[str, Any] | None:
    placement = (state["collections"].get(collection) or {}).get("placement") or {}
    if placement.get("incarnation") != incarnation or not isinstance(placement.get("shards"), list):
        return None
    return placement["shards"][shard] if 0 <= shard < len(placement["shards"]) else None


def _replica(state: dict[str, Any], key: ReplicaKey) -> dict[str, Any] | None:
    shard = _shard(state, key.collection, key.incarnation, key.shard)
    return None if shard is None else shard["replicas"].get(key.replica)


def _about(effect: Effect) -> str | None:
    """The collection an effect concerns."""
    return getattr(effect.op if isinstance(effect, Propose) else effect, "collection", None)


# ------------------------------------------------------------------ controller


@dataclass
class Controller:
    """The decisions, without I/O or clock: times come in with NodesSeen and Tick, and
    the other reports count at the latest of those."""

    node_grace: float  # seconds a node may be missing (or a replica down) before it is replaced
    retry_after: float  # seconds before an effect not seen to happen is asked again
    _state: dict[str, Any] = field(default_factory=empty_state)
    _now: float = 0.0
    _alive: frozenset[str] | None = None  # None until the first NodesSeen: nothing is decided before
    _first_look: float = 0.0
    _last_seen: dict[str, float] = field(default_factory=dict)
    _lost: frozenset[str] = frozenset()
    _asked: dict[Effect, float] = field(default_factory=dict)  # asked, not yet seen to happen: when
    _running: set[ReplicaKey] = field(default_factory=set)
    _seq: dict[ReplicaKey, int] = field(default_factory=dict)  # applied sequence last reported
    _failed: set[ReplicaKey] = field(default_factory=set)  # failed, not yet `dead` in the metadata
    _caught_up: set[ReplicaKey] = field(default_factory=set)  # transfer done, still `partial`
    _down_since: dict[ReplicaKey, float] = field(default_factory=dict)  # dead, not running, node alive
    # One round's working copy: the metadata with the pending proposals applied.
    _work: dict[str, Any] = field(default_factory=empty_state, repr=False)
    _out: list[Effect] = field(default_factory=list, repr=False)
    _said: set[Log] = field(default_factory=set, repr=False)

    @property
    def pending(self) -> tuple[Effect, ...]:
        """What the controller asked for and has not seen happen, oldest first."""
        return tuple(e for e in self._asked if not isinstance(e, Log))

    @property
    def lost_nodes(self) -> frozenset[str]:
        return self._lost

    def handle(self, *events: Event) -> list[Effect]:
        out: list[Effect] = []
        for event in events:
            out += self._absorb(event)
        if self._alive is None:
            return out
        out += self._observe()
        return out + self._plan()

    # -------------------------------------------------------------- events in

    def _absorb(self, e: Event) -> list[Effect]:
        if isinstance(e, MetadataChanged):
            self._state = e.state
            self._forget_transfers()
        elif isinstance(e, (NodesSeen, Tick)):
            self._now = max(self._now, e.now)
            if isinstance(e, NodesSeen):
                if self._alive is None:
                    self._first_look = e.now  # a node named by the metadata and never seen is missing from now
                self._alive = frozenset(e.alive)
                self._last_seen.update(dict.fromkeys(e.alive, e.now))
        elif isinstance(e, ProposalFailed):
            self._asked.pop(Propose(e.op), None)
        elif isinstance(e, ReplicaStarted):
            self._running.add(e.key)
            self._seq[e.key] = e.applied_seq
            self._forget(StartReplica, e.key)
        elif isinstance(e, ReplicaFailed):
            replica = _replica(self._state, e.key)
            news = e.key in self._running or (  # the shell may say it again
                replica is not None and replica["state"] != DEAD and e.key not in self._failed)
            self._running.discard(e.key)
            self._caught_up.discard(e.key)
            self._forget((StopReplica, StartTransfer), e.key)  # a transfer to it is void
            if replica is None:
                return []
            self._failed.add(e.key)
            # Ray restarts it: the controller asks for a start itself only after retry_after
            # (from its own ask, if this is the answer to one).
            start = StartReplica(*_fields(e.key), replica["node"])
            self._asked.setdefault(start, self._now)
            return [Log(WARNING, f"{e.key} failed ({e.reason}): it is dead until it has caught up")] if news else []
        elif isinstance(e, ReplicaStopped):
            self._running.discard(e.key)
            self._forget(StopReplica, e.key)
        elif isinstance(e, (TransferDone, TransferFailed)):
            asked = [a for a in self._asked if isinstance(a, StartTransfer) and a.key == e.key
                     and a.version == e.version]
            if not asked:
                return []  # not the transfer asked for now (an earlier one, or another leader's)
            if isinstance(e, TransferFailed):
                self._asked[asked[0]] = self._now  # the same transfer again only after retry_after
                return [Log(WARNING, f"the transfer to {e.key} failed ({e.reason}): it is tried again")]
            del self._asked[asked[0]]
            self._caught_up.add(e.key)
            self._seq[e.key] = e.applied_seq
        else:
            raise TypeError(f"not a controller event: {e!r}")
        return []

    def _forget(self, kinds: type | tuple[type, ...], key: ReplicaKey) -> None:
        for effect in [a for a in self._asked if isinstance(a, kinds) and a.key == key]:
            del self._asked[effect]

    def _forget_transfers(self) -> None:
        """Transfers asked or done to replicas no longer ``partial`` are forgotten with
        each MetadataChanged, not once a round: a replica that missed a write (marked
        dead) and was set to catch up again within one batch of events needs a new
        transfer, and the report of its old one must not count."""
        def partial(k: ReplicaKey) -> bool:
            return (_replica(self._state, k) or {}).get("state") == PARTIAL

        self._caught_up = {k for k in self._caught_up if partial(k)}
        for transfer in [a for a in self._asked if isinstance(a, StartTransfer) and not partial(a.key)]:
            del self._asked[transfer]

    def _observe(self) -> list[Effect]:
        """Nodes lost or back; memory of replicas no longer listed dropped; the pending
        effects pruned, and the round's working copy built from the proposals left."""
        out: list[Effect] = []
        listed = dict(_replicas(self._state))
        alive, now = self._alive or frozenset(), self._now
        if alive:
            known = set(self._last_seen) | {r["node"] for r in listed.values()}
            lost = frozenset(n for n in known if n not in alive
                             and now - self._last_seen.get(n, self._first_look) >= self.node_grace)
            out += [Log(WARNING, f"node {n} has not been seen for {self.node_grace:g} s: it is lost, "
                                 "and its replicas are dead") for n in sorted(lost - self._lost)]
            out += [Log(INFO, f"node {n} is back") for n in sorted(self._lost - lost)]
            self._lost = lost
        self._running = {k for k in self._running if k not in listed or listed[k]["node"] not in self._lost}
        self._failed = {k for k in self._failed if k in listed and listed[k]["state"] != DEAD}
        self._seq = {k: v for k, v in self._seq.items() if k in listed}
        self._down_since = {k: self._down_since.get(k, now) for k, r in listed.items()
                            if r["state"] == DEAD and r["node"] in alive and k not in self._running}
        work = self._state
        for effect, at in list(self._asked.items()):
            expired = now - at >= self.retry_after
            if isinstance(effect, Propose):
                new, _ = apply(work, effect.op)
                if expired or new is work:  # refused or dismissed now: it happened, or was overtaken
                    del self._asked[effect]
                else:
                    work = new
            elif not isinstance(effect, Log) and (expired or not self._still_wanted(effect, listed)):
                del self._asked[effect]
        self._work = work
        return out

    def _still_wanted(self, effect: Effect, listed: dict[ReplicaKey, dict]) -> bool:
        if isinstance(effect, StartReplica):
            return effect.key in listed and effect.key not in self._running
        if isinstance(effect, StartTransfer):
            return True  # until it is reported, or its target leaves ``partial`` (_forget_transfers)
        return effect.key in self._running  # StopReplica

    # ------------------------------------------------------------ effects out

    def _emit(self, effect: Effect) -> None:
        if isinstance(effect, Log):
            self._said.add(effect)
        if effect not in self._asked:
            self._asked[effect] = self._now
            self._out.append(effect)

    def _say(self, level: int, text: str) -> None:
        """A line about a lasting condition: said once, again only after it ended."""
        self._emit(Log(level, text))

    def _propose(self, op: MetaOp) -> bool:
        """Ask for ``op`` if it changes the working copy (where it is applied at once)."""
        new, _ = apply(self._work, op)
        if new is self._work:
            return False
        self._work = new
        self._emit(Propose(op))
        return True

    def _set(self, k: ReplicaKey, state: str, from_state: str) -> bool:
        return self._propose(SetReplicaState(*_fields(k), state, from_state))

    # ------------------------------------------------------------------ rounds

    def _plan(self) -> list[Effect]:
        self._out, self._said = [], set()
        for name, incarnation, factor, shards in list(_collections(self._work)):
            for i in range(len(shards)):
                for rule in (self._first_start, self._mark_dead, self._primary, self._revive, self._activate,
                             self._repair, self._trim):
                    rule(name, incarnation, i, shard_factor(self._cur(name, incarnation, i), factor))
            self._balance(name, incarnation, factor)
        self._actors()
        for log in [a for a in self._asked if isinstance(a, Log) and a not in self._said]:
            del self._asked[log]
        return self._out

    def _cur(self, c: str, inc: str, i: int) -> dict[str, Any]:
        """Shard ``i`` in the working copy. The rules run on its collections only, and no
        op of theirs changes a collection's incarnation or shard count within a round."""
        return self._work["collections"][c]["placement"]["shards"][i]

    def _ready(self, k: ReplicaKey, node: str) -> bool:
        """Runs, on a node alive, with no failure waiting to be recorded."""
        return k in self._running and k not in self._failed and node in (self._alive or ())

    def _doomed(self, k: ReplicaKey, node: str) -> bool:
        return node in self._lost or k in self._failed

    def _firm(self, c: str, inc: str, i: int) -> list[str]:
        """Replicas active in the metadata as applied and in the plan. What is only
        planned may still be lost on its way through Raft: a promotion or a removal is
        decided on these, so that it never rests on an activation that did not happen."""
        s, real = self._cur(c, inc, i), _shard(self._state, c, inc, i)
        return [r for r in sorted(s["replicas"], key=_order) if s["replicas"][r]["state"] == ACTIVE
                and real is not None and real["replicas"].get(r, {}).get("state") == ACTIVE]

    def _sources(self, c: str, inc: str, i: int) -> list[str]:
        """Firmly active replicas on live nodes: what a new primary or a transfer can come from."""
        s = self._cur(c, inc, i)
        return [r for r in self._firm(c, inc, i) if s["replicas"][r]["node"] in (self._alive or ())]

    def _most_up_to_date(self, c: str, inc: str, i: int, candidates: list[str]) -> str:
        """Highest applied sequence last reported; ties to the oldest replica id."""
        return min(candidates, key=lambda r: (-self._seq.get(ReplicaKey(c, inc, i, r), -1), _order(r)))

    def _loads(self) -> Counter:
        """Replicas per node that are, or are becoming, up to date (all collections)."""
        return Counter(r["node"] for _, r in _replicas(self._work) if r["state"] != DEAD)

    # Rule 1: a new collection.
    def _first_start(self, c: str, inc: str, i: int, factor: int) -> None:
        """Replicas that started hold no data. While the primary is ``initializing`` the
        shard has taken no write (writes need an active primary), so started replicas
        become ``active`` directly, in one batch once every replica on a live node has
        started or failed, the primary last: the shard's first write finds them all
        active. One that starts later (its node was missing), or any ``initializing``
        replica once the primary is not, catches up as ``partial``. A primary that will
        never start (lost, failed) lets the started ones activate, so that one of them
        is promoted."""
        s = self._cur(c, inc, i)
        reps, p = s["replicas"], s["primary"]
        key = lambda r: ReplicaKey(c, inc, i, r)  # noqa: E731
        fresh = [r for r in sorted(reps, key=_order) if reps[r]["state"] == INITIALIZING]
        ready = [r for r in fresh if self._ready(key(r), reps[r]["node"])]
        starting = [r for r in fresh if r not in ready and reps[r]["node"] in (self._alive or ())
                    and not self._doomed(key(r), reps[r]["node"])]
        if reps[p]["state"] != INITIALIZING:
            for r in ready:
                self._set(key(r), PARTIAL, INITIALIZING)
        elif (p in ready and not starting) or (ready and self._doomed(key(p), reps[p]["node"])):
            for r in sorted(ready, key=lambda r: r == p):
                self._set(key(r), ACTIVE, INITIALIZING)

    # Rule 2: lost nodes and failed replicas.
    def _mark_dead(self, c: str, inc: str, i: int, factor: int) -> None:
        """A replica on a lost node, or whose actor failed, may miss writes: ``dead``
        (Qdrant marks a replica dead when it misses an update or its peer is gone)."""
        s = self._cur(c, inc, i)
        for r in sorted(s["replicas"], key=_order):
            state = s["replicas"][r]["state"]
            if state != DEAD and self._doomed(ReplicaKey(c, inc, i, r), s["replicas"][r]["node"]):
                self._set(ReplicaKey(c, inc, i, r), DEAD, state)

    def _primary(self, c: str, inc: str, i: int, factor: int) -> None:
        """A primary that is not up to date is replaced by the most up-to-date active
        replica (epoch + 1). Only an active replica holds every acknowledged write (the
        write path marks a replica dead before acknowledging a write it missed): with none
        left, nothing is promoted, except the primary itself once it runs again, since it
        sequenced every acknowledged write of its epoch."""
        s = self._cur(c, inc, i)
        p = s["primary"]
        state = s["replicas"][p]["state"]
        if state in (ACTIVE, INITIALIZING):
            return
        candidates = [r for r in self._sources(c, inc, i) if r != p]
        if candidates:
            best = self._most_up_to_date(c, inc, i, candidates)
            if self._propose(SetPrimary(c, inc, i, best, s["epoch"] + 1)):
                seq = self._seq.get(ReplicaKey(c, inc, i, best))
                self._out.append(Log(WARNING, f"shard {i} of `{c}`: primary {p} is {state}; {best} (applied "
                                              f"sequence {seq}) is primary at epoch {s['epoch'] + 1}"))
        elif any(rep["state"] == ACTIVE for rep in s["replicas"].values()):
            return  # one not promotable yet: its activation in flight, or its node missing (back, or lost)
        elif state == DEAD and self._ready(ReplicaKey(c, inc, i, p), s["replicas"][p]["node"]):
            if self._set(ReplicaKey(c, inc, i, p), ACTIVE, DEAD):
                self._out.append(Log(WARNING, f"shard {i} of `{c}` had no active replica: its primary {p} runs "
                                              "again and serves as the source of truth"))
        else:
            self._say(WARNING, f"shard {i} of `{c}` is unavailable: no active replica is left, and no partial or "
                               f"dead one may be promoted; waiting for primary {p} on node {s['replicas'][p]['node']}")

    # Rule 4: a failed replica that came back.
    def _revive(self, c: str, inc: str, i: int, factor: int) -> None:
        """A dead replica that runs again catches up as ``partial`` (transfer from an
        active one), as many as the factor lacks; one beyond is removed instead."""
        s = self._cur(c, inc, i)
        if not self._sources(c, inc, i):
            return
        live = sum(rep["state"] != DEAD for rep in s["replicas"].values())
        for r in sorted(s["replicas"], key=_order):
            rep = s["replicas"][r]
            if live < factor and rep["state"] == DEAD and r != s["primary"] \
                    and self._ready(ReplicaKey(c, inc, i, r), rep["node"]):
                live += self._set(ReplicaKey(c, inc, i, r), PARTIAL, DEAD)

    def _activate(self, c: str, inc: str, i: int, factor: int) -> None:
        s = self._cur(c, inc, i)
        for r in sorted(s["replicas"], key=_order):
            if s["replicas"][r]["state"] == PARTIAL and ReplicaKey(c, inc, i, r) in self._caught_up:
                self._set(ReplicaKey(c, inc, i, r), ACTIVE, PARTIAL)

    # Rules 3 and 6: under-replicated.
    def _repair(self, c: str, inc: str, i: int, factor: int) -> None:
        """Fewer replicas than the factor: add ``partial`` ones on the least-loaded live
        nodes without one, if an active replica can be their source. A dead replica on a
        live node counts for ``node_grace`` after it went down (Ray restarts it, and it
        catches up in place, as Qdrant recovers a dead replica on a live peer); one on a
        node missing counts until the node is lost (a machine that comes back under its
        name within ``node_grace`` finds its replicas where they were)."""
        s = self._cur(c, inc, i)
        if not self._sources(c, inc, i):
            return
        alive, now = self._alive or frozenset(), self._now

        def counts(r: str, rep: dict) -> bool:
            k = ReplicaKey(c, inc, i, r)
            if rep["state"] != DEAD:
                return True
            if rep["node"] not in alive:
                return rep["node"] not in self._lost
            return k in self._running or now - self._down_since.get(k, now) < self.node_grace

        have = sum(counts(r, rep) for r, rep in s["replicas"].items())
        for _ in range(factor - have):
            s = self._cur(c, inc, i)
            used = {rep["node"] for rep in s["replicas"].values()}
            free = [n for n in alive if n not in used]
            if not free:
                self._say(INFO, f"shard {i} of `{c}` has {have} of {factor} replicas: no other live node to "
                                "place one on")
                return
            loads = self._loads()
            node = min(free, key=lambda n: (loads[n], n))
            have += self._propose(AddReplica(c, inc, i, next_replica_id(s), node, PARTIAL))

    # Rules 3, 5 and 6: beyond the factor.
    def _trim(self, c: str, inc: str, i: int, factor: int) -> None:
        """Once the factor's worth of replicas is active, dead ones go; then active ones
        beyond the factor: those ``leaving`` (a move's source, a dropped replica) first,
        then from the most loaded nodes. Never the primary (in the
        metadata or on its way there): it hands over to another active replica first,
        and is dropped in a later round. ``partial`` replicas are left to finish."""
        s = self._cur(c, inc, i)
        actives = self._firm(c, inc, i)
        real = _shard(self._state, c, inc, i)
        removable = lambda r: r != s["primary"] and (real is None or r != real["primary"])  # noqa: E731
        if len(actives) >= factor:
            for r in sorted(s["replicas"], key=_order):
                if s["replicas"][r]["state"] == DEAD and removable(r):
                    self._propose(RemoveReplica(c, inc, i, r))
        if len(actives) <= factor:
            return
        loads = self._loads()
        victims = sorted(actives, key=lambda r: (not s["replicas"][r].get("leaving"), -loads[s["replicas"][r]["node"]],
                                                 r == s["primary"], _order(r)))
        victims = victims[:len(actives) - factor]
        if s["primary"] in victims:
            keep = [r for r in self._sources(c, inc, i) if r not in victims]
            if keep:
                self._propose(SetPrimary(c, inc, i, self._most_up_to_date(c, inc, i, keep), s["epoch"] + 1))
        for r in victims:
            if removable(r):
                self._propose(RemoveReplica(c, inc, i, r))

    # Rule 5: balance.
    def _balance(self, c: str, inc: str, factor: int) -> None:
        """A node holding 2 or more replicas fewer than another receives one, moved
        online: added as ``partial`` here, then the shard trimmed from the most loaded
        node once it is active. Only for a collection at rest (every replica active on a
        live node, the factor met, nothing asked), so one move at a time per collection;
        each move lowers the spread, so moves end."""
        if any(_about(a) == c for a in self._asked):
            return
        shards = _collections_one(self._work, c)
        alive = self._alive or frozenset()
        if not shards or not alive:
            return
        for s in shards:
            if len(s["replicas"]) != shard_factor(s, factor) or any(
                    rep["state"] != ACTIVE or rep["node"] not in alive for rep in s["replicas"].values()):
                return
        loads = self._loads()
        low = min(alive, key=lambda n: (loads[n], n))
        high = max(loads[n] for n in alive)
        if high - loads[low] < 2:
            return
        for i, s in enumerate(shards):
            nodes = sorted(rep["node"] for rep in s["replicas"].values())
            busiest = [n for n in nodes if loads[n] == high]
            if low not in nodes and busiest:
                if self._propose(AddReplica(c, inc, i, next_replica_id(s), low, PARTIAL)):
                    self._out.append(Log(INFO, f"moving shard {i} of `{c}` from node {busiest[0]} ({high} replicas) "
                                               f"to node {low} ({loads[low]})"))
                return

    # Actors and transfers follow the metadata as applied, never a proposal in flight.
    def _actors(self) -> None:
        """Every listed replica on a live node runs (a partial one gets its transfer once
        it runs); an actor the metadata does not list is stopped."""
        listed = dict(_replicas(self._state))
        for k, rep in listed.items():
            planned = _replica(self._work, k)
            if planned is None or rep["node"] not in (self._alive or ()):
                continue
            if k not in self._running:
                self._emit(StartReplica(*_fields(k), rep["node"]))
            elif rep["state"] == planned["state"] == PARTIAL and k not in self._caught_up | self._failed:
                self._transfer(k)
        for k in sorted(self._running - set(listed)):
            self._emit(StopReplica(*_fields(k)))

    def _transfer(self, target: ReplicaKey) -> None:
        """The transfer asked already, while its source can still serve; else one from
        the primary, else from the most up-to-date active replica; the source running,
        on a live node, active in the metadata and in the plan."""
        real = _shard(self._state, target.collection, target.incarnation, target.shard)
        planned = _shard(self._work, target.collection, target.incarnation, target.shard)

        def usable(r: str) -> bool:
            k = ReplicaKey(target.collection, target.incarnation, target.shard, r)
            return (r in real["replicas"] and r in planned["replicas"]
                    and real["replicas"][r]["state"] == planned["replicas"][r]["state"] == ACTIVE
                    and self._ready(k, real["replicas"][r]["node"]))

        asked = [a for a in self._asked if isinstance(a, StartTransfer) and a.key == target]
        for transfer in asked:
            if usable(transfer.source):
                self._emit(transfer)
                return
        candidates = [r for r in planned["replicas"] if usable(r)]
        if candidates:
            asked_for = planned["replicas"][target.replica].get("source")  # by the cluster API
            if asked_for in candidates:
                source = asked_for
            elif usable(planned["primary"]):
                source = planned["primary"]
            else:
                source = self._most_up_to_date(target.collection, target.incarnation, target.shard, candidates)
            for transfer in asked:  # the shell replaces it with this one: its report is no longer awaited
                del self._asked[transfer]
            self._emit(StartTransfer(*_fields(target)[:3], source, target.replica, self._state["version"]))


def _fields(k: ReplicaKey) -> tuple[str, str, int, str]:
    return k.collection, k.incarnation, k.shard, k.replica


def _collections_one(state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return state["collections"][name]["placement"]["shards"]
