"""The placement controller (cluster.controller) as a pure state machine: events in,
effects out, no Ray, no clock. Whole scenarios run through ``Sim``, a small shell that
applies the controller's own proposals with ``cluster.metadata_ops.apply``, feeds the
new metadata back, and plays Ray (replicas start, fail, restart), transfers, and the
gateway's write path."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, deque

import pytest

from cluster.controller import (
    Controller,
    Log,
    MetadataChanged,
    NodesSeen,
    Propose,
    ProposalFailed,
    ReplicaFailed,
    ReplicaKey,
    ReplicaStarted,
    ReplicaStopped,
    StartReplica,
    StartTransfer,
    StopReplica,
    Tick,
    TransferDone,
    TransferFailed,
)
from cluster.metadata_ops import (
    AddReplica,
    CreateCollection,
    DeleteCollection,
    RemoveReplica,
    SetPrimary,
    SetReplicaState,
    UpdateCollection,
    apply,
    empty_state,
)
from cluster.replicas import initial_placement, placement_problem, takes_writes

INC = "c" * 32
GRACE, RETRY = 10.0, 30.0
NODES = ["n1", "n2", "n3"]
ACTIVE, PARTIAL, DEAD, INIT = "active", "partial", "dead", "initializing"


# ------------------------------------------------------------------ helpers


def config(shards: int, rf: int) -> dict:
    return {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": shards,
                       "replication_factor": rf}}


def create_op(name: str, shards: int, rf: int, nodes, inc: str = INC) -> CreateCollection:
    return CreateCollection(name, config(shards, rf),
                            {"incarnation": inc, "shards": initial_placement(shards, rf, sorted(nodes))})


def managed(state: dict):
    for name in sorted(state["collections"]):
        placement = state["collections"][name]["placement"]
        if isinstance(placement, dict) and "shards" in placement:
            rf = state["collections"][name]["config"]["params"]["replication_factor"]
            yield name, placement["incarnation"], rf, placement["shards"]


def incarnation(state: dict, c: str) -> str | None:
    return ((state["collections"].get(c) or {}).get("placement") or {}).get("incarnation")


def shard_of(state: dict, i: int = 0, c: str = "c") -> dict:
    return state["collections"][c]["placement"]["shards"][i]


def states(state: dict, i: int = 0, c: str = "c") -> dict:
    """{replica: (node, state)} of one shard, with the primary marked by a star."""
    s = shard_of(state, i, c)
    return {r + ("*" if r == s["primary"] else ""): (rep["node"], rep["state"]) for r, rep in s["replicas"].items()}


def key(r, shard=0, c="c", inc=INC):
    return ReplicaKey(c, inc, shard, r)


def started(r, seq=0, shard=0, c="c"):
    return ReplicaStarted(c, INC, shard, r, seq)


def start(r, node, shard=0, c="c"):
    return StartReplica(c, INC, shard, r, node)


def set_state(r, state, from_state, shard=0, c="c"):
    return Propose(SetReplicaState(c, INC, shard, r, state, from_state))


def set_primary(r, epoch, shard=0, c="c"):
    return Propose(SetPrimary(c, INC, shard, r, epoch))


def add(r, node, shard=0, c="c"):
    return Propose(AddReplica(c, INC, shard, r, node, PARTIAL))


def remove(r, shard=0, c="c"):
    return Propose(RemoveReplica(c, INC, shard, r))


class _AnyVersion:
    """Equal to any metadata version: which one a transfer names is the controller's business."""

    def __eq__(self, other):
        return isinstance(other, int)

    def __repr__(self):
        return "ANY"


def transfer(source, target, shard=0, c="c"):
    return StartTransfer(c, INC, shard, source, target, _AnyVersion())


def asked_transfer(sim, target, shard=0, c="c") -> StartTransfer:
    (asked,) = [e for e in sim.c.pending if isinstance(e, StartTransfer) and e.key == key(target, shard, c)]
    return asked


def done(sim, target, shard=0, c="c", seq=0) -> TransferDone:
    """The report that the transfer asked for to ``target`` is complete."""
    return TransferDone(c, INC, shard, target, asked_transfer(sim, target, shard, c).version, seq)


def transfer_failed(sim, target, shard=0, c="c") -> TransferFailed:
    return TransferFailed(c, INC, shard, target, asked_transfer(sim, target, shard, c).version, "it broke")


def decisions(effects) -> list:
    return [e for e in effects if not isinstance(e, Log)]


def texts(effects) -> list[str]:
    return [e.text for e in effects if isinstance(e, Log)]


def replica_of(state: dict, k: ReplicaKey) -> dict | None:
    placement = (state["collections"].get(k.collection) or {}).get("placement") or {}
    if placement.get("incarnation") != k.incarnation:
        return None
    return placement["shards"][k.shard]["replicas"].get(k.replica)


