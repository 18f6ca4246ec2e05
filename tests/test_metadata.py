"""Collection metadata: the pure ``apply`` and its Raft replication (PySyncObj).

Consensus tests run several nodes in this process on 127.0.0.1 with ``auto_tick=False``
and tick them by hand (PySyncObj's own suite does the same); elections are seeded.
Every wait is bounded by a round count and a deadline.
"""

from __future__ import annotations

import copy
import random
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest

from cluster.metadata import MetadataStore, MetadataUnavailable, RaftTimings
from cluster.metadata_ops import (
    ChangeAliases,
    CreateAlias,
    CreateCollection,
    DeleteAlias,
    DeleteCollection,
    MalformedOp,
    OpResult,
    RenameAlias,
    UpdateCollection,
    apply,
    empty_state,
    op_from_json,
    resolve,
)
from cluster.replicas import initial_placement
from shard.types import BadInput, Conflict, NotFound

PLACEMENT = {"incarnation": "a" * 32, "shards": initial_placement(1, 2, ["node1", "node2"])}
CONFIG = {"vectors": {"": {"size": 4, "distance": "Cosine"}}, "hnsw_config": {"m": 16, "ef_construct": 100},
          "optimizers_config": {"indexing_threshold": 20000}, "shard_number": 2}


def run(state, *ops):
    """Applies ops in order, returning (state, [results])."""
    results = []
    for op in ops:
        state, result = apply(state, op)
        results.append(result)
    return state, results


def with_collections(*names):
    state, results = run(empty_state(), *(CreateCollection(n, CONFIG, PLACEMENT) for n in names))
    assert all(r.ok for r in results)
    return state


# ---------------------------------------------------------------------------
# apply(): every op, every error.
# ---------------------------------------------------------------------------


def test_create_collection():
    state, result = apply(empty_state(), CreateCollection("a", CONFIG, PLACEMENT))
    assert result == OpResult.success(True)
    assert state == {"collections": {"a": {"config": CONFIG, "placement": PLACEMENT}},
                     "aliases": {}, "version": 1}
    assert state["collections"]["a"]["config"] is not CONFIG  # copied, not shared


def test_create_existing_collection_conflicts():
    state = with_collections("a")
    new, result = apply(state, CreateCollection("a", {}))
    assert new is state
    assert result == OpResult.failure("conflict", "Collection `a` already exists!")
    with pytest.raises(Conflict, match="Collection `a` already exists!"):
        result.unwrap()


def test_create_collection_named_like_an_alias_is_bad_input():
    state, _ = run(with_collections("a"), CreateAlias("x", "a"))
    new, result = apply(state, CreateCollection("x", CONFIG))
    assert new is state
    assert result == OpResult.failure(
        "bad_input", "Can't create collection with name x. Alias with the same name already exists")
    with pytest.raises(BadInput):
        result.unwrap()


def test_delete_collection_drops_its_aliases():
    state, _ = run(with_collections("a", "b"), CreateAlias("x", "a"), CreateAlias("y", "a"), CreateAlias("z", "b"))
    new, result = apply(state, DeleteCollection("a"))
    assert result == OpResult.success(True)
    assert list(new["collections"]) == ["b"] and new["aliases"] == {"z": "b"}
    assert new["version"] == state["version"] + 1


def test_delete_missing_collection_answers_false_and_changes_nothing():
    state = with_collections("a")
    new, result = apply(state, DeleteCollection("nope"))
    assert result == OpResult.success(False) and new is state
    # Deleting by an alias name deletes nothing either (Qdrant removes by name).
    state, _ = run(state, CreateAlias("x", "a"))
    new, result = apply(state, DeleteCollection("x"))
    assert result.value is False and new is state


def test_update_collection_merges_the_diff():
    state = with_collections("a")
    new, result = apply(state, UpdateCollection("a", diff={
        "hnsw_config": {"m": 32, "ef_construct": None}, "optimizers_config": {"indexing_threshold": 0},
        "vectors": {"": {"on_disk": True}}, "params": None}))
    assert result.ok and new["version"] == state["version"] + 1
    config = new["collections"]["a"]["config"]
    assert config["hnsw_config"] == {"m": 32, "ef_construct": 100}
    assert config["optimizers_config"] == {"indexing_threshold": 0}
    assert config["vectors"][""] == {"size": 4, "distance": "Cosine", "on_disk": True}
    assert "params" not in config
    assert state["collections"]["a"]["config"] == CONFIG  # input untouched
    assert new["collections"]["a"]["placement"] == PLACEMENT


