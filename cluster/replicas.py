"""Shard replicas as data: their states, what each state may do, and where a new
collection's replicas go. Pure: no Ray, no clock, no I/O (docs/cluster.md).

A collection's placement, as the metadata holds it::

    {"incarnation": "<32 hex>",
     "shards": [{"epoch": 1, "primary": "r0", "next_replica": 2,
                 "replicas": {"r0": {"node": "<node id>", "state": "initializing"}, ...}}, ...]}

Beyond these, what the cluster API asked for (``POST /collections/{name}/cluster``): a
shard's own ``"factor"`` (replicate_shard raises it, drop_replica lowers it; changing the
collection's replication_factor clears it), a replica's ``"leaving": true`` (a move's
source, or a dropped replica: removed once the shard has its factor without it), and a
partial replica's ``"source"`` (the replica it is to be copied from) and ``"move": true``.

Replica ids are ``r0``, ``r1``, ... chosen by the proposer, unique within a shard for
the life of the collection: ``next_replica`` counts the ids a shard has used, and
``apply`` refuses an id below it. An id names the replica's actor and its storage, so
a new replica that took a removed one's id could be stopped, and its storage deleted,
by the stop asked for the old one. The primary sequences the shard's writes; the
epoch grows by one each time the primary changes, so that a write carrying an older
epoch is refused.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Sequence


class ReplicaState(str, Enum):
    """Qdrant's replica states, where they mean the same (replica_set_state.rs)."""

    INITIALIZING = "initializing"  # created, not serving yet
    ACTIVE = "active"  # up to date: serves reads, takes writes
    PARTIAL = "partial"  # receiving a transfer or catching up: takes writes, serves no read
    DEAD = "dead"  # missed a write or lost its node: neither


STATES = frozenset(s.value for s in ReplicaState)


def is_readable(state: str) -> bool:
    """Only an up-to-date replica answers reads."""
    return state == ReplicaState.ACTIVE


def takes_writes(state: str) -> bool:
    """Writes are forwarded to replicas that are, or are becoming, up to date."""
    return state in (ReplicaState.ACTIVE, ReplicaState.PARTIAL)


def can_be_source_of_truth(state: str) -> bool:
    """A transfer's source, or a new primary, must hold every acknowledged write."""
    return state == ReplicaState.ACTIVE


def replica_id(n: int) -> str:
    return f"r{n}"


_REPLICA_ID = re.compile(r"r(0|[1-9][0-9]*)")


def replica_number(replica: str) -> int | None:
    """``n`` of the id ``r<n>`` (written as ``replica_id`` writes it), else None."""
    match = _REPLICA_ID.fullmatch(replica) if isinstance(replica, str) else None
    return int(match.group(1)) if match else None


def ids_used(shard: dict[str, Any]) -> int:
    """How many ids ``shard`` has used (``r0`` up to the one before this number): its
    ``next_replica``, or, for a shard without one, one past its highest listed id."""
    numbers = [replica_number(r) for r in shard["replicas"]]
    mark = shard.get("next_replica", 0)
    return max([mark if isinstance(mark, int) else 0] + [n + 1 for n in numbers if n is not None])


def next_replica_id(shard: dict[str, Any]) -> str:
    """The id a new replica of ``shard`` takes: never one it has used, even if that
    replica is gone."""
    return replica_id(ids_used(shard))


def shard_factor(shard: dict[str, Any], replication_factor: int) -> int:
    """How many replicas ``shard`` keeps: its own ``factor``, which the cluster API's
    replicate_shard and drop_replica set, else the collection's ``replication_factor``."""
    own = shard.get("factor")
    return own if isinstance(own, int) and not isinstance(own, bool) and own >= 1 else replication_factor


def initial_placement(shard_number: int, replication_factor: int, nodes: Sequence[str]) -> list[dict[str, Any]]:
    """Where a new collection's replicas go: each shard's replicas on distinct
    nodes, spread round-robin so that nodes hold about the same number, as many
    per shard as there are nodes at most (the controller adds the rest when
    nodes join). Replica r0 of each shard starts as its primary, epoch 1; every
    replica starts ``initializing``. ``nodes`` in a stable order (the caller sorts)."""
    if not nodes:
        raise ValueError("no node to place replicas on")
    copies = min(replication_factor, len(nodes))
    shards = []
    for shard in range(shard_number):
        chosen = [nodes[(shard + k) % len(nodes)] for k in range(copies)]
        replicas = {replica_id(k): {"node": node, "state": ReplicaState.INITIALIZING.value}
                    for k, node in enumerate(chosen)}
        shards.append({"epoch": 1, "primary": replica_id(0), "next_replica": copies, "replicas": replicas})
    return shards


def placement_problem(placement: Any, shard_number: int) -> str | None:
    """Why ``placement`` is not a well-formed placement of ``shard_number`` shards
    (None when it is): checked before a create is proposed, and by ``apply``."""
    if not isinstance(placement, dict) or "shards" not in placement:
        return None  # a placement of the single-node layout (incarnation only)
    shards = placement["shards"]
    if not isinstance(shards, list) or len(shards) != shard_number:
        return f"placement must list {shard_number} shard(s)"
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict) or not isinstance(shard.get("replicas"), dict) or not shard["replicas"]:
            return f"shard {i}: no replicas"
        if not isinstance(shard.get("epoch"), int) or shard["epoch"] < 1:
            return f"shard {i}: bad epoch"
        if shard.get("primary") not in shard["replicas"]:
            return f"shard {i}: the primary is not one of its replicas"
        if any(replica_number(r) is None for r in shard["replicas"]):
            return f"shard {i}: replica ids must be r0, r1, ..."
        mark = shard.get("next_replica")
        if "next_replica" in shard and (not isinstance(mark, int) or isinstance(mark, bool)
                                        or mark < ids_used({"replicas": shard["replicas"]})):
            return f"shard {i}: next_replica must be past every replica id"
        nodes = [r.get("node") for r in shard["replicas"].values() if isinstance(r, dict)]
        if len(nodes) != len(shard["replicas"]) or not all(isinstance(n, str) and n for n in nodes):
            return f"shard {i}: every replica needs a node"
        if len(set(nodes)) != len(nodes):
            return f"shard {i}: two replicas on one node"
        if any(r.get("state") not in STATES for r in shard["replicas"].values()):
            return f"shard {i}: unknown replica state"
    return None