class Sim:
    """A shell for one controller. Proposals are applied at once (and the new metadata
    fed back), replicas on live nodes start, transfers finish, stops happen; effects of
    a type in ``hold`` are kept in ``held`` for the test to answer. With ``rng``,
    reports arrive late (0-2 s, news of a failure up to 5 s), transfers take 1-3 s, and
    the controller is handed up to three events at once.

    It also plays the gateway's write path: ``step`` sends a write to every shard whose
    primary is active and reachable; it is forwarded to the active and partial replicas,
    and the gateway marks dead every one it cannot reach before the write counts as
    acknowledged. ``seq`` is each replica's storage (writes applied in order, kept
    across restarts and node losses, deleted by a stop), ``acked`` each shard's
    acknowledged writes.

    Besides, it notes in ``problems`` what the controller must never do: start a replica
    the metadata never listed, stop one it lists, transfer from one not active, begin a
    move in a collection before the last one ended, or leave a shard without an active
    primary, while it has an active replica, for longer than ``headless_limit``."""

    def __init__(self, nodes, *, grace=GRACE, retry=RETRY, hold=(), rng=None):
        self.c = Controller(node_grace=grace, retry_after=retry)
        self.state = empty_state()
        self.now = 0.0
        self.nodes = list(nodes)
        self.up = set(nodes)
        self.running: set[ReplicaKey] = set()
        self.seq: Counter = Counter()
        self.acked: Counter = Counter()
        self.ever_listed: set[ReplicaKey] = set()
        self.hold, self.held = tuple(hold), []
        self.events: deque = deque()
        self.later: list = []  # (due, n, event or callable)
        self.transfers: dict[ReplicaKey, tuple] = {}  # in flight with rng: target -> (source, target, version)
        self.rng = rng
        self.lose_replies = 0.0
        self.drop_batch = False
        self.report_drops = False  # whether the shell hears of a dropped proposal
        self.problems: list[str] = []
        self.moving: dict[str, tuple] = {}  # collection -> (incarnation, shard) of its last move
        # A replica on a missing node is promoted once the node is back, or marked dead once
        # it is lost; an activation or a promotion lost on its way is asked again.
        self.headless_limit = grace + 2 * retry
        self.headless: dict[tuple, float] = {}  # shard -> since when its primary is not active but others are
        self._n = 0

    # The controller's side.

    def carry(self, effects) -> list:
        """Carry out ``effects``, then hand the controller what follows until quiet;
        returns the effects it gave meanwhile."""
        out: list = []
        self._do(effects)
        while self.events:
            n = 1 if self.rng is None else self.rng.choice([1, 1, 2, 3])  # the shell may pass a few at once
            more = self.c.handle(*[self.events.popleft() for _ in range(min(n, len(self.events)))])
            out += more
            self._do(more)
        return out

    def feed(self, *events) -> list:
        effects = self.c.handle(*events)
        return effects + self.carry(effects)

    def tick(self, now: float | None = None) -> list:
        self.now = self.now if now is None else now
        return self.carry([]) + self.feed(NodesSeen(self.now, frozenset(self.up)))

    def gateway(self, op) -> list:
        """An op proposed by someone else (the gateway: create, update, write-path marks)."""
        self._apply(op)
        return self.carry([])

    def step(self, dt: float = 1.0) -> list:
        self.now += dt
        for item in [x for x in self.later if x[0] <= self.now]:
            self.later.remove(item)
            item[2]() if callable(item[2]) else self.events.append(item[2])
        for target, source in list(self.transfers.items()):
            if self.rng.random() < 0.5:
                del self.transfers[target]
                self._finish(*source)
        if self.now % 10 == 0:  # the shell's sweep of Ray's actors: what runs, what does not
            for k in sorted(self.running):
                self._reply(ReplicaStarted(*_k(k), self.seq[k]), may_lose=False)
            for k in sorted(self.ever_listed - self.running):
                if replica_of(self.state, k) is not None:
                    self._reply(ReplicaFailed(*_k(k), "no such actor"), may_lose=False)
        out = self.carry([])
        self.write()
        out += self.tick()
        self._watch_primaries()
        return out

    def _watch_primaries(self) -> None:
        headless = set()
        for name, inc, _, shards in managed(self.state):
            for i, s in enumerate(shards):
                reps = s["replicas"]
                if reps[s["primary"]]["state"] != ACTIVE and any(r["state"] == ACTIVE for r in reps.values()):
                    headless.add((name, inc, i))
                    since = self.headless.setdefault((name, inc, i), self.now)
                    if self.now - since > self.headless_limit:
                        self.problems.append(f"{name}/{i} has had no active primary for {self.now - since:g} s "
                                             f"while it has active replicas: {states(self.state, i, name)}")
        self.headless = {k: t for k, t in self.headless.items() if k in headless}

    def commit(self, op) -> None:
        """Apply an op; the controller hears of it with what it is fed next."""
        self._apply(op)

    def _apply(self, op) -> None:
        new, _ = apply(self.state, op)
        if new is not self.state:
            self.state = new
            self.ever_listed |= {ReplicaKey(n, inc, i, r) for n, inc, _, shards in managed(new)
                                 for i, s in enumerate(shards) for r in s["replicas"]}
            self.events.append(MetadataChanged(new))

    def _reply(self, event, may_lose: bool = True) -> None:
        """Answers to effects may be lost (the controller asks again); news of a failure
        is not (the shell's health checks would find it), but may come late."""
        if self.rng is None:
            self.events.append(event)
        elif not may_lose or self.rng.random() >= self.lose_replies:
            self._n += 1
            delay = self.rng.choice([0, 1, 2] if may_lose else [0, 1, 2, 5])
            self.later.append((self.now + delay, self._n, event))

    def _do(self, effects) -> None:
        drop = self.drop_batch and any(isinstance(e, Propose) for e in effects)
        self.drop_batch &= not drop
        for e in effects:
            move = re.match(r"moving shard (\d+) of `(\w+)`", e.text) if isinstance(e, Log) else None
            if move:
                self._moves(move[2], int(move[1]))
        for e in effects:
            if isinstance(e, self.hold):
                self.held.append(e)
            elif isinstance(e, Propose):
                if not drop:
                    self._apply(e.op)
                elif self.report_drops:
                    self.events.append(ProposalFailed(e.op, "not committed"))
            elif isinstance(e, StartReplica):
                if e.key not in self.ever_listed:
                    self.problems.append(f"started a replica the metadata never listed: {e}")
                if e.node in self.up:
                    self.running.add(e.key)
                    self._reply(ReplicaStarted(*_k(e.key), self.seq[e.key]))
                else:
                    self._reply(ReplicaFailed(*_k(e.key), "its node is down"))
            elif isinstance(e, StopReplica):
                if replica_of(self.state, e.key) is not None:
                    self.problems.append(f"stopped a replica the metadata lists: {e}")
                self.running.discard(e.key)
                self.seq.pop(e.key, None)
                self._reply(ReplicaStopped(*_k(e.key)))
            elif isinstance(e, StartTransfer):
                source = ReplicaKey(e.collection, e.incarnation, e.shard, e.source)
                if (replica_of(self.state, source) or {}).get("state") != ACTIVE:
                    self.problems.append(f"transfer from a replica that is not active: {e}")
                if self.rng is None:
                    self._finish(source, e.key, e.version)
                else:
                    self.transfers[e.key] = (source, e.key, e.version)

    def _moves(self, name: str, i: int) -> None:
        """One move at a time per collection: the last one has ended, its shard back to
        the factor (checked on the metadata before this batch of effects)."""
        inc = incarnation(self.state, name)
        rf = self.state["collections"][name]["config"]["params"]["replication_factor"]
        last = self.moving.get(name)
        if last is not None and last[0] == inc and len(shard_of(self.state, last[1], name)["replicas"]) > rf:
            self.problems.append(f"moving shard {i} of `{name}` while shard {last[1]} is still moving")
        self.moving[name] = (inc, i)

    def _reachable(self, k: ReplicaKey) -> bool:
        replica = replica_of(self.state, k)
        return replica is not None and k in self.running and replica["node"] in self.up

    def _finish(self, source: ReplicaKey, target: ReplicaKey, version: int) -> None:
        """A transfer ends well if both ends still run and the source missed nothing
        (the target checks that its records and the writes forwarded to it join up)."""
        ok = (self._reachable(source) and self._reachable(target)
              and replica_of(self.state, target)["state"] == PARTIAL
              and self.seq[source] == self.acked[(source.collection, source.incarnation, source.shard)])
        if ok:
            self.seq[target] = self.seq[source]
            self._reply(TransferDone(*_k(target), version, self.seq[target]))
        else:
            self._reply(TransferFailed(*_k(target), version, "an end of it went away"))

    # Faults and Ray.

    def lose(self, node: str, report: bool = True) -> None:
        self.up.discard(node)
        for k in sorted(self.running):
            if (replica_of(self.state, k) or {}).get("node") == node:
                self.running.discard(k)
                if report:
                    self._reply(ReplicaFailed(*_k(k), "its node is gone"), may_lose=False)

    def crash(self, k: ReplicaKey, restart_in: float | None) -> None:
        """The actor dies; Ray restarts it ``restart_in`` seconds later (None: never)."""
        self.running.discard(k)
        self._reply(ReplicaFailed(*_k(k), "its actor died"), may_lose=False)
        node = (replica_of(self.state, k) or {}).get("node")
        if restart_in is not None and node is not None:

            def restart():
                if node in self.up:
                    self.running.add(k)
                    self._reply(ReplicaStarted(*_k(k), self.seq[k]), may_lose=False)
            self._n += 1
            self.later.append((self.now + restart_in, self._n, restart))

    def write(self) -> None:
        for name, inc, _, shards in list(managed(self.state)):
            for i in range(len(shards)):
                s = shard_of(self.state, i, name)
                pk = ReplicaKey(name, inc, i, s["primary"])
                if s["replicas"][s["primary"]]["state"] != ACTIVE or not self._reachable(pk):
                    continue
                for r, rep in s["replicas"].items():
                    if takes_writes(rep["state"]) and not self._reachable(ReplicaKey(name, inc, i, r)):
                        self._apply(SetReplicaState(name, inc, i, r, DEAD, rep["state"]))
                before = self.acked[(name, inc, i)]
                self.acked[(name, inc, i)] += 1
                for r, rep in shard_of(self.state, i, name)["replicas"].items():
                    k = ReplicaKey(name, inc, i, r)
                    if takes_writes(rep["state"]) and self._reachable(k) and self.seq[k] == before:
                        self.seq[k] = before + 1  # a replica with a gap waits for its transfer