def test_update_collection_replace_sets_and_removes_keys():
    state, _ = run(with_collections("a"), UpdateCollection("a", replace={"quantization_config": {"scalar": {}}}))
    assert state["collections"]["a"]["config"]["quantization_config"] == {"scalar": {}}
    state, _ = run(state, UpdateCollection("a", replace={"quantization_config": {"product": {}}}))
    assert state["collections"]["a"]["config"]["quantization_config"] == {"product": {}}
    state, _ = run(state, UpdateCollection("a", replace={"quantization_config": None}))
    assert "quantization_config" not in state["collections"]["a"]["config"]


def test_update_through_an_alias_and_no_op_update():
    state, _ = run(with_collections("a"), CreateAlias("x", "a"))
    new, result = apply(state, UpdateCollection("x", diff={"shard_number": 3}))
    assert result.ok and new["collections"]["a"]["config"]["shard_number"] == 3
    same, result = apply(new, UpdateCollection("a", diff={"shard_number": 3}))
    assert result.ok and same is new  # nothing changed: version kept


def test_update_errors():
    state = with_collections("a")
    new, result = apply(state, UpdateCollection("b", diff={"x": 1}))
    assert new is state and result == OpResult.failure("not_found", "Collection `b` doesn't exist!")
    with pytest.raises(NotFound):
        result.unwrap()
    new, result = apply(state, UpdateCollection("a", diff={"vectors": {"img": {"on_disk": True}}}))
    assert new is state and result == OpResult.failure("bad_input", "Not existing vector name error: img")


def test_create_alias_and_repoint_it():
    state = with_collections("a", "b")
    s1, result = apply(state, CreateAlias("x", "a"))
    assert result.ok and s1["aliases"] == {"x": "a"} and resolve(s1, "x") == "a"
    s2, result = apply(s1, CreateAlias("x", "b"))  # Qdrant re-points an existing alias
    assert result.ok and s2["aliases"] == {"x": "b"}
    s3, result = apply(s2, CreateAlias("x", "b"))
    assert result.ok and s3 is s2


def test_create_alias_errors():
    state, _ = run(with_collections("a", "b"), CreateAlias("x", "a"))
    new, result = apply(state, CreateAlias("y", "missing"))
    assert new is state and result == OpResult.failure("not_found", "Collection `missing` doesn't exist!")
    new, result = apply(state, CreateAlias("y", "x"))  # an alias of an alias
    assert result == OpResult.failure("not_found", "Collection `x` doesn't exist!")
    new, result = apply(state, CreateAlias("b", "a"))  # alias named like a collection
    assert new is state and result == OpResult.failure("conflict", "Collection `b` already exists!")


def test_delete_alias_missing_is_fine():
    state, _ = run(with_collections("a"), CreateAlias("x", "a"))
    new, result = apply(state, DeleteAlias("x"))
    assert result.ok and new["aliases"] == {} and new["version"] == state["version"] + 1
    again, result = apply(new, DeleteAlias("x"))
    assert result == OpResult.success(True) and again is new


def test_rename_alias_and_its_errors():
    state, _ = run(with_collections("a", "b"), CreateAlias("x", "a"))
    new, result = apply(state, RenameAlias("x", "y"))
    assert result.ok and new["aliases"] == {"y": "a"}
    same, result = apply(new, RenameAlias("x", "z"))
    assert same is new and result == OpResult.failure("not_found", "Alias x does not exists!")
    same, result = apply(new, RenameAlias("y", "b"))
    assert same is new and result == OpResult.failure("conflict", "Collection `b` already exists!")


def test_change_aliases_applies_in_order_and_stops_at_the_first_error():
    state = with_collections("a", "b")
    new, result = apply(state, ChangeAliases((CreateAlias("x", "a"), RenameAlias("x", "y"), DeleteAlias("q"))))
    assert result.ok and new["aliases"] == {"y": "a"}
    # As Qdrant's update_aliases: actions before the failing one stay applied.
    new2, result = apply(new, ChangeAliases((DeleteAlias("y"), CreateAlias("z", "nope"), CreateAlias("w", "a"))))
    assert result == OpResult.failure("not_found", "Collection `nope` doesn't exist!")
    assert new2["aliases"] == {} and new2["version"] == new["version"] + 1


def test_malformed_ops_are_bad_input_and_change_nothing():
    state = with_collections("a")
    for bad in ({"v": 1, "type": "drop_everything"}, {"v": 2, "type": "delete_collection", "name": "a"},
                {"v": 1, "type": "create_collection", "name": 5, "config": {}},
                {"v": 1, "type": "create_collection", "name": "b", "config": []},
                {"v": 1, "type": "change_aliases", "actions": [{"v": 1, "type": "delete_collection", "name": "a"}]},
                {"type": "delete_collection", "name": "a"}):
        new, result = apply(state, bad)
        assert new is state and not result.ok and result.error == "bad_input", bad
        with pytest.raises(MalformedOp):
            op_from_json(bad)


