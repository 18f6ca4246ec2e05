"""A small shell around the placement controller for its tests: ``Sim`` applies the
controller's own proposals with ``cluster.metadata_ops.apply``, feeds the new metadata
back, and plays Ray (replicas start, fail, restart), transfers, and the gateway's write
path; ``problems`` and ``not_converged`` state the invariants every scenario keeps."""

from __future__ import annotations

import re
from collections import Counter, deque

from cluster.controller import (
    Controller,
    Log,
    MetadataChanged,
    NodesSeen,
    ProposalFailed,
    Propose,
    ReplicaFailed,
    ReplicaKey,
    ReplicaStarted,
    ReplicaStopped,
    StartReplica,
    StartTransfer,
    StopReplica,
    TransferDone,
    TransferFailed,
)
from cluster.metadata_ops import (
    AddReplica,
    CreateCollection,
    RemoveReplica,
    SetPrimary,
    SetReplicaState,
    apply,
    empty_state,
)
from cluster.replicas import initial_placement, placement_problem, shard_factor, takes_writes

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
                self._reply(ReplicaStarted(*as_tuple(k), self.seq[k]), may_lose=False)
            for k in sorted(self.ever_listed - self.running):
                if replica_of(self.state, k) is not None:
                    self._reply(ReplicaFailed(*as_tuple(k), "no such actor"), may_lose=False)
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
                    self._reply(ReplicaStarted(*as_tuple(e.key), self.seq[e.key]))
                else:
                    self._reply(ReplicaFailed(*as_tuple(e.key), "its node is down"))
            elif isinstance(e, StopReplica):
                if replica_of(self.state, e.key) is not None:
                    self.problems.append(f"stopped a replica the metadata lists: {e}")
                self.running.discard(e.key)
                self.seq.pop(e.key, None)
                self._reply(ReplicaStopped(*as_tuple(e.key)))
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
            self._reply(TransferDone(*as_tuple(target), version, self.seq[target]))
        else:
            self._reply(TransferFailed(*as_tuple(target), version, "an end of it went away"))

    # Faults and Ray.

    def lose(self, node: str, report: bool = True) -> None:
        self.up.discard(node)
        for k in sorted(self.running):
            if (replica_of(self.state, k) or {}).get("node") == node:
                self.running.discard(k)
                if report:
                    self._reply(ReplicaFailed(*as_tuple(k), "its node is gone"), may_lose=False)

    def crash(self, k: ReplicaKey, restart_in: float | None) -> None:
        """The actor dies; Ray restarts it ``restart_in`` seconds later (None: never)."""
        self.running.discard(k)
        self._reply(ReplicaFailed(*as_tuple(k), "its actor died"), may_lose=False)
        node = (replica_of(self.state, k) or {}).get("node")
        if restart_in is not None and node is not None:

            def restart():
                if node in self.up:
                    self.running.add(k)
                    self._reply(ReplicaStarted(*as_tuple(k), self.seq[k]), may_lose=False)
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


def as_tuple(k: ReplicaKey) -> tuple:
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
            factor = shard_factor(s, rf)
            if len(reps) != factor or any(rep["state"] != ACTIVE or rep["node"] not in sim.up for rep in reps.values()):
                return f"{name}/{i} has {reps} (factor {factor})"
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