def _k(k: ReplicaKey) -> tuple:
    return k.collection, k.incarnation, k.shard, k.replica


def healthy(shards=1, rf=2, nodes=NODES, **kw) -> Sim:
    """A collection ``c`` whose replicas all run and are active."""
    sim = Sim(nodes, **kw)
    sim.tick(0.0)
    sim.gateway(create_op("c", shards, rf, nodes))
    assert all(rep["state"] == ACTIVE for *_, sh in managed(sim.state) for s in sh for rep in s["replicas"].values())
    return sim


def planned(sim: Sim) -> dict:
    """The metadata once every proposal the controller has in flight is applied."""
    state = sim.state
    for effect in sim.c.pending:
        if isinstance(effect, Propose):
            state, _ = apply(state, effect.op)
    return state


def problems(sim: Sim) -> list[str]:
    """What breaks the invariants now (empty when none): what the shell noted; a
    placement not well formed; an active replica without every acknowledged write; a
    primary not active while a replica that may be promoted is: active in the metadata
    (a promotion never rests on an activation still on its way through Raft) and on a
    live node (one on a missing node waits for the node to come back or be lost; how
    long a shard may wait is ``Sim.headless_limit``). The primary is checked on the
    metadata when no proposal is in flight (one Raft lost may leave it behind for up to
    ``retry_after``), and on the plan always."""
    out = list(sim.problems)
    in_flight = any(isinstance(e, Propose) for e in sim.c.pending)
    for label, state in [("metadata", sim.state)] * (not in_flight) + [("plan", planned(sim))]:
        for name, inc, _, shards in managed(state):
            problem = placement_problem(state["collections"][name]["placement"], len(shards))
            if problem:
                out.append(f"{label} {name}: {problem}")
            for i, s in enumerate(shards):
                if s["replicas"][s["primary"]]["state"] == ACTIVE:
                    continue
                applied = shard_of(sim.state, i, name)["replicas"] if inc == incarnation(sim.state, name) else {}
                promotable = [r for r, rep in s["replicas"].items() if rep["state"] == ACTIVE
                              and applied.get(r, {}).get("state") == ACTIVE and rep["node"] in sim.up]
                if promotable:
                    out.append(f"{label} {name}/{i}: primary {s['primary']} is not active but {promotable} are")
    for name, inc, _, shards in managed(sim.state):
        for i, s in enumerate(shards):
            for r, rep in s["replicas"].items():
                if rep["state"] == ACTIVE and sim.seq[ReplicaKey(name, inc, i, r)] != sim.acked[(name, inc, i)]:
                    out.append(f"{name}/{i}: active {r} lacks acknowledged writes")
    return out