def test_ops_round_trip_through_json():
    ops = [CreateCollection("a", CONFIG, {"p": [1, 2]}), DeleteCollection("a"),
           UpdateCollection("a", {"x": {"y": None}}, {"q": None}), CreateAlias("x", "a"), DeleteAlias("x"),
           RenameAlias("x", "y"), ChangeAliases((CreateAlias("x", "a"), DeleteAlias("z")))]
    for op in ops:
        text = orjson.dumps(op.to_json())
        assert op_from_json(orjson.loads(text)) == op
        assert orjson.loads(text)["v"] == 1


def random_ops(rng: random.Random, n: int) -> list:
    names = ["a", "b", "c", "x", "y"]
    ops = []
    for _ in range(n):
        kind = rng.randrange(7)
        p, q = rng.choice(names), rng.choice(names)
        ops.append([CreateCollection(p, {"vectors": {"": {"size": rng.randint(1, 9)}}}), DeleteCollection(p),
                    UpdateCollection(p, {"vectors": {"": {"on_disk": rng.random() < 0.5}}}), CreateAlias(p, q),
                    DeleteAlias(p), RenameAlias(p, q),
                    ChangeAliases((CreateAlias(p, q), RenameAlias(q, p)))][kind])
    return ops


def test_apply_is_deterministic_pure_and_keeps_its_invariants():
    rng = random.Random(11)
    ops = random_ops(rng, 400)
    state = empty_state()
    snapshots = []
    for op in ops:
        before = copy.deepcopy(state)
        state, result = apply(state, op)
        assert snapshots == [] or snapshots[-1] == before  # inputs never mutated
        snapshots.append(copy.deepcopy(state))
        assert all(c in state["collections"] for c in state["aliases"].values())
        assert not set(state["aliases"]) & set(state["collections"])
    replayed, _ = run(empty_state(), *(op.to_json() for op in ops))
    assert replayed == state


# ---------------------------------------------------------------------------
# Raft.
# ---------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listeners(port: int) -> set[str]:
    """Local addresses listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, p = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(p, 16) == port:
                found.add(addr)
    return found


LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp spells it


def tick_until(stores, cond, timeout: float = 15.0, max_rounds: int = 30000) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(max_rounds):
        if cond():
            return True
        if time.monotonic() > deadline:
            break
        for s in stores:
            s.tick(0.0)
        time.sleep(0.0005)
    return cond()


def make_node(tmp_path: Path, i: int, addrs: list[str], log: dict | None = None) -> MetadataStore:
    def on_apply(op, result, state, i=i):
        if log is not None:
            log.setdefault(i, []).append((op.to_json() if op else None, result.to_json()))

    return MetadataStore(tmp_path / f"node{i}", self_address=addrs[i], partners=addrs, auto_tick=False,
                         timings=RaftTimings.fast_test(), on_apply=on_apply)


@pytest.fixture
def cluster3(tmp_path):
    random.seed(1234)
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    log: dict[int, list] = {}
    nodes = [make_node(tmp_path, i, addrs, log) for i in range(3)]
    yield nodes, addrs, log
    for n in nodes:
        n.close()


def leader_of(nodes):
    leaders = [n for n in nodes if n.is_leader]
    return leaders[0] if len(leaders) == 1 else None


def test_three_nodes_apply_the_same_ops_in_the_same_order(cluster3, tmp_path):
    nodes, addrs, log = cluster3
    for a in addrs:
        assert listeners(int(a.rsplit(":", 1)[1])) == {LOOPBACK_HEX}
    assert tick_until(nodes, lambda: leader_of(nodes) is not None and all(n.leader for n in nodes))
    leader = leader_of(nodes)
    follower = next(n for n in nodes if n is not leader)
    ops = [CreateCollection("a", CONFIG, PLACEMENT), CreateCollection("b", CONFIG),
           CreateAlias("x", "a"), CreateCollection("a", CONFIG), UpdateCollection("x", {"shard_number": 5}),
           RenameAlias("x", "y"), DeleteCollection("b"), CreateAlias("z", "b")]
    proposals = [leader.submit(op) for op in ops[:5]]
    proposals += [follower.submit(op) for op in ops[5:]]  # forwarded to the leader
    assert tick_until(nodes, lambda: all(p.done() for p in proposals))
    outcomes = [p.outcome() for p in proposals]
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True, True, False]
    with pytest.raises(Conflict):
        proposals[3].result()
    assert tick_until(nodes, lambda: len({n.status()["last_applied"] for n in nodes}) == 1 and
                      all(len(log.get(i, [])) == len(ops) for i in range(3)))
    assert nodes[0].state() == nodes[1].state() == nodes[2].state()
    assert log[0] == log[1] == log[2]
    assert nodes[0].collections().keys() == {"a"}
    assert nodes[1].aliases() == {"y": "a"} and nodes[2].resolve("y") == "a"
    assert nodes[2].collection("a")["config"]["shard_number"] == 5


@pytest.mark.parametrize("compact", [False, True], ids=["from-log", "from-dump"])
def test_majority_commits_without_a_node_and_it_catches_up_after_restart(cluster3, tmp_path, compact):
    """The restarted node catches up from the leader's log, or, once the leader has
    compacted its log, from the leader's JSON dump sent over the wire."""
    nodes, addrs, log = cluster3
    assert tick_until(nodes, lambda: leader_of(nodes) is not None and all(n.leader for n in nodes))
    leader = leader_of(nodes)
    p = leader.submit(CreateCollection("a", CONFIG))
    assert tick_until(nodes, p.done) and p.result() is True
    down = next(i for i, n in enumerate(nodes) if n is not leader)
    nodes[down].close()
    alive = [n for i, n in enumerate(nodes) if i != down]
    proposals = [leader.submit(op) for op in (CreateCollection("b", CONFIG), CreateAlias("x", "b"))]
    assert tick_until(alive, lambda: all(q.done() for q in proposals))
    assert all(q.result() is True for q in proposals)
    if compact:
        leader.force_compaction()
        assert tick_until(alive, lambda: leader.status()["log_len"] <= 3)
    nodes[down] = make_node(tmp_path, down, addrs)  # same storage and address
    assert tick_until(nodes, lambda: nodes[down].state() == leader.state())
    assert nodes[down].aliases() == {"x": "b"}
    if compact:
        dump = orjson.loads((tmp_path / f"node{down}" / "raft" / "dump.json").read_bytes())
        assert dump["state"]["aliases"] == {"x": "b"}