def not_converged(sim: Sim, balanced: bool = True) -> str | None:
    """Why the cluster is not at rest: every shard with exactly its factor of active,
    running replicas on distinct live nodes, nothing pending, nodes balanced."""
    if sim.c.pending or sim.transfers or sim.later or sim.held:
        return f"pending: {sim.c.pending} {sim.transfers} {sim.later} {sim.held}"
    listed = set()
    for name, inc, rf, shards in managed(sim.state):
        for i, s in enumerate(shards):
            reps = s["replicas"]
            listed |= {ReplicaKey(name, inc, i, r) for r in reps}
            if len(reps) != rf or any(rep["state"] != ACTIVE or rep["node"] not in sim.up for rep in reps.values()):
                return f"{name}/{i} has {reps} (factor {rf})"
    if listed != sim.running:
        return f"running {sorted(sim.running ^ listed)} unlike the metadata"
    loads = Counter({n: 0 for n in sim.up})
    loads.update(rep["node"] for *_, sh in managed(sim.state) for s in sh for rep in s["replicas"].values())
    if balanced and max(loads.values()) - min(loads.values()) > 1:
        return f"unbalanced: {loads}"
    return None


def settle(sim: Sim, steps: int = 200, dt: float = 1.0, balanced: bool = True) -> None:
    for _ in range(steps):
        if not_converged(sim, balanced) is None:
            return
        sim.now += dt
        sim.tick()
        assert problems(sim) == []
    assert not_converged(sim, balanced) is None


# ---------------------------------------------------------- rule 1: creation


def test_nothing_is_decided_before_the_first_look_at_the_nodes():
    c = Controller(node_grace=GRACE, retry_after=RETRY)
    state, _ = apply(empty_state(), create_op("c", 1, 2, NODES))
    assert c.handle(MetadataChanged(state), started("r0")) == []


def test_a_new_collection_starts_its_replicas_then_activates_them_the_primary_last():
    state, _ = apply(empty_state(), create_op("c", 1, 3, NODES))
    c = Controller(node_grace=GRACE, retry_after=RETRY)
    assert c.handle(MetadataChanged(state), NodesSeen(0.0, frozenset(NODES))) == [
        start("r0", "n1"), start("r1", "n2"), start("r2", "n3")]
    assert c.handle(started("r2"), started("r1")) == []  # the primary first: its writes must find them active
    assert c.handle(started("r0")) == [set_state("r1", ACTIVE, INIT), set_state("r2", ACTIVE, INIT),
                                       set_state("r0", ACTIVE, INIT)]
    for effect in c.pending:
        state, result = apply(state, effect.op)
        assert result.ok
    assert c.handle(MetadataChanged(state)) == [] and c.pending == ()


def test_a_replica_that_starts_after_the_primary_is_active_catches_up_first():
    sim = Sim(NODES, hold=(StartTransfer,))
    sim.lose("n3")
    sim.tick(0.0)
    sim.gateway(create_op("c", 1, 3, NODES))
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE), "r2": ("n3", INIT)}
    sim.up.add("n3")
    effects = sim.tick(1.0)  # the primary may have taken writes: r2 is partial, then transferred to
    assert decisions(effects) == [start("r2", "n3"), set_state("r2", PARTIAL, INIT), transfer("r0", "r2")]
    assert decisions(sim.feed(done(sim, "r2"))) == [set_state("r2", ACTIVE, PARTIAL)]
    assert states(sim.state)["r2"] == ("n3", ACTIVE) and sim.c.pending == ()


# --------------------------------------------------- rule 8: pending and retries


def test_an_effect_is_asked_once_then_again_after_the_retry_timeout():
    sim = Sim(NODES, hold=(StartReplica,))
    sim.tick(0.0)
    first = sim.gateway(create_op("c", 1, 2, NODES))
    assert first == [start("r0", "n1"), start("r1", "n2")]
    assert sim.tick(1.0) == [] and sim.tick(RETRY - 0.1) == []
    assert sim.tick(RETRY) == first  # not seen to happen: asked again
    assert sim.c.pending == tuple(first)


def test_a_lost_proposal_is_proposed_again_after_the_retry_timeout():
    sim = healthy(rf=2)
    sim.drop_batch = True  # Raft lost the next batch
    sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    assert states(sim.state)["r1"] == ("n2", ACTIVE) and set_state("r1", DEAD, ACTIVE) in sim.c.pending
    assert decisions(sim.tick(RETRY - 1)) == []
    effects = sim.tick(RETRY)  # asked again; and Ray did not restart r1, so the controller does
    assert decisions(effects)[:2] == [set_state("r1", DEAD, ACTIVE), start("r1", "n2")]
    assert decisions(effects)[2:] == [set_state("r1", PARTIAL, DEAD), transfer("r0", "r1"),
                                      set_state("r1", ACTIVE, PARTIAL)]


# ------------------------------------------------------- rule 2: lost nodes


def test_a_lost_node_kills_its_replicas_and_the_most_up_to_date_active_one_becomes_primary():
    sim = healthy(rf=3, nodes=NODES)
    sim.feed(started("r1", 5), started("r2", 9))  # the sequences they last reported
    sim.lose("n1", report=False)
    assert sim.tick(GRACE - 0.1) == []  # missing, not lost yet
    assert sim.c.handle(NodesSeen(GRACE, frozenset({"n2", "n3"}))) == [
        Log(logging.WARNING, "node n1 has not been seen for 10 s: it is lost, and its replicas are dead"),
        set_state("r0", DEAD, ACTIVE), set_primary("r2", 2),
        Log(logging.WARNING, "shard 0 of `c`: primary r0 is dead; r2 (applied sequence 9) is primary at epoch 2"),
        Log(logging.INFO, "shard 0 of `c` has 2 of 3 replicas: no other live node to place one on")]


def test_equally_up_to_date_replicas_are_promoted_in_id_order():
    sim = healthy(rf=3)
    sim.lose("n1", report=False)
    sim.tick(GRACE)
    assert shard_of(sim.state)["primary"] == "r1" and shard_of(sim.state)["epoch"] == 2


def test_a_failed_replica_that_is_a_primary_is_replaced_at_once():
    sim = healthy(rf=2)
    effects = sim.feed(ReplicaFailed("c", INC, 0, "r0", "its actor died"))
    assert decisions(effects)[:2] == [set_state("r0", DEAD, ACTIVE), set_primary("r1", 2)]


def test_with_no_active_replica_left_nothing_is_promoted_and_it_is_said_once():
    sim = healthy(rf=2, nodes=NODES)
    sim.lose("n1", report=False)
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert decisions(effects) == [set_state("r0", DEAD, ACTIVE), set_state("r1", DEAD, ACTIVE)]
    assert texts(effects)[-1] == ("shard 0 of `c` is unavailable: no active replica is left, and no partial or dead "
                                  "one may be promoted; waiting for primary r0 on node n1")
    assert sim.tick(GRACE + 1) == [] and sim.tick(GRACE + RETRY + 1) == []  # said once
    assert shard_of(sim.state)["primary"] == "r0"


def test_the_primary_comes_back_as_the_source_of_truth_when_no_active_replica_is_left():
    sim = healthy(rf=2, nodes=NODES)
    sim.lose("n1", report=False)
    sim.lose("n2", report=False)
    sim.tick(GRACE)
    sim.up.add("n2")  # not the primary's node: r1 may lack writes, and waits
    assert decisions(sim.tick(GRACE + 1)) == [start("r1", "n2")]
    assert states(sim.state) == {"r0*": ("n1", DEAD), "r1": ("n2", DEAD)}
    sim.up.add("n1")
    effects = sim.tick(GRACE + 2)
    assert decisions(effects) == [start("r0", "n1"), set_state("r0", ACTIVE, DEAD), set_state("r1", PARTIAL, DEAD),
                                  transfer("r0", "r1"), set_state("r1", ACTIVE, PARTIAL)]
    assert "node n1 is back" in texts(effects)
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_a_primary_that_never_started_lets_a_started_replica_take_over():
    sim = Sim(NODES)
    sim.lose("n1", report=False)
    sim.tick(0.0)
    sim.gateway(create_op("c", 1, 2, NODES))
    assert states(sim.state) == {"r0*": ("n1", INIT), "r1": ("n2", INIT)}  # r1 waits for the primary
    effects = sim.tick(GRACE)  # the shard never took a write: r1 may become active, then primary
    assert decisions(effects)[:3] == [set_state("r1", ACTIVE, INIT), set_state("r0", DEAD, INIT), set_primary("r1", 2)]
    settle(sim)
    assert states(sim.state) == {"r1*": ("n2", ACTIVE), "r2": ("n3", ACTIVE)}


def test_an_empty_node_table_declares_no_loss():
    sim = healthy(rf=2)
    sim.up.clear()
    assert sim.tick(GRACE * 5) == [] and sim.c.lost_nodes == frozenset()


# --------------------------------------------- rules 3 and 4: repair and recovery


def test_an_under_replicated_shard_is_repaired_on_the_least_loaded_node():
    nodes = ["n1", "n2", "n3", "n4"]
    sim = healthy(shards=4, rf=2, nodes=nodes, hold=(StartTransfer,))  # s0 n1 n2, s1 n2 n3, s2 n3 n4, s3 n4 n1
    sim.gateway(create_op("d", 1, 1, ["n1"]))  # n1 holds one more
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert decisions(effects) == [
        set_state("r1", DEAD, ACTIVE, shard=0), add("r2", "n3", shard=0),  # n3 and n4 hold 2: the first
        set_state("r0", DEAD, ACTIVE, shard=1), set_primary("r1", 2, shard=1),
        add("r2", "n4", shard=1),  # n1 holds 3, n4 2
        start("r2", "n3", shard=0), start("r2", "n4", shard=1),
        transfer("r0", "r2", shard=0), transfer("r1", "r2", shard=1)]
    assert sim.tick(GRACE + 1) == []  # transfers running: nothing asked twice
    effects = sim.feed(done(sim, "r2", 0), done(sim, "r2", 1))
    # The dead replicas go once the activations are applied, not while they are in flight:
    # one lost on its way through Raft must not leave a shard short of a replica it counted.
    assert decisions(effects)[:4] == [set_state("r2", ACTIVE, PARTIAL, shard=0),
                                      set_state("r2", ACTIVE, PARTIAL, shard=1),
                                      remove("r1", shard=0), remove("r0", shard=1)]
    assert states(sim.state, 0) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}
    assert states(sim.state, 1) == {"r1*": ("n3", ACTIVE), "r2": ("n4", ACTIVE)}
    assert sim.c.pending == ()