def test_single_node_restarts_from_journal_and_from_dump(tmp_path):
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    store = MetadataStore(tmp_path, self_address=addr, auto_tick=False)
    assert store.wait_ready(5)
    assert listeners(int(addr.rsplit(":", 1)[1])) == {LOOPBACK_HEX}
    assert store.propose(CreateCollection("a", CONFIG, [1, 2])) is True
    assert store.propose(CreateAlias("x", "a")) is True
    with pytest.raises(NotFound, match="Collection `q` doesn't exist!"):
        store.propose(CreateAlias("y", "q"))
    assert store.propose(DeleteCollection("zzz")) is False
    with pytest.raises(MalformedOp):
        store.submit({"v": 1, "type": "nope"})
    expected = store.state()
    store.close()

    again = MetadataStore(tmp_path, self_address=addr, auto_tick=False)
    assert again.wait_ready(5)
    assert again.state() == expected
    # Compact the log into a dump, change more, restart: dump + journal tail.
    again.force_compaction()
    assert tick_until([again], lambda: (tmp_path / "raft" / "dump.json").exists())
    dump = orjson.loads((tmp_path / "raft" / "dump.json").read_bytes())
    assert dump["format"] == "shoal-metadata-dump" and dump["state"] == expected
    assert again.propose(RenameAlias("x", "y")) is True
    expected = again.state()
    again.close()

    third = MetadataStore(tmp_path, self_address=addr, auto_tick=False)
    assert third.wait_ready(5)
    assert third.state() == expected and third.aliases() == {"y": "a"}
    third.close()
    with pytest.raises(MetadataUnavailable):
        third.submit(DeleteAlias("y"))


def test_auto_tick_single_node_propose_and_restart(tmp_path):
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    store = MetadataStore(tmp_path, self_address=addr)
    try:
        assert store.wait_ready(5) and store.is_leader and store.leader == addr
        assert store.propose(CreateCollection("a", CONFIG), timeout=5) is True
        with pytest.raises(Conflict):
            store.propose(CreateCollection("a", CONFIG), timeout=5)
    finally:
        store.close()
    store = MetadataStore(tmp_path, self_address=addr)
    try:
        assert store.wait_ready(5)
        assert list(store.collections()) == ["a"]
    finally:
        store.close()


def test_store_built_in_a_short_lived_thread_keeps_ticking(tmp_path):
    """PySyncObj's tick thread follows the thread that built it; the store must not
    die with an executor thread (the gateway builds it off the event loop)."""
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    built = []
    worker = threading.Thread(target=lambda: built.append(MetadataStore(tmp_path, self_address=addr)))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and built
    store = built[0]
    try:
        time.sleep(0.2)  # the tick thread would have noticed the builder's exit by now
        assert store.wait_ready(5)
        assert store.propose(CreateCollection("a", CONFIG), timeout=5) is True
    finally:
        store.close()


def test_busy_port_fails_fast(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(MetadataUnavailable):
            MetadataStore(tmp_path, self_address=f"127.0.0.1:{port}", bind_retries=2)
        assert time.monotonic() - started < 5