def test_a_replica_ray_restarts_catches_up_in_place_and_is_not_replaced():
    sim = healthy(rf=2, nodes=NODES + ["n4"])
    effects = sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    assert decisions(effects) == [set_state("r1", DEAD, ACTIVE)]
    assert texts(effects) == ["replica r1 of shard 0 of `c` failed (its actor died): it is dead until it has caught up"]
    assert decisions(sim.tick(GRACE - 1)) == []  # not replaced while Ray restarts it
    effects = sim.feed(started("r1", 0))
    assert decisions(effects) == [set_state("r1", PARTIAL, DEAD), transfer("r0", "r1"), set_state("r1", ACTIVE, PARTIAL)]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_a_replica_that_stays_down_is_replaced_after_the_grace():
    sim = healthy(rf=2, nodes=NODES)
    sim.crash(key("r1"), restart_in=None)
    sim.carry([])
    assert states(sim.state)["r1"] == ("n2", DEAD)
    assert decisions(sim.tick(GRACE - 0.1)) == []
    effects = sim.tick(GRACE)  # down for the grace: replaced
    assert decisions(effects) == [add("r2", "n3"), start("r2", "n3"), transfer("r0", "r2"),
                                  set_state("r2", ACTIVE, PARTIAL), remove("r1")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}


def test_a_dead_replica_beyond_the_factor_is_removed_not_revived():
    sim = healthy(rf=3, nodes=NODES)
    sim.crash(key("r2"), restart_in=None)
    sim.carry([])
    assert states(sim.state)["r2"] == ("n3", DEAD)
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 2}}))
    assert decisions(effects) == [remove("r2")]
    assert sim.feed(started("r2")) == [StopReplica("c", INC, 0, "r2")]  # Ray restarted it after all
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_repair_needs_a_source_and_a_free_node():
    sim = healthy(rf=2, nodes=["n1", "n2"])
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert decisions(effects) == [set_state("r1", DEAD, ACTIVE)]
    assert texts(effects)[-1] == "shard 0 of `c` has 1 of 2 replicas: no other live node to place one on"
    sim.up.add("n3")
    sim.nodes.append("n3")
    effects = sim.tick(GRACE + 1)
    assert decisions(effects)[0] == add("r2", "n3") and remove("r1") in effects


# ------------------------------------------------------------- rule 5: balance


def test_a_node_that_joins_receives_replicas_moved_online_until_balanced():
    sim = healthy(shards=4, rf=2, nodes=NODES, hold=(StartTransfer,))  # 8 replicas: 3 3 2
    sim.up.add("n4")
    effects = sim.tick(1.0)
    assert decisions(effects) == [add("r2", "n4", shard=0), start("r2", "n4", shard=0), transfer("r0", "r2", shard=0)]
    assert texts(effects) == ["moving shard 0 of `c` from node n1 (3 replicas) to node n4 (0)"]
    assert states(sim.state)["r2"] == ("n4", PARTIAL)
    assert sim.tick(2.0) == []  # one move at a time per collection
    effects = sim.feed(done(sim, "r2"))
    # Active: the shard has 3 of 2, and a replica on a most loaded node goes (not the primary,
    # of two equally loaded); then the next move.
    assert decisions(effects)[:3] == [set_state("r2", ACTIVE, PARTIAL), remove("r1"), add("r2", "n4", shard=2)]
    assert StopReplica("c", INC, 0, "r1") in effects
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n4", ACTIVE)}
    sim.hold, held, sim.held = (), sim.held, []
    sim.carry([t for t in held if t.key != key("r2")])
    settle(sim)
    loads = Counter(rep["node"] for s in sim.state["collections"]["c"]["placement"]["shards"]
                    for rep in s["replicas"].values())
    assert sorted(loads.values()) == [2, 2, 2, 2]


def test_no_move_while_a_collection_is_repairing_or_already_balanced():
    sim = healthy(shards=3, rf=2, nodes=NODES)  # 6 replicas: 2 2 2
    assert sim.tick(100.0) == []
    sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    sim.up.add("n4")
    effects = sim.tick(101.0)
    assert not any(isinstance(e, Propose) and isinstance(e.op, AddReplica) for e in effects)


# ------------------------------------------------------ rule 6: the factor


def test_raising_and_lowering_the_factor_adds_and_removes_replicas_never_the_primary():
    sim = healthy(rf=1, nodes=NODES + ["n4"])
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    assert decisions(effects)[:2] == [add("r1", "n2"), add("r2", "n3")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE), "r2": ("n3", ACTIVE)}
    sim.gateway(SetReplicaState("c", INC, 0, "r1", DEAD, ACTIVE))  # the write path missed r1 ...
    sim.lose("n2", report=False)  # ... whose node is going away
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    assert decisions(effects) == [remove("r1"), remove("r2"),  # the dead one first
                                  StopReplica("c", INC, 0, "r1"), StopReplica("c", INC, 0, "r2")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE)}


def test_lowering_the_factor_on_the_primarys_node_hands_over_first():
    sim = healthy(rf=2, nodes=["n1", "n2"])  # r0 on n1, r1 on n2
    sim.gateway(create_op("d", 1, 1, ["n1"]))  # n1 holds most
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    # The primary hands over, and is dropped once the handover is in the metadata.
    assert decisions(effects) == [set_primary("r1", 2), remove("r0"), StopReplica("c", INC, 0, "r0")]
    assert states(sim.state) == {"r1*": ("n2", ACTIVE)}


# ------------------------------------------------------- rule 7: two faults


def test_the_primarys_node_lost_while_another_replicas_transfer_fails():
    sim = healthy(rf=2, nodes=NODES + ["n4"], hold=(StartTransfer,))
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    assert sim.held == [transfer("r0", "r2")]
    sim.lose("n1", report=False)
    sim.now = GRACE
    effects = sim.feed(transfer_failed(sim, "r2"), NodesSeen(GRACE, frozenset(sim.up)))
    assert decisions(effects) == [set_state("r0", DEAD, ACTIVE), set_primary("r1", 2), add("r3", "n4"),
                                  transfer("r1", "r2"), start("r3", "n4"), transfer("r1", "r3")]
    sim.hold = ()
    sim.feed(done(sim, "r2"), done(sim, "r3"))
    assert states(sim.state) == {"r1*": ("n2", ACTIVE), "r2": ("n3", ACTIVE), "r3": ("n4", ACTIVE)}


def test_two_nodes_lost_at_once():
    nodes = ["n1", "n2", "n3", "n4"]
    sim = healthy(shards=3, rf=2, nodes=nodes)  # s0 n1 n2, s1 n2 n3, s2 n3 n4
    sim.lose("n1", report=False)
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert "shard 0 of `c` is unavailable" in " ".join(texts(effects))
    assert states(sim.state, 0) == {"r0*": ("n1", DEAD), "r1": ("n2", DEAD)}
    assert states(sim.state, 1) == {"r1*": ("n3", ACTIVE), "r2": ("n4", ACTIVE)}
    assert states(sim.state, 2) == {"r0*": ("n3", ACTIVE), "r1": ("n4", ACTIVE)}
    assert problems(sim) == []
    sim.up.add("n1")  # the primary's node comes back: the shard is served again and repaired
    sim.tick(GRACE + 1)
    assert states(sim.state, 0) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}
    settle(sim)


def test_a_failed_replica_is_not_promoted_when_the_primarys_node_is_lost_at_once():
    sim = healthy(rf=3, nodes=NODES + ["n4"])
    sim.feed(started("r1", 9), started("r2", 3))
    sim.lose("n1", report=False)
    sim.now = GRACE
    effects = sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"), NodesSeen(GRACE, frozenset(sim.up)))
    assert decisions(effects)[:3] == [set_state("r0", DEAD, ACTIVE), set_state("r1", DEAD, ACTIVE), set_primary("r2", 2)]


def test_the_target_of_a_move_lost_mid_transfer_leaves_the_source_in_place():
    sim = healthy(shards=4, rf=2, nodes=NODES, hold=(StartTransfer,))
    sim.up.add("n4")
    sim.tick(1.0)
    sim.lose("n4", report=False)
    effects = sim.tick(1.0 + GRACE)
    assert decisions(effects) == [set_state("r2", DEAD, PARTIAL), remove("r2")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_a_write_path_mark_racing_an_activation_wins_and_the_replica_catches_up_again():
    sim = healthy(rf=2, nodes=NODES + ["n4"], hold=(StartTransfer,))
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    effects = sim.c.handle(done(sim, "r2"))
    assert effects == [set_state("r2", ACTIVE, PARTIAL)]
    sim.commit(SetReplicaState("c", INC, 0, "r2", DEAD, PARTIAL))  # committed first: r2 missed a write
    # The activation is dismissed by its from_state; r2 catches up again.
    assert decisions(sim.carry(effects)) == [set_state("r2", PARTIAL, DEAD), transfer("r0", "r2")]
    assert states(sim.state)["r2"] == ("n3", PARTIAL)


def test_a_replica_restarted_before_its_dead_mark_is_applied_still_catches_up():
    sim = healthy(rf=2)
    sim.hold = (Propose,)
    sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    assert sim.held == [set_state("r1", DEAD, ACTIVE)]
    assert decisions(sim.c.handle(started("r1", 0))) == []  # restarted: it waits for its dead mark
    sim.hold, held, sim.held = (), sim.held, []
    assert decisions(sim.carry(held)) == [set_state("r1", PARTIAL, DEAD), transfer("r0", "r1"),
                                          set_state("r1", ACTIVE, PARTIAL)]


def test_a_replica_added_after_one_was_removed_takes_a_new_id():
    """A replica's id names its actor and its storage: the stop asked for a removed one,
    however late it is carried out, must not stop a new one or delete its storage."""
    sim = healthy(rf=2, nodes=["n1", "n2"], hold=(StopReplica,))
    sim.write()
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    assert sim.held == [StopReplica("c", INC, 0, "r1")] and states(sim.state) == {"r0*": ("n1", ACTIVE)}
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 2}}))
    assert decisions(effects) == [add("r2", "n2"), start("r2", "n2"), transfer("r0", "r2"),
                                  set_state("r2", ACTIVE, PARTIAL)]
    sim.write()
    sim.hold, held, sim.held = (), sim.held, []
    sim.carry(held)  # r1's stop, at last
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n2", ACTIVE)} and key("r2") in sim.running
    assert problems(sim) == [] and sim.seq[key("r2")] == sim.acked[("c", INC, 0)] == 2


def test_a_transfer_done_before_its_replica_missed_a_write_does_not_activate_it():
    """Even when the shell passes the news in one batch: r2's transfer is done, then r2
    misses a write (the write path marks it dead) and is set to catch up again (by the
    previous leader, say): it needs a new transfer, from the new metadata."""
    sim = healthy(rf=2, nodes=NODES, hold=(StartTransfer,))
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    assert sim.held == [transfer("r0", "r2")]
    report = done(sim, "r2")
    dead, _ = apply(sim.state, SetReplicaState("c", INC, 0, "r2", DEAD, PARTIAL))
    again, _ = apply(dead, SetReplicaState("c", INC, 0, "r2", PARTIAL, DEAD))
    assert sim.c.handle(report, MetadataChanged(dead), MetadataChanged(again)) == [
        StartTransfer("c", INC, 0, "r0", "r2", again["version"])]
    assert sim.c.handle(report) == []  # the old transfer's report, late: not this one


# ------------------------------------------------------ leaders and strays


def test_a_new_leader_built_from_the_replicated_state_reaches_the_same_decisions():
    nodes = ["n1", "n2", "n3", "n4"]
    sim = healthy(shards=3, rf=2, nodes=nodes)
    reports = [started(r, seq=i + 1, shard=i) for i in range(3) for r in ("r0", "r1")]
    sim.feed(*reports)
    sim.lose("n2", report=False)
    old = sim.c.handle(NodesSeen(GRACE, frozenset(sim.up)))  # the leader dies before proposing any of it
    assert decisions(old)
    new = Controller(node_grace=GRACE, retry_after=RETRY)
    first = new.handle(MetadataChanged(sim.state), NodesSeen(GRACE, frozenset(sim.up)))
    assert all(isinstance(e, StartReplica) for e in first)  # it learns what runs by asking: a no-op for those
    assert new.handle() == []  # asked once
    new.handle(*[r for r in reports if key(r.replica, r.shard) in sim.running])
    assert new.handle(Tick(2 * GRACE)) == old  # its own grace for n2 ends later; then the same decisions


def test_replicas_the_metadata_no_longer_lists_are_stopped():
    sim = healthy(rf=2)
    old_life = ReplicaStarted("c", "d" * 32, 0, "r0", 0)  # Ray restarted an actor of an earlier life
    assert sim.c.handle(old_life) == [StopReplica("c", "d" * 32, 0, "r0")]
    assert sim.c.handle(Tick(1.0)) == []  # asked once
    sim.feed(ReplicaStopped("c", "d" * 32, 0, "r0"))
    effects = sim.gateway(DeleteCollection("c"))
    assert effects == [StopReplica("c", INC, 0, "r0"), StopReplica("c", INC, 0, "r1")]
    assert sim.running == set() and sim.c.pending == ()


def test_collections_of_the_single_node_layout_are_left_alone():
    c = Controller(node_grace=GRACE, retry_after=RETRY)
    state, _ = apply(empty_state(), CreateCollection("c", config(1, 1), {"incarnation": INC}))
    assert c.handle(MetadataChanged(state), NodesSeen(0.0, frozenset(NODES))) == []


def test_an_unknown_event_is_refused():
    with pytest.raises(TypeError):
        Controller(node_grace=GRACE, retry_after=RETRY).handle("tick")


# ----------------------------------------------------------- randomised


def chaos(sim: Sim, rng: random.Random) -> None:
    """One random fault, or none."""
    roll = rng.random()
    down = [n for n in sim.nodes if n not in sim.up]
    if roll < 0.05 and len(sim.up) > 2:
        sim.lose(rng.choice(sorted(sim.up)))
    elif roll < 0.09 and down:
        sim.up.add(rng.choice(down))
    elif roll < 0.10:
        sim.nodes.append(f"n{len(sim.nodes) + 1}")
        sim.up.add(sim.nodes[-1])
    elif roll < 0.20 and sim.running:
        sim.crash(rng.choice(sorted(sim.running)), rng.choice([None, 1.0, 2.0, 4.0, 8.0]))
    elif roll < 0.25 and sim.transfers:
        target = rng.choice(sorted(sim.transfers))
        _, _, version = sim.transfers.pop(target)
        sim._reply(TransferFailed(*_k(target), version, "chaos"))
    elif roll < 0.28:
        name = rng.choice(sorted(sim.state["collections"]))
        sim.gateway(UpdateCollection(name, {"params": {"replication_factor": rng.randint(1, 3)}}))
    elif roll < 0.31:
        sim.drop_batch, sim.report_drops = True, rng.random() < 0.5
    elif roll < 0.32:
        sim.gateway(DeleteCollection("b"))
        inc = f"{rng.getrandbits(128):032x}"
        sim.gateway(create_op("b", 2, rng.randint(1, 3), sorted(sim.up), inc))


@pytest.mark.parametrize("seed", range(100))  # about 0.15 s each
def test_random_faults_keep_the_invariants_and_the_cluster_converges(seed):
    rng = random.Random(seed)
    sim = Sim(["n1", "n2", "n3", "n4"], grace=3.0, retry=5.0, rng=rng)
    sim.tick(0.0)
    sim.gateway(create_op("a", 3, 2, sim.nodes))
    sim.gateway(create_op("b", 2, 3, sim.nodes, "b" * 32))
    sim.lose_replies = 0.05
    for step in range(150):
        chaos(sim, rng)
        sim.step()
        assert problems(sim) == [], f"step {step}"
    sim.lose_replies, sim.drop_batch = 0.0, False
    sim.up.update(sim.nodes)  # the faults stop, and every node is back
    for step in range(300):
        if not_converged(sim) is None:
            break
        sim.step()
        assert problems(sim) == [], f"calm step {step}"
    assert not_converged(sim) is None
    assert sim.c.lost_nodes == frozenset() and sum(sim.acked.values()) > 0
